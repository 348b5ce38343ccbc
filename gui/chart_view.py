"""A ViewBox whose auto-range reads its curves' data bounds directly and runs once per view change, not twice.

``ViewBox.childrenBounds`` builds a QRectF per item and maps it into the view through Qt
(``mapFromItemToView``) on every auto-range: ~20 µs per curve, 40 curves, several auto-ranges a frame. The
curves here sit untransformed in the view's child group, so their data bounds are already view coordinates.

And pyqtgraph means its child group not to report its own transform changes as bounds changes, but sets the
flag under a misspelt name (``__inform_view_on_change``; ``GraphicsObject`` reads ``__inform_view_on_changes``):
each new range then queues a second auto-range, computed again in the paint with the same result.
"""

from __future__ import annotations

import math

import pyqtgraph as pg


class BoundsViewBox(pg.ViewBox):
    """``ViewBox`` with a shortcut in ``childrenBounds`` for untransformed items; anything else goes the usual way."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # The child group's transform is the view range itself: its changes move no item's data bounds.
        self.childGroup._GraphicsObject__inform_view_on_changes = False

    def childrenBounds(self, frac=None, orthoRange=(None, None), items=None):  # noqa: N802, N803 - pyqtgraph's names
        # updateAutoRange passes lists: [1.0, 1.0] (whole data) and [None, None] (no ortho range).
        if items is not None or tuple(orthoRange) != (None, None) or (frac is not None and tuple(frac) != (1.0, 1.0)):
            return super().childrenBounds(frac, orthoRange, items)
        scene = self.scene()
        bounds = []  # (x_min, x_max, y_min, y_max, use_x, use_y, pixel padding)
        for item in self.addedItems:
            if not item.isVisible() or item.scene() is not scene:
                continue
            if (getattr(item, "dataBounds", None) is None or item.parentItem() is not self.childGroup
                    or not item.transform().isIdentity() or item.pos().x() or item.pos().y()):
                return super().childrenBounds(frac, orthoRange, items)
            x_range = item.dataBounds(0, frac=1.0, orthoRange=None)
            y_range = item.dataBounds(1, frac=1.0, orthoRange=None)
            use_x = _finite(x_range)
            use_y = _finite(y_range)
            if not (use_x or use_y):
                continue
            x_min, x_max = x_range if use_x else (0.0, 0.0)
            y_min, y_max = y_range if use_y else (0.0, 0.0)
            padding = item.pixelPadding() if hasattr(item, "pixelPadding") else 0
            # As a QRectF would normalise them.
            bounds.append((min(x_min, x_max), max(x_min, x_max), min(y_min, y_max), max(y_min, y_max), use_x, use_y,
                           padding))
        result: list = [None, None]
        for axis, (low_at, high_at, use_at) in enumerate(((0, 1, 4), (2, 3, 5))):
            used = [b for b in bounds if b[use_at]]
            if not used:
                continue
            low, high = min(b[low_at] for b in used), max(b[high_at] for b in used)
            # The pixel margins, once the range (and so the size of a pixel) is roughly known.
            size = self.width() if axis == 0 else self.height()
            if size > 0:
                pixel = (high - low) / size
                for b in used:
                    if b[6]:
                        low = min(low, b[low_at] - b[6] * pixel)
                        high = max(high, b[high_at] + b[6] * pixel)
            result[axis] = [low, high]
        return result


def _finite(bounds: object) -> bool:
    return (bounds is not None and not (bounds[0] is None and bounds[1] is None)
            and math.isfinite(bounds[0]) and math.isfinite(bounds[1]))


__all__ = ["BoundsViewBox"]
