"""Chart axes: the step axis writes 950, 12.5k, 1.2M and keeps its label; linked x axes share their drawing."""

from __future__ import annotations

import numpy as np
import pytest

from gui.chart_axes import step_tick_label
from gui.rank_charts import RankCharts
from gui.series import RunSeries


@pytest.mark.parametrize("value, spacing, text", [
    (0, 200, "0"),
    (950, 50, "950"),
    (12_500, 500, "12.5k"),
    (250_000, 50_000, "250k"),
    (1_200_000, 200_000, "1.2M"),
    (3_000_000, 1_000_000, "3M"),
    (1_000_010, 10, "1000010"),  # zoomed in far: every digit counts
    (250_100, 100, "250.1k"),
    (2.5, 0.5, "2.5"),
    (-0.0, 1, "0"),
])
def test_step_ticks_read_as_people_write_step_counts(value, spacing, text):
    assert step_tick_label(value, spacing) == text


def test_a_million_steps_keep_the_label_step_and_ticks_in_millions(qtbot):
    charts = RankCharts()
    charts.resize(1200, 800)
    qtbot.addWidget(charts)
    charts.show()
    series = RunSeries(rank_nodes=["node1"])
    x = np.arange(1, 1_000_001, dtype=float)
    series.rank(0)["loss"].extend(x, np.sin(x / 1e5))
    charts.set_run(series)
    charts.redraw()
    qtbot.wait(10)
    axis = charts.loss.plot.getAxis("bottom")
    label = axis.labelString()
    assert "step" in label and "x1e" not in label
    ticks = [text for level in axis.tickValues(*axis.range, axis.width()) for text in
             axis.tickStrings(level[1], axis.autoSIPrefixScale * axis.scale, level[0])]
    assert any(text.endswith("M") for text in ticks), ticks
    charts.loss.plot.setXRange(10_000, 20_000, padding=0)
    charts.redraw()
    assert axis.labelString() == label
