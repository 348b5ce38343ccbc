"""BoundsViewBox: the same auto-range as pyqtgraph's ViewBox, from the curves' data bounds directly."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest

from gui.chart_view import BoundsViewBox
from gui.rank_charts import DecimatedCurve


@pytest.mark.parametrize("pen_width", [1, 3])
def test_children_bounds_match_the_viewbox(qtbot, pen_width):
    widget = pg.PlotWidget(viewBox=BoundsViewBox())
    qtbot.addWidget(widget)
    widget.resize(500, 300)
    widget.show()
    rng = np.random.default_rng(0)
    for offset in (0.0, 5.0, -3.0):
        x = np.arange(100.0) * 7 + offset
        curve = DecimatedCurve(x, rng.standard_normal(100) + offset, pen=pg.mkPen("r", width=pen_width))
        widget.plotItem.addItem(curve)
    gapped = np.full(50, np.nan)
    gapped[10:20] = 40.0
    widget.plotItem.addItem(DecimatedCurve(np.arange(50.0), gapped, pen=pg.mkPen("g")))
    widget.plotItem.addItem(pg.PlotDataItem([1, 2, 3], [9, -9, 4], symbol="o"))
    widget.plotItem.addItem(DecimatedCurve(np.array([]), np.array([])))  # no data yet
    qtbot.wait(1)
    view = widget.plotItem.getViewBox()
    ours = view.childrenBounds()
    theirs = pg.ViewBox.childrenBounds(view)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    # Asked for something else (a part of the data), it is pyqtgraph's answer.
    assert view.childrenBounds(frac=(0.5, 0.5)) == pg.ViewBox.childrenBounds(view, frac=(0.5, 0.5))


def test_a_moved_item_is_mapped_as_pyqtgraph_maps_it(qtbot):
    widget = pg.PlotWidget(viewBox=BoundsViewBox())
    qtbot.addWidget(widget)
    curve = DecimatedCurve(np.arange(10.0), np.arange(10.0), pen=pg.mkPen("r"))
    curve.setPos(100, 0)
    widget.plotItem.addItem(curve)
    view = widget.plotItem.getViewBox()
    assert view.childrenBounds()[0][0] == pytest.approx(100.0, abs=1)
    assert view.childrenBounds() == pg.ViewBox.childrenBounds(view)


def test_a_new_range_is_auto_ranged_once_and_stays(qtbot):
    widget = pg.PlotWidget(viewBox=BoundsViewBox())
    qtbot.addWidget(widget)
    widget.resize(500, 300)
    widget.show()
    curve = DecimatedCurve(pen=pg.mkPen("r", width=3))
    widget.plotItem.addItem(curve)
    view = widget.plotItem.getViewBox()
    curve.setData(np.arange(1000.0), np.sin(np.arange(1000.0) / 50))
    assert view._autoRangeNeedsUpdate  # new data: the range follows
    view.prepareForPaint()
    # The view's own transform change did not queue another auto-range for the paint.
    assert not view._autoRangeNeedsUpdate
    ranged = view.viewRange()
    view.updateAutoRange()
    assert view.viewRange() == ranged
