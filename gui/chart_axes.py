"""Plot axes of the dashboard's charts: tick drawings shared between linked axes, and a step axis that reads 250k.

``AxisItem`` draws its ticks (texts, lines) anew for every range it shows, ~1-2 ms an axis. The four charts'
x axes are linked and equally wide: ``SharedTicksAxis`` lets them share one drawing per range.

A step count has no unit, so pyqtgraph's automatic SI prefix writes a million steps as "step (x1e-06)" with
ticks 0.2 ... 1 (and lays the label's HTML out again at every 1,000x change of range). ``StepAxis`` keeps the
label "step" and writes the ticks as 250k or 1.2M.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from pyqtgraph import debug
from PySide6.QtGui import QImage, QPainter, QTransform


class SharedTicksAxis(pg.AxisItem):
    """An AxisItem whose drawn ticks are shared by every axis of a group showing the same range at the same size.

    The four charts' x axes are linked and (with the left axes one width, ``align_left_axes``) equally wide, so
    each view change draws their ticks once instead of four times (~0.5-1 ms each). They are kept as an image,
    not as pyqtgraph's QPicture: replaying a picture lays its texts out again (~0.1 ms an axis and repaint),
    an image is one copy. The label's HTML is laid out again only when its text changes, not on every range change.
    """

    def __init__(self, orientation: str, pictures: dict | None = None, **kwargs: object) -> None:
        # Set first: AxisItem's constructor already sets a range and a label.
        self._pictures: dict[tuple, QImage] = {} if pictures is None else pictures
        self._shown_label: str | None = None
        super().__init__(orientation, **kwargs)

    def _picture_key(self, ratio: float) -> tuple:
        size = self.geometry().size()
        return (self.orientation, self.range[0], self.range[1], self.scale * self.autoSIPrefixScale,
                round(size.width(), 2), round(size.height(), 2), self.pen().color().rgba(),
                self.textPen().color().rgba(), self.labelString(), ratio)

    @debug.warnOnException  # an exception escaping paint() takes PySide6 down: logged instead
    def paint(self, p: QPainter, opt: object, widget: object) -> None:  # noqa: D102 - pyqtgraph's
        device = p.device()
        if device is None or p.worldTransform().type().value > QTransform.TransformationType.TxTranslate.value:
            super().paint(p, opt, widget)  # scaled (an export at another resolution): drawn as vectors
            return
        ratio = device.devicePixelRatioF()
        key = self._picture_key(ratio)
        image = self._pictures.get(key)
        rect = self.boundingRect()
        if image is None:
            image = QImage(math.ceil(rect.width() * ratio), math.ceil(rect.height() * ratio),
                           QImage.Format.Format_ARGB32_Premultiplied)
            image.setDevicePixelRatio(ratio)
            image.fill(0)
            painter = QPainter(image)
            painter.translate(-rect.left(), -rect.top())
            # What AxisItem.paint does, drawn straight into the image instead of recorded into a QPicture first.
            if self.style["tickFont"]:
                painter.setFont(self.style["tickFont"])
            specs = self.generateDrawSpecs(painter)
            if specs is not None:
                self.drawPicture(painter, *specs)
            painter.end()
            if len(self._pictures) >= 32:  # ranges seen once are never asked for again
                self._pictures.clear()
            self._pictures[key] = image
        p.drawImage(rect.topLeft(), image)

    def setStyle(self, **kwargs: object) -> None:  # noqa: N802 - pyqtgraph's name
        super().setStyle(**kwargs)
        self._pictures.clear()  # a look the key does not hold

    def setTickFont(self, font: object) -> None:  # noqa: N802 - pyqtgraph's name
        super().setTickFont(font)
        self._pictures.clear()

    def setTicks(self, ticks: object) -> None:  # noqa: N802 - pyqtgraph's name
        super().setTicks(ticks)
        self._pictures.clear()

    def setTickSpacing(self, *args: object, **kwargs: object) -> None:  # noqa: N802 - pyqtgraph's name
        super().setTickSpacing(*args, **kwargs)
        self._pictures.clear()

    def _updateLabel(self) -> None:  # noqa: N802 - pyqtgraph's name
        text = self.labelString()
        if text != self._shown_label:
            self._shown_label = text
            super()._updateLabel()
            return
        self.picture = None
        self.update()


class StepAxis(SharedTicksAxis):
    """A step axis: ticks as 950, 25k, 1.2M; the label never changes with the range (see the module docstring)."""

    def __init__(self, orientation: str, pictures: dict | None = None, **kwargs: object) -> None:
        super().__init__(orientation, pictures, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802 - pyqtgraph's
        return [step_tick_label(value * scale, spacing * scale) for value in values]


def step_tick_label(value: float, spacing: float) -> str:
    """A step count as a tick reads best: 950, 12,500 as 12.5k, 1,200,000 as 1.2M (with the digits the spacing needs)."""
    if abs(value) >= 1e6 and spacing >= 1e5:
        divisor, suffix = 1e6, "M"
    elif abs(value) >= 1e4 and spacing >= 100:
        divisor, suffix = 1e3, "k"
    else:
        divisor, suffix = 1.0, ""
    # Spacings are 1, 2 or 5 times a power of ten: as many decimals as its first significant digit needs.
    decimals = max(0, -math.floor(math.log10(spacing / divisor) + 1e-9)) if spacing > 0 else 0
    text = f"{value / divisor:.{decimals}f}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]  # no "-0"
    return text + suffix


__all__ = ["SharedTicksAxis", "StepAxis", "step_tick_label"]
