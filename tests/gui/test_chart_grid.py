"""LightGrid draws exactly the lines pyqtgraph's GridItem draws, without its QPicture."""

from __future__ import annotations

import pyqtgraph as pg
import pytest
from PySide6.QtGui import QColor

from gui.chart_grid import LightGrid


@pytest.mark.parametrize("x_range, y_range", [((0, 1e6), (1.5, 3.5)), ((333, 341), (-1e8, 3e8)),
                                              ((-5, 5), (0.01, 0.02)), ((12_345, 99_999), (0, 1))])
def test_same_pixels_as_grid_item(qtbot, x_range, y_range):
    def grab(grid_type: type) -> object:
        widget = pg.PlotWidget()
        qtbot.addWidget(widget)
        widget.resize(640, 400)
        grid = grid_type()
        grid.setTextPen(None)
        grid.setTickSpacing(x=[None, None], y=[None, None])
        color = QColor("white")
        color.setAlpha(28)
        grid.setPen(pg.mkPen(color))
        widget.plotItem.addItem(grid, ignoreBounds=True)
        widget.setXRange(*x_range, padding=0)
        widget.setYRange(*y_range, padding=0)
        widget.show()
        for _ in range(2):  # the axes settle their sizes after the first paint
            qtbot.wait(1)
            image = widget.grab().toImage()
        return image

    assert grab(LightGrid) == grab(pg.GridItem)
