"""A plot grid drawing pyqtgraph's ``GridItem`` lines straight to the painter, without recording a QPicture first.

``GridItem`` records its lines one ``drawLine`` at a time into a QPicture on every view change and then
plays it back: ~0.3 ms of Python per chart and frame here. The same lines (spacing, fading by density) come
from a few numpy operations and one ``drawLines`` per level and axis.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from pyqtgraph import debug
from PySide6.QtCore import QLineF
from PySide6.QtGui import QPainter, QPen


def grid_lines(low: tuple[float, float], high: tuple[float, float], pixels: tuple[float, float],
               spacings: tuple[list, list], depth: int) -> list[tuple[int, int, np.ndarray]]:
    """(axis, alpha, positions) of each set of grid lines, as ``GridItem.generatePicture`` draws them.

    ``low``/``high``: the view's corners in data units (low < high on both axes); ``pixels``: the view widget's
    size; ``spacings``: fixed spacings per level and axis (None: automatic). Plain floats, not numpy: a few
    dozen operations on pairs cost less than numpy's overhead per call.
    """
    sets = []
    last = [0.0, 0.0]
    for level in range(depth - 1, -1, -1):
        steps = []
        for axis in (0, 1):
            fixed = spacings[axis]
            if level < len(fixed) and fixed[level] is not None:
                step = float(fixed[level])
            else:
                step = 10.0 ** math.floor(math.log10(abs((high[axis] - low[axis]) / 10.0**level)) + 0.5)
            steps.append(step)
            last[axis] = step
        for axis in (0, 1):
            step = steps[axis]
            if level >= len(spacings[axis]) or step < last[axis]:
                continue
            first = math.floor(low[axis] / step) * step
            count = (math.ceil(high[axis] / step) * step - first) / step + 0.5
            alpha = int(min(max(5 * (pixels[axis] / count - 3), 0), 50))
            at = first + np.arange(int(count)) * step
            at = at[(at >= low[axis]) & (at <= high[axis])]
            sets.append((axis, alpha, at))
    return sets


class LightGrid(pg.GridItem):
    """``GridItem`` without texts, painted directly (see the module docstring); texts fall back to ``GridItem``."""

    @debug.warnOnException  # an exception escaping paint() takes PySide6 down: logged instead
    def paint(self, p: QPainter, opt: object, widget: object) -> None:  # noqa: D102 - Qt's
        if self.opts["textPen"] is not None:
            super().paint(p, opt, widget)
            return
        rect = self.boundingRect()
        view = self.getViewWidget()
        if rect.isNull() or view is None or self.deviceTransform_() is None:
            return
        low = (rect.left(), min(rect.top(), rect.bottom()))
        high = (rect.right(), max(rect.top(), rect.bottom()))
        size = view.rect()
        for axis, alpha, at in grid_lines(low, high, (size.width(), size.height()), self.opts["tickSpacing"],
                                          self.grid_depth):
            pen = QPen(self.opts["pen"])
            color = pen.color()
            color.setAlpha(alpha)
            pen.setColor(color)
            pen.setCosmetic(True)
            p.setPen(pen)
            if axis == 0:
                lines = [QLineF(x, low[1], x, high[1]) for x in at.tolist()]
            else:
                lines = [QLineF(low[0], y, high[0], y) for y in at.tolist()]
            p.drawLines(lines)


__all__ = ["LightGrid", "grid_lines"]
