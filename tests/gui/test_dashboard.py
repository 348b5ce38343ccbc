"""The dashboard fed with recorded event streams through a fake run API (cluster.launch's interface)."""

from __future__ import annotations

import csv
import io

import pytest
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

import gui.dashboard.widget as dashboard_module
from cluster.errors import LaunchFailed
from cluster.run_status import RunState
from gui.dashboard import Dashboard
from gui.dashboard.log_pane import ALL, OTHER
from gui.theme import FAIL_COLORS, dark_palette, light_palette
from tests.gui.fakes import (
    RECORDED_3_RANKS,
    FakeRunApi,
    SyntheticRun,
    count_events,
    recorded_lines,
    synthetic_stream,
)
from trainer.events import ErrorEvent, to_line

NODES_3 = ["node1", "node2", "node3"]


@pytest.fixture
def open_dashboard(qtbot, bridge, home):
    opened = []

    def make(api: FakeRunApi) -> Dashboard:
        dashboard = Dashboard(bridge, home, run_api=api)
        dashboard.resize(1300, 950)
        qtbot.addWidget(dashboard)
        dashboard.show()
        opened.append(dashboard)
        return dashboard

    yield make
    for dashboard in opened:
        dashboard.detach()


def wait_ended(qtbot, dashboard: Dashboard, timeout: int = 15_000) -> None:
    qtbot.waitUntil(lambda: dashboard.status is not None and dashboard.follow_job is None
                    and dashboard.status.state.is_over, timeout=timeout)
    dashboard._redraw(force=True)


def rank_points(dashboard: Dashboard) -> dict[int, int]:
    return {int(key.split(":")[1]): dashboard.charts.loss.points(key)
            for key in dashboard.charts.loss.curves if key.startswith("rank:")}


def test_recorded_run_fills_every_chart_table_and_log(qtbot, open_dashboard):
    lines = recorded_lines(RECORDED_3_RANKS)
    api = FakeRunApi()
    api.add_finished("run-3", lines, NODES_3)
    dashboard = open_dashboard(api)
    wait_ended(qtbot, dashboard)

    assert api.follow_calls == ["run-3"]
    assert rank_points(dashboard) == {r: count_events(lines, "step", r) for r in range(3)} == {0: 40, 1: 40, 2: 40}
    assert dashboard.charts.loss.points("mean") == 40
    assert dashboard.charts.loss.points("val") == count_events(lines, "eval", 0)
    for rank in range(3):
        assert dashboard.charts.memory.points(f"peak:{rank}") == 40
        assert len(dashboard.charts.memory.curves[f"active:{rank}"].item.getData()[0]) == 40
    assert sorted(dashboard.charts.node_ram.curves) == ["node:node1", "node:node2", "node:node3"]

    table = dashboard.nodes_table
    assert [row.node for row in table.rows] == NODES_3
    assert table.cell("node2", "Ranks") == "1"
    assert table.cell("node2", "State") == "done"
    assert table.cell("node2", "Step") == "40"
    last_loss = dashboard.status.ranks[1].loss
    assert table.cell("node2", "Loss") == f"{last_loss:.3f}"
    assert " of 25.3 GB (" in table.cell("node2", "RAM")
    assert "Run run-3: finished · step 40 of 40" in dashboard.run_line.text()
    assert dashboard.start_action.isEnabled() and not dashboard.stop_action.isEnabled()

    shown = dashboard.log_pane.shown_lines()
    assert "[rank 0] step 40  loss" in "\n".join(shown)
    assert sum(line.startswith("[rank 2] done after step 40") for line in shown) == 1


def test_eight_rank_run_flags_the_slowest_rank(qtbot, open_dashboard):
    run = SyntheticRun(ranks=8, steps=300, slow_rank=5)
    api = FakeRunApi()
    api.add_finished("run-8", synthetic_stream(run), run.rank_nodes())
    dashboard = open_dashboard(api)
    wait_ended(qtbot, dashboard)

    assert rank_points(dashboard) == {r: 300 for r in range(8)}
    assert dashboard.charts.loss.points("mean") == 300
    assert dashboard.charts.slowest is not None and dashboard.charts.slowest.rank == 5
    assert "rank 5 (slowest)" in dashboard.charts.legend_labels()
    assert "rank 5 slowest" in dashboard.nodes_table.cell("node3", "Ranks")
    assert "slowest" not in dashboard.nodes_table.cell("node1", "Ranks")
    # The per-node view: a panel per node with its own ranks' curves.
    dashboard.tabs.setCurrentWidget(dashboard.node_panels)
    dashboard._redraw(force=True)
    panels = dashboard.node_panels.panels
    assert list(panels) == ["node1", "node2", "node3", "node4"]
    assert panels["node3"].ranks == [4, 5]
    assert sorted(panels["node3"].chart.curves) == ["rank:4", "rank:5"]
    assert panels["node3"].chart.points("rank:5") == 300
    assert "RAM 4.5 GB of 16.0 GB (28%)" == panels["node3"].ram.format()
    assert "rank 5 slowest" in panels["node3"].chart.title.text()
    # Auto-ranged when redrawn, not in the middle of the next paint (which would then paint twice).
    assert not any(panel.chart.view._autoRangeNeedsUpdate for panel in panels.values())


def test_log_filter_and_error_highlighting(qtbot, open_dashboard):
    run = SyntheticRun(ranks=4, steps=20, ranks_per_node=2)
    lines = synthetic_stream(run)
    lines.insert(-2, "[1,3]<stdout>:" + to_line(ErrorEvent(3, 0.0, "out of memory", traceback="Traceback (most recent call last):\n  boom")))
    lines.insert(-2, "[1,1]<stderr>:Traceback (most recent call last):")
    api = FakeRunApi()
    api.add_finished("run-log", lines, run.rank_nodes(), state="failed")
    dashboard = open_dashboard(api)
    wait_ended(qtbot, dashboard)
    pane = dashboard.log_pane

    assert [pane.filter.itemText(i) for i in range(pane.filter.count())] == [
        "All ranks", "rank 0", "rank 1", "rank 2", "rank 3", "launcher / other"]
    pane.choose(2)
    shown = pane.shown_lines()
    assert shown and all(line.startswith("[rank 2] ") for line in shown)
    assert "[rank 2] a plain print from rank 2" in shown  # a raw line, as it was printed
    assert sum(line.startswith("[rank 2] step ") for line in shown) == 20
    pane.choose(OTHER)
    assert pane.shown_lines() == [
        "[launcher] --------------------------------------------------------------------------",
        "[launcher] WARNING: There was an error initializing an OpenFabrics device.",
    ]
    pane.choose(ALL)
    errors = pane.error_lines()
    assert "[rank 3] ERROR: out of memory" in errors
    assert "[rank 1] Traceback (most recent call last):" in errors
    assert "[launcher] WARNING: There was an error initializing an OpenFabrics device." in errors
    assert not any("step 3 " in line for line in errors)
    assert dashboard.status.state is RunState.FAILED
    assert "Rank 3 on node2 failed: out of memory" in dashboard.run_line.text()
    # The failure's red is picked for the background, and follows a switch between light and dark.
    app = QApplication.instance()
    before = app.palette()
    try:
        for palette, scheme in ((light_palette(), "light"), (dark_palette(), "dark"), (light_palette(), "light")):
            app.setPalette(palette)
            QApplication.processEvents()
            assert dashboard.run_line.styleSheet() == f"color: {FAIL_COLORS[scheme]}"
    finally:
        app.setPalette(before)


def test_export_writes_csv_with_every_rank_and_pngs(qtbot, open_dashboard, tmp_path):
    lines = recorded_lines(RECORDED_3_RANKS)
    api = FakeRunApi()
    api.add_finished("run-3", lines, NODES_3)
    dashboard = open_dashboard(api)
    wait_ended(qtbot, dashboard)

    paths = dashboard.export_csvs(tmp_path / "csv")
    assert sorted(p.name for p in paths) == ["run-3-loss.csv", "run-3-memory.csv", "run-3-node_ram.csv",
                                             "run-3-speed.csv"]
    rows = list(csv.reader(io.StringIO((tmp_path / "csv" / "run-3-loss.csv").read_text())))
    assert rows[0] == ["step", "rank 0 loss", "rank 1 loss", "rank 2 loss", "mean loss", "validation loss"]
    assert [row[0] for row in rows[1:]] == [str(step) for step in range(1, 41)]
    import json

    expected = {}
    for raw in lines:
        data = json.loads(raw.partition(">:")[2])
        if data["event"] == "step":
            expected[(data["step"], data["rank"])] = data["loss"]
            expected[(data["step"], "mean")] = data["loss_mean"]
    for row in rows[1:]:
        step = int(row[0])
        assert [float(v) for v in row[1:4]] == [expected[(step, r)] for r in range(3)]
        assert float(row[4]) == expected[(step, "mean")]
    assert rows[10][5] != "" and rows[9][5] == ""  # validation only at eval steps (every 10)
    memory = list(csv.reader(io.StringIO((tmp_path / "csv" / "run-3-memory.csv").read_text())))
    assert memory[0][1:3] == ["rank 0 mlx_active_bytes", "rank 0 mlx_peak_bytes"]
    assert all(cell.isdigit() for cell in memory[1][1:])  # bytes stay integers

    pngs = dashboard.export_pngs(tmp_path / "png")
    assert sorted(p.name for p in pngs) == ["run-3-loss.png", "run-3-memory.png", "run-3-node_ram.png",
                                            "run-3-speed.png"]
    for path in pngs:
        image = QImage(str(path))
        assert image.width() > 200 and image.height() > 100


def test_attaches_to_the_live_run_and_replays_its_history(qtbot, open_dashboard):
    run = SyntheticRun(ranks=3, steps=200, ranks_per_node=1, slow_rank=None)
    lines = synthetic_stream(run)
    api = FakeRunApi(lines_per_s=2000)
    api.add_finished("old", recorded_lines(RECORDED_3_RANKS), NODES_3)
    live = api.add_live("live", lines, run.rank_nodes(), produced=len(lines) // 2)
    dashboard = open_dashboard(api)
    qtbot.waitUntil(lambda: min(rank_points(dashboard).values() or [0]) >= 90, timeout=10_000)

    assert api.follow_calls == ["live"]
    assert dashboard.is_live
    assert dashboard.stop_action.isEnabled() and not dashboard.start_action.isEnabled()
    history = rank_points(dashboard)
    # The history arrived before anything live did.
    assert all(points < 200 for points in history.values())
    dashboard.bridge.worker.call_soon(lambda: api.drive("live"))
    wait_ended(qtbot, dashboard)
    assert rank_points(dashboard) == {0: 200, 1: 200, 2: 200}
    assert live.produced == len(lines)
    assert dashboard.status.state is RunState.FINISHED
    assert dashboard.start_action.isEnabled() and not dashboard.stop_action.isEnabled()


def test_closing_never_stops_training_and_reopening_reattaches(qtbot, open_dashboard):
    run = SyntheticRun(ranks=2, steps=100, ranks_per_node=1, slow_rank=None)
    lines = synthetic_stream(run)
    api = FakeRunApi()
    api.add_live("live", lines, run.rank_nodes(), produced=len(lines) // 3)
    first = open_dashboard(api)
    qtbot.waitUntil(lambda: first.is_live and min(rank_points(first).values() or [0]) > 0, timeout=10_000)
    before = rank_points(first)
    first.close()
    assert first.follow_job is None
    assert api.stopped_ids == []
    second = open_dashboard(api)
    qtbot.waitUntil(lambda: second.is_live and rank_points(second) == before, timeout=10_000)
    assert api.follow_calls == ["live", "live"]
    assert api.stopped_ids == []


def test_start_then_stop_with_confirmation(qtbot, open_dashboard, monkeypatch):
    run = SyntheticRun(ranks=3, steps=5000, ranks_per_node=1, slow_rank=None)
    api = FakeRunApi(start_lines=synthetic_stream(run), start_rank_nodes=run.rank_nodes(), lines_per_s=600)
    dashboard = open_dashboard(api)
    qtbot.waitUntil(lambda: dashboard.refresh_job is not None and not dashboard.refresh_job.running)
    assert dashboard.record is None and dashboard.start_action.isEnabled()
    assert not dashboard.stop_action.isEnabled()

    dashboard.start_action.trigger()
    assert not dashboard.start_action.isEnabled()  # no second start while the first is starting
    qtbot.waitUntil(lambda: dashboard.is_live and all(p > 0 for p in rank_points(dashboard).values())
                    and len(rank_points(dashboard)) == 3, timeout=10_000)
    assert len(api.started_requests) == 1 and api.started_requests[0].local is None
    assert dashboard.stop_action.isEnabled()

    asked = []
    monkeypatch.setattr(dashboard_module, "confirm", lambda parent, title, text: asked.append(text) or False)
    dashboard.stop_action.trigger()
    assert asked and "Stop run run-001 on node1, node2, node3?" in asked[0]
    assert api.stopped_ids == [] and dashboard.is_live

    monkeypatch.setattr(dashboard_module, "confirm", lambda parent, title, text: True)
    with qtbot.waitSignal(dashboard.run_ended, timeout=10_000) as ended:
        dashboard.stop_action.trigger()
    assert api.stopped_ids == ["run-001"]
    assert ended.args[0].state is RunState.STOPPED
    qtbot.waitUntil(lambda: dashboard.stop_job is None)
    dashboard._redraw(force=True)
    assert "Run run-001: stopped" in dashboard.run_line.text()
    assert dashboard.start_action.isEnabled() and not dashboard.stop_action.isEnabled()


def test_a_failed_start_is_shown_as_a_sentence(qtbot, open_dashboard, monkeypatch):
    shown = []
    monkeypatch.setattr(dashboard_module, "show_error", lambda parent, error, title="": shown.append((title, str(error))))
    api = FakeRunApi()
    api.start_error = LaunchFailed("node2 has no venv for this project yet; run `corral env`.")
    dashboard = open_dashboard(api)
    dashboard.start_action.trigger()
    qtbot.waitUntil(lambda: bool(shown), timeout=5_000)
    assert shown == [("Could not start training", "node2 has no venv for this project yet; run `corral env`.")]
    assert dashboard.start_action.isEnabled()


def test_choosing_another_run_replays_it(qtbot, open_dashboard):
    api = FakeRunApi()
    small = SyntheticRun(ranks=2, steps=30, ranks_per_node=1, slow_rank=None)
    api.add_finished("older", synthetic_stream(small), small.rank_nodes())
    api.add_finished("newer", recorded_lines(RECORDED_3_RANKS), NODES_3)
    dashboard = open_dashboard(api)
    wait_ended(qtbot, dashboard)
    assert dashboard.record.id == "newer"
    assert [dashboard.run_selector.itemData(i) for i in range(dashboard.run_selector.count())] == ["newer", "older"]
    assert dashboard.run_selector.itemText(1).startswith("older · finished · 2 nodes, 2 ranks")

    dashboard.run_selector.choose("older")
    wait_ended(qtbot, dashboard)
    assert dashboard.record.id == "older"
    assert rank_points(dashboard) == {0: 30, 1: 30}
    assert [row.node for row in dashboard.nodes_table.rows] == ["node1", "node2"]
    assert all(line.startswith(("[rank 0]", "[rank 1]", "[launcher]")) for line in dashboard.log_pane.shown_lines())


def test_demo_starts_a_local_run(qtbot, open_dashboard):
    run = SyntheticRun(ranks=2, steps=10, ranks_per_node=2, slow_rank=None)
    api = FakeRunApi(start_lines=synthetic_stream(run), start_rank_nodes=["local", "local"])
    dashboard = open_dashboard(api)
    dashboard.start_demo()
    wait_ended(qtbot, dashboard)
    assert api.started_requests[0].local is True
    assert rank_points(dashboard) == {0: 10, 1: 10}
    assert [row.node for row in dashboard.nodes_table.rows] == ["local"]
