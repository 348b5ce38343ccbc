"""RankCharts: a curve per rank made once, redrawn only when changed, decimated to the view, slowest rank flagged."""

from __future__ import annotations

import numpy as np
import pytest

from gui.series import RunSeries
from trainer.events import NodeEvent, StartEvent, StepEvent


def filled_series(ranks: int = 8, steps: int = 50_000, slow_rank: int | None = 3) -> RunSeries:
    series = RunSeries(rank_nodes=[f"node{r // 2 + 1}" for r in range(ranks)])
    x = np.arange(1, steps + 1, dtype=float)
    rng = np.random.default_rng(0)
    for rank in range(ranks):
        metrics = series.rank(rank)
        metrics["loss"].extend(x, 3 + rng.normal(size=steps))
        metrics["mlx_active_bytes"].extend(x, np.full(steps, 1e8))
        metrics["mlx_peak_bytes"].extend(x, np.full(steps, 2e8))
        step_time = 0.1 * (1.5 if rank == slow_rank else 1.0)
        metrics["step_time_s"].extend(x, np.full(steps, step_time))
        metrics["tokens_per_s"].extend(x, np.full(steps, 2048 / step_time))
    series.loss_mean.extend(x, np.full(steps, 3.0))
    return series


def test_every_rank_has_a_curve_and_the_mean_is_thick(charts):
    charts.set_run(filled_series())
    charts.redraw()
    assert [key for key in charts.loss.curves if key.startswith("rank:")] == [f"rank:{r}" for r in range(8)]
    assert len(charts.memory.curves) == 16  # active and peak per rank
    for rank in range(8):
        assert charts.loss.points(f"rank:{rank}") == 50_000
    mean_pen = charts.loss.curves["mean"].item.opts["pen"]
    rank_pen = charts.loss.curves["rank:0"].item.opts["pen"]
    assert mean_pen.width() > rank_pen.width()


def test_curves_get_at_most_a_few_points_per_pixel(charts):
    charts.set_run(filled_series())
    charts.redraw()
    width = int(charts.loss.view.width())
    for curve in charts.loss.curves.values():
        shown = curve.item.getData()[0]
        if len(curve.series):
            assert 0 < len(shown) <= 2 * 1.5 * max(width, 100) + 4


def test_redraw_touches_only_changed_curves(charts):
    series = filled_series()
    charts.set_run(series)
    charts.redraw()
    assert charts.redraw() == 0
    series.add(StepEvent(rank=2, time=0.0, step=50_001, loss=1.0, step_time_s=0.1, mlx_active_bytes=1,
                         mlx_peak_bytes=2, tokens_per_s=1.0))
    # rank 2's loss, active, peak and speed curves.
    assert charts.redraw() == 4


def test_points_appended_beyond_a_zoomed_view_redraw_nothing(charts):
    series = filled_series(ranks=2)
    charts.set_run(series)
    charts.redraw()
    charts.loss.plot.setXRange(1000, 1100, padding=0)
    charts.redraw()
    assert charts.redraw() == 0
    for step in (50_001, 50_002):
        series.add(StepEvent(rank=1, time=0.0, step=step, loss=9.0, step_time_s=0.1, mlx_active_bytes=1,
                             mlx_peak_bytes=2, tokens_per_s=1.0))
        assert charts.redraw() == 0  # the view shows steps 1000-1100: nothing there changed
    assert np.nanmax(charts.loss.curves["rank:1"].item.getData()[1]) < 9.0
    # Following the run again, the new points are drawn (the spike survives decimation).
    charts.loss.plot.enableAutoRange()
    assert charts.redraw() > 0
    assert np.nanmax(charts.loss.curves["rank:1"].item.getData()[1]) == 9.0


def test_zooming_draws_only_the_visible_steps(charts):
    charts.set_run(filled_series())
    charts.redraw()
    charts.loss.plot.setXRange(1000, 1100, padding=0)
    charts.redraw()
    xs = charts.loss.curves["rank:0"].item.getData()[0]
    assert xs.min() >= 999 and xs.max() <= 1101
    # The x axes are linked: the speed chart follows.
    xs = charts.speed.curves["rank:0"].item.getData()[0]
    assert xs.min() >= 999 and xs.max() <= 1101


def test_slowest_rank_is_flagged_in_legend_and_title(charts, qtbot):
    charts.set_run(filled_series(slow_rank=5))
    with qtbot.waitSignal(charts.slowest_changed) as flagged:
        charts.redraw()
    assert flagged.args[0].rank == 5
    assert "rank 5 (slowest)" in charts.legend_labels()
    assert "slowest: rank 5 (+50% step time)" in charts.speed.title.text()
    assert charts.speed.curves["rank:5"].item.opts["pen"].width() > charts.speed.curves["rank:0"].item.opts["pen"].width()


def test_equal_ranks_flag_nobody(charts):
    charts.set_run(filled_series(slow_rank=None))
    charts.redraw()
    assert charts.slowest is None
    assert not any("slowest" in label for label in charts.legend_labels())


def test_speed_metric_switches_to_tokens_per_second(charts):
    series = filled_series(ranks=2, steps=100, slow_rank=None)
    charts.set_run(series)
    charts.redraw()
    charts.speed_choice.setCurrentIndex(charts.speed_choice.findData("tokens_per_s"))
    charts.redraw()
    ys = charts.speed.curves["rank:0"].item.getData()[1]
    assert np.allclose(ys, 20480.0)


def test_ranks_and_nodes_appearing_later_get_curves(charts):
    series = RunSeries()
    charts.set_run(series)
    series.add(StartEvent(rank=0, time=0.0, world_size=3, host="a"))
    series.add(NodeEvent(rank=1, time=0.0, host="b", ram_used_bytes=5, ram_total_bytes=10))
    charts.redraw()
    assert len([k for k in charts.loss.curves if k.startswith("rank:")]) == 3
    assert list(charts.node_ram.curves) == ["node:b"]


def test_legend_entries_shown_before_a_switch_to_dark_take_the_dark_text_colour(charts):
    from PySide6.QtGui import QColor, QPalette

    series = filled_series(ranks=2, steps=100)
    series.add(NodeEvent(rank=0, time=0.0, host="node1", ram_used_bytes=5, ram_total_bytes=10))
    charts.set_run(series)
    charts.redraw()
    dark = QPalette(charts.palette())
    for role, color in ((QPalette.ColorRole.Base, "#202020"), (QPalette.ColorRole.Text, "#eeeeee"),
                        (QPalette.ColorRole.Window, "#2a2a2a"), (QPalette.ColorRole.WindowText, "#eeeeee")):
        dark.setColor(role, QColor(color))
    charts.setPalette(dark)
    charts.redraw()
    for chart in (charts.loss, charts.node_ram):
        labels = [label for _, label in chart.legend.items]
        assert labels and all("color:#eeeeee" in label.item.toHtml() for label in labels), chart.title.text()


def test_the_first_steps_compile_time_does_not_flatten_the_step_time_chart(charts):
    series = filled_series(ranks=3, steps=50, slow_rank=None)
    for rank in range(3):
        series.rank(rank)["step_time_s"].y[0] = 40.0 + rank  # compiling: seconds, against 0.1 s after
    charts.set_run(series)
    charts.redraw()
    low, high = charts.speed.view.viewRange()[1]
    assert high < 1.0, (low, high)  # the steady steps fill the chart
    assert "step 1 (42 s) off the scale" in charts.speed.title.text()
    # Still drawn: the line runs off the top of the view.
    assert charts.speed.curves["rank:2"].item.getData()[1][0] == 42.0
    # Zoomed out by hand to show it: the note goes.
    charts.speed.view.setYRange(0, 50)
    assert "off the scale" not in charts.speed.title.text()
    # Tokens/s has no such outlier on top: the whole range, no note.
    charts.speed_choice.setCurrentIndex(charts.speed_choice.findData("tokens_per_s"))
    charts.redraw()
    assert "off the scale" not in charts.speed.title.text()
    assert all(curve.item.range_skips_x is None for curve in charts.speed.curves.values())


def test_a_first_step_as_fast_as_the_others_gets_no_note(charts):
    charts.set_run(filled_series(ranks=2, steps=50, slow_rank=None))
    charts.redraw()
    assert "off the scale" not in charts.speed.title.text()
    assert all(curve.item.range_skips_x is None for curve in charts.speed.curves.values())


def test_a_first_step_past_a_million_is_named_in_full(charts):
    series = RunSeries(rank_nodes=["node1"])
    steps = np.arange(1_234_567.0, 1_234_617.0)
    times = np.full(50, 0.5)
    times[0] = 1234.5
    series.rank(0)["step_time_s"].extend(steps, times)
    series.rank(0)["loss"].extend(steps, np.ones(50))
    charts.set_run(series)
    charts.redraw()
    assert "step 1,234,567 (1,234 s) off the scale" in charts.speed.title.text()


def test_curve_bounds_match_pyqtgraph_and_skip_gaps():
    import pyqtgraph as pg

    from gui.rank_charts import DecimatedCurve

    xs = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ys = np.array([3.0, np.nan, -2.0, 8.0, np.nan])
    ours, theirs = DecimatedCurve(pen=pg.mkPen("r")), pg.PlotCurveItem(pen=pg.mkPen("r"))
    for item in (ours, theirs):
        item.setData(xs, ys)
    for axis in (0, 1):
        assert ours.dataBounds(axis) == theirs.dataBounds(axis)
    assert ours.dataBounds(1) == (-2.0, 8.0)


@pytest.mark.parametrize("dense", [False, True])
def test_set_points_leaves_a_curve_as_set_data_does(qtbot, dense):
    import pyqtgraph as pg

    from gui.chart_bands import BandLayer
    from gui.rank_charts import DecimatedCurve

    xs = np.arange(1.0, 2001.0)
    ys = np.sin(xs / 100)
    ys[::50] = 5.0
    quick, full = (DecimatedCurve(pen=pg.mkPen("r"), layer=BandLayer()) for _ in range(2))
    for item in (quick, full):
        item.dense = dense
        item.setData(np.array([0.0, 1.0]), np.array([1.0, 2.0]))  # earlier points, bounds asked once
        item.dataBounds(1)
        item.path = item.generatePath(*item.getData())
    changed = []
    quick.sigPlotChanged.connect(changed.append)
    quick.set_points(xs, ys)
    full.setData(xs, ys)
    assert changed == [quick]
    assert quick.banded == full.banded == dense
    assert quick.path is None and quick.layer._key is None
    for axis in (0, 1):
        assert quick.dataBounds(axis) == full.dataBounds(axis)
    assert quick.boundingRect() == full.boundingRect()
    np.testing.assert_array_equal(quick.getData()[1], ys)


def test_sparse_curves_are_antialiased_and_dense_ones_are_not(charts):
    # Antialiasing a dense decimated line multiplies its paint cost for no visible gain; a sparse one shows
    # a staircase without it, and smoothing it costs little.
    import pyqtgraph as pg

    asked = pg.getConfigOption("antialias")
    pg.setConfigOptions(antialias=True)  # what gui.theme does for the app
    try:
        charts.set_run(filled_series(ranks=2, steps=100))
        charts.redraw()
        assert charts.loss.curves["rank:0"].item.opts["antialias"]
        assert charts.loss.curves["mean"].item.opts["antialias"]
        charts.set_run(filled_series(ranks=2, steps=50_000))
        charts.redraw()
    finally:
        pg.setConfigOptions(antialias=asked)
    assert not charts.loss.curves["rank:0"].item.opts["antialias"]  # noisy: ~2 points per pixel column
    assert charts.loss.curves["mean"].item.opts["antialias"]  # flat here: drawn from its two ends
    # Zoomed in far enough, the same curve is sparse again.
    charts.loss.plot.setXRange(1000, 1100, padding=0)
    charts.redraw()
    assert charts.loss.curves["rank:0"].item.opts["antialias"]


def test_the_plot_menu_offers_only_what_applies_to_decimated_curves(charts):
    from gui.rank_charts import PLOT_OPTIONS_HIDDEN

    for chart in charts.charts.values():
        shown = {action.text() for action in chart.plot.ctrlMenu.actions() if action.isVisible()}
        assert not shown & set(PLOT_OPTIONS_HIDDEN), chart.title.text()
        hidden = {action.text() for action in chart.plot.ctrlMenu.actions() if not action.isVisible()}
        assert hidden == set(PLOT_OPTIONS_HIDDEN)


def test_chart_titles_follow_a_switch_to_dark(charts, qtbot):
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication

    from gui.dashboard.log_pane import LogPane
    from gui.theme import dark_palette

    pane = LogPane()
    qtbot.addWidget(pane)
    app = QApplication.instance()
    before = app.palette()
    try:
        app.setPalette(dark_palette())
        qtbot.wait(10)
        light_text = dark_palette().color(QPalette.ColorRole.WindowText)
        titles = [chart.title for chart in charts.charts.values()]
        titles += [label for label in pane.findChildren(type(titles[0])) if label.text() == "Log"]
        assert len(titles) == 5
        for title in titles:
            assert title.palette().color(title.foregroundRole()) == light_text, title.text()
            assert title.font().weight() == title.font().Weight.DemiBold
    finally:
        app.setPalette(before)
