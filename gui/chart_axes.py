"""Plot axes of the dashboard's charts: tick drawings shared between linked axes, and a step axis that reads 250k.

``AxisItem`` draws its ticks (texts, lines) anew for every range it shows, ~1-2 ms an axis. The four charts'
x axes are linked and equally wide: ``SharedTicksAxis`` lets them share one drawing per range.

A step count has no unit, so pyqtgraph's automatic SI prefix writes a million steps as "step (x1e-06)" with
ticks 0.2 ... 1 (and lays the label's HTML out again at every 1,000x change of range). ``StepAxis`` keeps the
label "step" and writes the ticks as 250k or 1.2M.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import pyqtgraph as pg
from pyqtgraph import debug
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QTransform

# Tick images kept per group of axes (a range, a size, a look each): the ones in view and a few recent.
MAX_TICK_IMAGES = 32
# Devices the ticks are drawn on as an image: a widget, an image, a pixmap. Anything else (SVG, a printer, a
# recorded QPicture) gets pyqtgraph's vector drawing.
RASTER_DEVICES = {1, 2, 3}  # Qt's QInternal::Widget, Pixmap, Image (QPaintDevice.devType())


def _drops_look(name: str) -> Callable[..., None]:
    """pyqtgraph's ``AxisItem`` setter ``name``, followed by dropping the tick image key's cached look."""
    setter = getattr(pg.AxisItem, name)

    def set_and_drop_look(self: SharedTicksAxis, *args: object, **kwargs: object) -> None:
        setter(self, *args, **kwargs)
        self._look = None

    set_and_drop_look.__name__ = set_and_drop_look.__qualname__ = name
    set_and_drop_look.__doc__ = setter.__doc__
    return set_and_drop_look


class SharedTicksAxis(pg.AxisItem):
    """An AxisItem whose drawn ticks are shared by every axis of a group showing the same range at the same size.

    The four charts' x axes are linked and (with the left axes one width, ``align_left_axes``) equally wide, so
    each view change draws their ticks once instead of four times (~0.5-1 ms each). They are kept as an image,
    not as pyqtgraph's QPicture: replaying a picture lays its texts out again (~0.1 ms an axis and repaint),
    an image is one copy. The label's HTML is laid out again only when its text changes, not on every range change.
    """

    def __init__(self, orientation: str, tick_images: OrderedDict | None = None, **kwargs: object) -> None:
        # Set first: AxisItem's constructor already sets a range, a label and a style.
        self._tick_images: OrderedDict[tuple, QImage] = OrderedDict() if tick_images is None else tick_images
        self._shown_label: str | None = None
        self._look: tuple | None = None  # the style, pens and ticks settings in the image key (see _image_key)
        self._text_sizes: dict[tuple, tuple[float, float]] = {}  # (font, dpi, text): width, height
        super().__init__(orientation, **kwargs)

    def _image_key(self, ratio: float, font: QFont) -> tuple:
        """Everything the drawing depends on: axes of a group share an image only when all of it is equal."""
        size = self.geometry().size()
        if self._look is None:
            pens = [(pen.color().rgba(), pen.widthF(), pen.style().value)
                    for pen in (self.pen(), self.textPen(), self.tickPen())]
            style = [(name, value.key() if isinstance(value, QFont) else repr(value))
                     for name, value in sorted(self.style.items(), key=lambda item: item[0])]
            self._look = (self.orientation, self.logMode, tuple(pens), tuple(style), repr(self._tickLevels),
                          repr(self._tickSpacing), self._tickDensity)
        return (self._look, self.range[0], self.range[1], self.scale * self.autoSIPrefixScale,
                round(size.width(), 2), round(size.height(), 2), ratio, font.key(), self.labelString())

    # Whatever changes the look drops the key's cached part (pyqtgraph's setters, which all repaint the axis).
    setStyle = _drops_look("setStyle")  # noqa: N815 - pyqtgraph's names
    setTickFont = _drops_look("setTickFont")  # noqa: N815
    setTicks = _drops_look("setTicks")  # noqa: N815
    setTickSpacing = _drops_look("setTickSpacing")  # noqa: N815
    setTickDensity = _drops_look("setTickDensity")  # noqa: N815
    setPen = _drops_look("setPen")  # noqa: N815
    setTextPen = _drops_look("setTextPen")  # noqa: N815
    setTickPen = _drops_look("setTickPen")  # noqa: N815
    setLogMode = _drops_look("setLogMode")  # noqa: N815

    @debug.warnOnException  # an exception escaping paint() takes PySide6 down: logged instead
    def paint(self, p: QPainter, opt: object, widget: object) -> None:  # noqa: D102 - pyqtgraph's
        device = p.device()
        if (device is None or device.devType() not in RASTER_DEVICES
                or p.worldTransform().type().value > QTransform.TransformationType.TxTranslate.value):
            # Scaled (an export at another resolution), or SVG, a printer, a recorded picture: drawn as vectors.
            super().paint(p, opt, widget)
            return
        ratio = device.devicePixelRatioF()
        font = self.style["tickFont"] or p.font()
        key = self._image_key(ratio, font)
        image = self._tick_images.get(key)
        rect = self.boundingRect()
        if image is not None:
            self._tick_images.move_to_end(key)
        else:
            image = QImage(math.ceil(rect.width() * ratio), math.ceil(rect.height() * ratio),
                           QImage.Format.Format_ARGB32_Premultiplied)
            image.setDevicePixelRatio(ratio)
            image.fill(0)
            painter = QPainter(image)
            try:
                painter.translate(-rect.left(), -rect.top())
                # What AxisItem.paint does, drawn straight into the image instead of recorded into a QPicture first.
                painter.setFont(font)
                specs = self.generateDrawSpecs(painter)
                if specs is not None:
                    self.drawPicture(painter, *specs)
            finally:
                painter.end()  # before the image goes, even after an error: Qt crashes on a painted image freed
            if specs is None:
                return  # not placed yet (no view): nothing to draw, nothing to keep
            self._tick_images[key] = image
            if len(self._tick_images) > MAX_TICK_IMAGES:  # ranges seen once are never asked for again
                self._tick_images.popitem(last=False)
        p.drawImage(rect.topLeft(), image)

    # -- a lean generateDrawSpecs ------------------------------------------------------------------

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list:  # noqa: N802, N803 - pyqtgraph's
        """``AxisItem.tickValues`` in plain Python (the same values): a handful of ticks cost more in numpy calls."""
        if self.logMode:
            return super().tickValues(minVal, maxVal, size)
        low, high = sorted((minVal, maxVal))
        low *= self.scale
        high *= self.scale
        levels = []
        seen: list[float] = []
        for spacing, offset in self.tickSpacing(low, high, size):
            start = math.ceil((low - offset) / spacing) * spacing + offset
            count = int((high - start) / spacing) + 1
            tolerance = spacing / self.scale * 0.01
            values = [(index * spacing + start) / self.scale for index in range(max(0, count))]
            # A tick of a higher level already drawn there: not again (pyqtgraph's isclose with atol).
            values = [value for value in values if not any(abs(value - old) <= tolerance for old in seen)]
            seen += values
            levels.append((spacing / self.scale, values))
        return levels

    def generateDrawSpecs(self, p: QPainter) -> tuple | None:  # noqa: N802 - pyqtgraph's name
        """``AxisItem.generateDrawSpecs`` for a left or bottom axis without grid, fixed ticks or stops: the same
        specs from plain floats, with text sizes measured once per string (a new range's ticks in ~1/3 the time)."""
        style = self.style
        if (self.orientation not in ("left", "bottom") or self._tickLevels is not None or self.grid is not False
                or self.logMode or any(style["stopAxisAtTick"]) or not style["showValues"]
                or style["tickAlpha"] is not None):
            return super().generateDrawSpecs(p)
        if style["tickFont"] is not None:
            p.setFont(style["tickFont"])
        bounds = self.mapRectFromParent(self.geometry())
        if self.orientation == "left":
            span = (QPointF(bounds.right() - 1.0, bounds.top() - 1.0),
                    QPointF(bounds.right() - 1.0, bounds.bottom() + 1.0))
            tick_stop, tick_dir, axis = bounds.right(), -1, 0
        else:
            span = (QPointF(bounds.left() - 1.0, bounds.top() + 1.0),
                    QPointF(bounds.right() + 1.0, bounds.top() + 1.0))
            tick_stop, tick_dir, axis = bounds.top(), 1, 1
        device = self.deviceTransform_()
        if device is None:
            return None
        first, last = device.map(span[0]), device.map(span[1])
        length = math.hypot(last.x() - first.x(), last.y() - first.y())
        if length == 0:
            return None
        levels = self.tickValues(self.range[0], self.range[1], length)
        difference = self.range[1] - self.range[0]
        if difference == 0:
            scale, offset = 1.0, 0.0
        elif axis == 0:
            scale = -bounds.height() / difference
            offset = self.range[0] * scale - bounds.height()
        else:
            scale = bounds.width() / difference
            offset = self.range[0] * scale
        ends = [value * scale - offset for value in self.range]
        low, high = min(ends), max(ends)
        positions: list[list[float | None]] = []
        tick_specs = []
        base_pen = self.tickPen()
        for level, (_spacing, values) in enumerate(levels):
            tick_length = style["tickLength"] / (level * 0.5 + 1.0)
            pen = base_pen
            if pen.brush().style() == Qt.BrushStyle.SolidPattern:
                pen = QPen(pen)
                color = QColor(pen.color())
                color.setAlpha(int(255 / (level + 1)))
                pen.setColor(color)
            at: list[float | None] = []
            for value in values:
                x = value * scale - offset
                if x < low or x > high:
                    at.append(None)
                    continue
                at.append(x)
                if axis == 0:
                    tick_specs.append((pen, QPointF(tick_stop, x), QPointF(tick_stop + tick_length * tick_dir, x)))
                else:
                    tick_specs.append((pen, QPointF(x, tick_stop), QPointF(x, tick_stop + tick_length * tick_dir)))
            positions.append(at)
        axis_spec = (self.pen(), span[0], span[1])
        text_offset = style["tickTextOffset"][axis] + max(0, style["tickLength"])
        font_key = (p.font().key(), p.device().logicalDpiY() if p.device() is not None else 0)
        text_specs: list = []
        measured: list[tuple[float, float]] = []  # every level's text sizes so far, as pyqtgraph sums them
        last_size = 0.0
        bounding = self.boundingRect()
        for level in range(min(len(levels), style["maxTextLevel"] + 1)):
            spacing, values = levels[level]
            strings = self.tickStrings(values, self.autoSIPrefixScale * self.scale, spacing)
            if not strings:
                continue
            sizes: list[tuple[float, float] | None] = []
            for index, text in enumerate(strings):
                if positions[level][index] is None:
                    sizes.append(None)
                    continue
                size = self._text_sizes.get((font_key, text))
                if size is None:
                    rect = p.boundingRect(QRectF(0, 0, 100, 100), Qt.AlignmentFlag.AlignCenter, text)
                    size = self._text_sizes[(font_key, text)] = (rect.width(), rect.height() * 0.8)
                sizes.append(size)
                measured.append(size)
            along = sum(height if axis == 0 else width for width, height in measured)
            across = max((width if axis == 0 else height for width, height in measured), default=0.0)
            if level > 0:
                fill = along / length
                if any(len(text_specs) >= texts and fill >= limit for texts, limit in style["textFillLimits"]):
                    break
            last_size = across
            for index, text in enumerate(strings):
                size = sizes[index]
                if size is None:
                    continue
                x = positions[level][index]
                width, height = size
                if axis == 0:
                    flags = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextDontClip
                    rect = QRectF(tick_stop - text_offset - width, x - height / 2, width, height)
                else:
                    flags = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextDontClip
                    rect = QRectF(x - width / 2.0, tick_stop + text_offset, width, height)
                if bounding & rect != rect:  # outside the axis (QRectF's fuzzy compare, as pyqtgraph)
                    continue
                text_specs.append((rect, flags, text))
        if len(self._text_sizes) > 4096:  # strings of ranges long gone
            self._text_sizes.clear()
        self._updateMaxTextSize(last_size)
        return axis_spec, tick_specs, text_specs

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

    def __init__(self, orientation: str, tick_images: OrderedDict | None = None, **kwargs: object) -> None:
        super().__init__(orientation, tick_images, **kwargs)
        self.enableAutoSIPrefix(False)

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802 - pyqtgraph's
        if self.logMode or not spacing:
            return super().tickStrings(values, scale, spacing)  # log ticks: pyqtgraph's own labels of 10**x
        return step_tick_labels([value * scale for value in values], spacing * scale)


def step_tick_labels(values: list[float], spacing: float) -> list[str]:
    """Step counts as ticks read best: 950; 12,500 as 12.5k; 1,200,000 as 1.2M. One unit for the whole set, from
    its largest value (0.8M and 1.2M, not 800k and 1.2M), with the decimals the spacing needs."""
    largest = max((abs(value) for value in values), default=0.0)
    if largest >= 1e6 and spacing >= 1e5:
        divisor, suffix = 1e6, "M"
    elif largest >= 1e4 and spacing >= 100:
        divisor, suffix = 1e3, "k"
    else:
        divisor, suffix = 1.0, ""
    # Spacings are 1, 2 or 5 times a power of ten: as many decimals as its first significant digit needs.
    decimals = max(0, -math.floor(math.log10(spacing / divisor) + 1e-9)) if spacing > 0 else 0
    labels = []
    for value in values:
        text = f"{value / divisor:.{decimals}f}"
        labels.append("0" if float(text) == 0 else text + suffix)  # no "-0", no "0k"
    return labels


def step_tick_label(value: float, spacing: float) -> str:
    """One step count as a tick (see ``step_tick_labels``)."""
    return step_tick_labels([value], spacing)[0]


__all__ = ["MAX_TICK_IMAGES", "SharedTicksAxis", "StepAxis", "step_tick_label", "step_tick_labels"]
