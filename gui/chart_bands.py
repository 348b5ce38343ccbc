"""Dense curves of a plot rasterised together into one image with numpy, a pixel column at a time.

A curve peak-decimated to the plot's width is, per pixel column, one vertical stroke from the column's minimum
to its maximum plus the short joins between columns. Qt strokes those ~1,300 vertices per curve through its
generic line rasteriser, one pixel-wide span per row (~8 ms a frame for the dashboard's 24 noisy curves here);
numpy makes the same pixels in ~1 ms for all of them: each curve becomes a [top, bottom] row span per column,
the spans of a plot's curves are merged per column (later curves on top) and the column runs are expanded into
one image. What a non-antialiased solid pen of 1-3 pixels draws; sparse, dashed or gapped curves stay with Qt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from pyqtgraph import debug
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QColor, QImage, QPainter, QTransform


def column_spans(px: np.ndarray, py: np.ndarray, col0: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The (top, bottom) device y a polyline covers in each of ``width`` pixel columns from ``col0`` (NaN: none).

    ``px`` must be sorted and every value finite. A column holds its own points and where the line crosses its
    left and right edges, so a steep join between columns is split between them as a line rasteriser does.
    """
    tops, bottoms = many_column_spans([(px, py)], col0, width)
    return tops[0], bottoms[0]


def many_column_spans(lines: Sequence[tuple[np.ndarray, np.ndarray]], col0: int,
                      width: int) -> tuple[np.ndarray, np.ndarray]:
    """``column_spans`` of several polylines at once, as (lines, width) arrays of tops and bottoms.

    One pass over all the lines' points (numpy's cost here is mostly per call, not per point).
    """
    count = len(lines)
    stride = width + 2  # one column more each side: points beyond the view land there and are dropped
    edges = np.arange(col0, col0 + width + 1, dtype=np.float64)
    at_edges = np.empty((count, width + 1))
    for index, (px, py) in enumerate(lines):
        at_edges[index] = np.interp(edges, px, py, left=np.nan, right=np.nan)
    top = np.empty((count, stride))
    bottom = np.empty((count, stride))
    np.fmin(at_edges[:, :-1], at_edges[:, 1:], out=top[:, 1:-1])
    np.fmax(at_edges[:, :-1], at_edges[:, 1:], out=bottom[:, 1:-1])
    top[:, 0] = top[:, -1] = bottom[:, 0] = bottom[:, -1] = np.nan
    xs = np.concatenate([px for px, _ in lines])
    ys = np.concatenate([py for _, py in lines])
    offsets = np.repeat(np.arange(count) * stride, [px.shape[0] for px, _ in lines])
    columns = np.floor(xs - (col0 - 1)).clip(0, width + 1).astype(np.intp) + offsets
    # ufunc.at: ~3x faster here than reduceat over the columns' runs (a few points each) and a scatter.
    np.fmin.at(top.reshape(-1), columns, ys)
    np.fmax.at(bottom.reshape(-1), columns, ys)
    return top[:, 1:-1], bottom[:, 1:-1]


def widened(top: np.ndarray, bottom: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """The spans a round pen ``width`` device pixels wide covers around the line's spans.

    Each column takes its neighbours' spans within half the width, grown by what a disc of that diameter
    reaches at their distance: a diagonal comes out as thick as a horizontal line, not 1.4 times thicker.
    """
    half = (width - 1) / 2
    if half <= 0:
        return top, bottom
    grown_top, grown_bottom = top - half, bottom + half
    for shift in range(1, int(half) + 1):
        reach = math.sqrt(half * half - shift * shift)
        np.fmin(grown_top[shift:], top[:-shift] - reach, out=grown_top[shift:])
        np.fmin(grown_top[:-shift], top[shift:] - reach, out=grown_top[:-shift])
        np.fmax(grown_bottom[shift:], bottom[:-shift] + reach, out=grown_bottom[shift:])
        np.fmax(grown_bottom[:-shift], bottom[shift:] + reach, out=grown_bottom[:-shift])
    return grown_top, grown_bottom


# Curves merged in one pass: their bits must fit a float64's mantissa (see composite()).
MAX_CURVES_PER_PASS = 52
# Curves in one image: its pixels are curve numbers, a byte each, 0 for none.
MAX_CURVES_PER_IMAGE = 255


def composite(tops: Sequence[np.ndarray] | np.ndarray, bottoms: Sequence[np.ndarray] | np.ndarray,
              height: int, width: int) -> np.ndarray:
    """An (height, width) uint8 image of the spans: k + 1 where curve k is on top, 0 where no curve is.

    ``tops``/``bottoms``: a row of ``width`` device y per curve, in drawing order (at most 255 curves).

    Per column the spans' ends cut the column into runs. Sorted, each cut adds (a span's first row) or removes
    (its end) its curve's bit, so a running sum gives the curves covering each run, and its highest bit (the
    float exponent) the curve on top. The runs' curve numbers are expanded with one ``np.repeat``, column by
    column, and transposed; Qt turns numbers into colours (``band_strips``), 3x faster than a numpy lookup.
    """
    count = len(tops)
    if count > MAX_CURVES_PER_IMAGE:
        raise ValueError(f"{count} curves: at most {MAX_CURVES_PER_IMAGE} fit in one band image")
    if count > MAX_CURVES_PER_PASS:
        image = composite(tops[:MAX_CURVES_PER_PASS], bottoms[:MAX_CURVES_PER_PASS], height, width)
        above = composite(tops[MAX_CURVES_PER_PASS:], bottoms[MAX_CURVES_PER_PASS:], height, width)
        covered = above != 0
        image[covered] = above[covered] + MAX_CURVES_PER_PASS
        return image
    spans = np.empty((width, 2 * count))
    spans[:, :count] = np.vstack(tops).T
    spans[:, count:] = np.vstack(bottoms).T
    empty = np.isnan(spans[:, :count]) | np.isnan(spans[:, count:])
    spans[:, :count][empty] = 0
    spans[:, count:][empty] = -1
    # Row r covers device y [r, r + 1): a span covers rows floor(top) .. floor(bottom), as [first, end).
    np.floor(spans, out=spans)
    spans[:, count:] += 1
    np.clip(spans, 0, height, out=spans)
    # Sorted with the cut's index in the low bits: which curve it opens or closes rides along.
    shift = (2 * count).bit_length()
    keys = (spans.astype(np.int64) << shift) | np.arange(2 * count)
    keys.sort(axis=1)
    rows = keys >> shift
    bits = np.concatenate([1 << np.arange(count), -(1 << np.arange(count))])
    covering = np.cumsum(bits[keys & ((1 << shift) - 1)], axis=1)
    # Curve k's bit is 2**k: frexp gives exponent k + 1 for [2**k, 2**(k+1)), and 0 for no curve at all.
    run_curves = np.zeros((width, 2 * count + 1), dtype=np.uint8)
    run_curves[:, 1:] = np.frexp(covering.astype(np.float64))[1]
    lengths = np.empty((width, 2 * count + 1), dtype=np.intp)
    lengths[:, 0] = rows[:, 0]
    lengths[:, 1:-1] = np.diff(rows, axis=1)
    lengths[:, -1] = height - rows[:, -1]
    by_column = np.repeat(run_curves.ravel(), lengths.ravel()).reshape(width, height)
    return np.ascontiguousarray(by_column.T)


# Qt converts an image of 2**17 pixels or more on its GUI thread pool: waking those threads from a paint costs
# ~200 µs a chart here, several times the conversion itself (~70 µs on this thread). Strips stay below.
MAX_STRIP_PIXELS = (1 << 17) - 1


def band_strips(curve_numbers: np.ndarray, colors: Sequence[QColor]) -> list[tuple[int, QImage]]:
    """The image ``composite`` describes, as (first row, image) strips: curve k + 1 in ``colors[k]``, transparent
    at 0. Each image owns its pixels."""
    height, width = curve_numbers.shape
    table = [0] + [color.rgba() for color in colors]
    rows = max(1, MAX_STRIP_PIXELS // max(1, width))
    strips = []
    for first in range(0, height, rows):
        part = curve_numbers[first : first + rows]
        indexed = QImage(part.data, width, part.shape[0], width, QImage.Format.Format_Indexed8)
        indexed.setColorTable(table)
        # Converted once, here: the raster engine converts an indexed image on every repaint (~10x slower to draw).
        strips.append((first, indexed.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)))
    return strips


class BandLayer(pg.UIGraphicsItem):
    """Paints those of a plot's curves that are ``banded`` (see ``DecimatedCurve``) as one image, in their order
    (an image per 255 curves).

    The image is made again only when a curve's data changed (``invalidate()``) or the view's mapping or size
    did; a repaint for anything else (a legend, an axis) draws the kept image. Bounds: the view's, like a grid.
    """

    def __init__(self) -> None:
        super().__init__()
        self.curves: list[pg.PlotCurveItem] = []  # the plot's curves that may be banded, in drawing order
        self._images: list[tuple[QPointF, QImage]] = []  # strips of the image and where each goes
        self._key: tuple | None = None
        self.renders = 0  # how many images were made (what a test checks)

    def set_curves(self, curves: list[pg.PlotCurveItem]) -> None:
        if curves != self.curves:
            self.curves = curves
            self.invalidate()

    def invalidate(self) -> None:
        self._key = None
        self.update()

    # An exception escaping a Python paint() takes PySide6 down (a segfault): logged instead, as pyqtgraph does.
    @debug.warnOnException
    def paint(self, p: QPainter, *args: object) -> None:  # noqa: D102 - Qt's
        if not any(curve.banded for curve in self.curves):
            return
        view = self.getViewBox()
        if view is None:
            return
        world = p.worldTransform()  # item → the painted widget's logical pixels (what resetTransform() leaves)
        if world.type().value > QTransform.TransformationType.TxScale.value:
            return  # no rotated plots here
        ratio = p.device().devicePixelRatioF() if p.device() is not None else 1.0
        device = world * QTransform.fromScale(ratio, ratio)
        area = device.mapRect(view.viewRect())
        key = (device.m11(), device.m22(), device.dx(), device.dy(), area.left(), area.top(), area.width(),
               area.height(), ratio)
        if key != self._key:
            self._render(device, area, ratio)
            self._key = key
        if self._images:
            p.save()
            p.resetTransform()
            for origin, image in self._images:
                p.drawImage(origin, image)
            p.restore()

    def _render(self, device: QTransform, area: QRectF, ratio: float) -> None:
        col0, row0 = math.floor(area.left()), math.floor(area.top())
        width, height = math.ceil(area.right()) - col0, math.ceil(area.bottom()) - row0
        self._images = []
        if width <= 0 or height <= 0:
            return
        lines, widths, colors = [], [], []
        sx, sy, dx, dy = device.m11(), device.m22(), device.dx(), device.dy()
        for curve in self.curves:
            xs, ys = curve.xData, curve.yData
            if not getattr(curve, "banded", False) or xs is None or xs.shape[0] == 0 or not curve.isVisible():
                continue
            px = xs * sx + dx
            py = ys * sy + (dy - row0)
            lines.append((px, py) if sx > 0 else (px[::-1], py[::-1]))
            pen = curve.opts["pen"]
            widths.append(max(1.0, pen.widthF()))  # a cosmetic pen's width is in device pixels, as Qt draws it
            colors.append(pen.color())
        if not lines:
            return
        top, bottom = many_column_spans(lines, col0, width)
        for index, pen_width in enumerate(widths):
            if pen_width > 1:
                top[index], bottom[index] = widened(top[index], bottom[index], pen_width)
        # Only the rows the curves reach: the rest of the plot is not blended with transparent pixels.
        highest, lowest = np.fmin.reduce(top, axis=None), np.fmax.reduce(bottom, axis=None)
        if math.isnan(highest) or math.isnan(lowest):
            return
        first, end = max(0, math.floor(highest)), min(height, math.floor(lowest) + 1)
        if end <= first:
            return
        if first:
            top -= first
            bottom -= first
        rows = end - first
        for first_curve in range(0, len(colors), MAX_CURVES_PER_IMAGE):
            chunk = slice(first_curve, first_curve + MAX_CURVES_PER_IMAGE)
            for row, image in band_strips(composite(top[chunk], bottom[chunk], rows, width), colors[chunk]):
                image.setDevicePixelRatio(ratio)
                # resetTransform() leaves the painter in logical pixels: device pixels divided by the ratio.
                self._images.append((QPointF(col0 / ratio, (row0 + first + row) / ratio), image))
        self.renders += 1


__all__ = ["BandLayer", "band_strips", "column_spans", "composite", "many_column_spans", "widened"]
