"""Light and dark palettes on the Fusion style, following the system's colour scheme unless the user chose one."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPalette
from PySide6.QtWidgets import QApplication, QLabel, QProxyStyle, QStyle, QStyleOption, QWidget

from gui.settings import COLOR_SCHEME, read_text, write_text

SCHEMES = ("system", "light", "dark")

# Status colours that read on both backgrounds (checked on the screenshots of both palettes).
OK_COLORS = {"light": "#1a7f37", "dark": "#3fb950"}
FAIL_COLORS = {"light": "#cf222e", "dark": "#f85149"}
WARN_COLORS = {"light": "#9a6700", "dark": "#d29922"}
MUTED_COLORS = {"light": "#57606a", "dark": "#8b949e"}


def dark_palette() -> QPalette:
    palette = QPalette()
    window, base, text = QColor("#1f2329"), QColor("#161a1f"), QColor("#e6e6e6")
    disabled = QColor("#7d8590")
    for role, color in (
        (QPalette.ColorRole.Window, window),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base),
        (QPalette.ColorRole.AlternateBase, QColor("#242a31")),
        (QPalette.ColorRole.ToolTipBase, QColor("#2d333b")),
        (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.PlaceholderText, disabled),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, QColor("#2a3038")),
        (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.BrightText, QColor("#ff7b72")),
        (QPalette.ColorRole.Light, QColor("#3b434d")),
        (QPalette.ColorRole.Midlight, QColor("#323943")),
        (QPalette.ColorRole.Mid, QColor("#2a3038")),
        (QPalette.ColorRole.Dark, QColor("#0d1117")),
        (QPalette.ColorRole.Shadow, QColor("#000000")),
        (QPalette.ColorRole.Highlight, QColor("#2f81f7")),
        (QPalette.ColorRole.HighlightedText, QColor("#ffffff")),
        (QPalette.ColorRole.Link, QColor("#58a6ff")),
        (QPalette.ColorRole.LinkVisited, QColor("#bc8cff")),
    ):
        palette.setColor(role, color)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return palette


def light_palette() -> QPalette:
    palette = QPalette()
    text = QColor("#1f2328")
    for role, color in (
        (QPalette.ColorRole.Window, QColor("#f3f4f6")),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, QColor("#ffffff")),
        (QPalette.ColorRole.AlternateBase, QColor("#f6f8fa")),
        (QPalette.ColorRole.ToolTipBase, QColor("#ffffff")),
        (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.PlaceholderText, QColor("#8c959f")),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, QColor("#e9ebef")),
        (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.BrightText, QColor("#cf222e")),
        (QPalette.ColorRole.Light, QColor("#ffffff")),
        (QPalette.ColorRole.Midlight, QColor("#eaeef2")),
        (QPalette.ColorRole.Mid, QColor("#c9ced6")),
        (QPalette.ColorRole.Dark, QColor("#8c959f")),
        (QPalette.ColorRole.Shadow, QColor("#57606a")),
        (QPalette.ColorRole.Highlight, QColor("#0969da")),
        (QPalette.ColorRole.HighlightedText, QColor("#ffffff")),
        (QPalette.ColorRole.Link, QColor("#0969da")),
        (QPalette.ColorRole.LinkVisited, QColor("#8250df")),
    ):
        palette.setColor(role, color)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#8c959f"))
    return palette


def is_dark(palette: QPalette | None = None) -> bool:
    """Whether the palette in use has a dark background (widgets pick status colours by it)."""
    palette = palette or QApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def heading(label: QLabel) -> QLabel:
    """The label in the semi-bold of a section title.

    By its font, not a style sheet: a style sheet fixes the label's palette when it is applied, so after a switch
    between light and dark its text kept the old colour (black on the dark background).
    """
    font = label.font()
    font.setWeight(QFont.Weight.DemiBold)
    label.setFont(font)
    return label


def status_color(kind: str, palette: QPalette | None = None) -> str:
    """A readable colour for "ok", "fail", "warn" or "muted" text on the current background."""
    table = {"ok": OK_COLORS, "fail": FAIL_COLORS, "warn": WARN_COLORS, "muted": MUTED_COLORS}[kind]
    return table["dark" if is_dark(palette) else "light"]


class VisibleChecksStyle(QProxyStyle):
    """Fusion, with check boxes and radio buttons that show on the dark palette.

    Fusion frames them in a darker shade of the window colour; on a dark palette that is the colour of the box
    itself, so an unticked box (the wizard's machine list, its credential options) or an unchosen radio button
    (where the environment's packages come from) was invisible.
    """

    def __init__(self) -> None:
        super().__init__("Fusion")

    def drawPrimitive(self, element: QStyle.PrimitiveElement, option: QStyleOption, painter: QPainter,  # noqa: N802
                      widget: QWidget | None = None) -> None:
        super().drawPrimitive(element, option, painter, widget)
        box = element == QStyle.PrimitiveElement.PE_IndicatorCheckBox
        if not (box or element == QStyle.PrimitiveElement.PE_IndicatorRadioButton) or not is_dark(option.palette):
            return
        frame = QColor(option.palette.color(QPalette.ColorRole.Text))
        frame.setAlpha(120)
        painter.save()
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(frame)
        if box:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
            painter.drawRect(option.rect.adjusted(0, 0, -1, -1))
        else:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            painter.drawEllipse(QRectF(option.rect).adjusted(0.5, 0.5, -0.5, -0.5))
        painter.restore()


class ThemeController(QObject):
    """Applies the chosen scheme; with "system" it follows the platform's scheme as it changes."""

    def __init__(self, app: QApplication, system_scheme: Callable[[], Qt.ColorScheme] | None = None) -> None:
        super().__init__(app)
        self._app = app
        # How the platform's scheme is read; tests give their own (offscreen Qt has no system scheme).
        self._system_scheme = system_scheme or app.styleHints().colorScheme
        app.setStyle(VisibleChecksStyle())
        self._choice = read_text(COLOR_SCHEME, "system")
        if self._choice not in SCHEMES:
            self._choice = "system"
        app.styleHints().colorSchemeChanged.connect(self._on_system_scheme_changed)
        self.apply()

    @property
    def choice(self) -> str:
        return self._choice

    def choose(self, choice: str) -> None:
        if choice not in SCHEMES:
            raise ValueError(f"unknown colour scheme {choice!r}")
        self._choice = choice
        write_text(COLOR_SCHEME, choice)
        self.apply()

    def effective_scheme(self) -> str:
        if self._choice != "system":
            return self._choice
        return "dark" if self._system_scheme() == Qt.ColorScheme.Dark else "light"

    def apply(self) -> None:
        dark = self.effective_scheme() == "dark"
        self._app.setPalette(dark_palette() if dark else light_palette())
        _configure_charts(dark)

    def _on_system_scheme_changed(self, _scheme: Qt.ColorScheme) -> None:
        if self._choice == "system":
            self.apply()


def _configure_charts(dark: bool) -> None:
    # pyqtgraph reads these when a plot is created; charts made later match the window.
    try:
        import pyqtgraph
    except ImportError:  # charts are optional for the wizard and the welcome page
        return
    pyqtgraph.setConfigOption("background", "#161a1f" if dark else "#ffffff")
    pyqtgraph.setConfigOption("foreground", "#c9d1d9" if dark else "#24292f")
    pyqtgraph.setConfigOption("antialias", True)
