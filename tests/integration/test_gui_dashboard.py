"""The dashboard against the real 3-node test cluster: Start → every rank's curve has points → Stop → nothing left.

Set ``CORRAL_DASHBOARD_SCREENSHOTS=DIR`` (and run under Xvfb with ``QT_QPA_PLATFORM=xcb``) to save screenshots
of the live run there, after ``CORRAL_DASHBOARD_SCREENSHOT_STEPS`` steps (default 12).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import contextlib  # noqa: E402 - Qt's platform must be chosen before Qt loads
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import gui.dashboard.widget as dashboard_module  # noqa: E402
from cluster.home import CorralHome  # noqa: E402
from cluster.run_status import RunState  # noqa: E402
from gui.bridge import AsyncWorker, Bridge  # noqa: E402
from gui.dashboard import Dashboard  # noqa: E402
from tests.integration.train_helpers import prepare_cluster  # noqa: E402

pytestmark = pytest.mark.integration

SCREENSHOTS = os.environ.get("CORRAL_DASHBOARD_SCREENSHOTS")
SCREENSHOT_STEPS = int(os.environ.get("CORRAL_DASHBOARD_SCREENSHOT_STEPS", "12"))


@pytest.fixture(scope="module")
def prepared(test_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("dashboard")
    prepare_cluster(test_cluster, base / "home", base / "project")
    return test_cluster, CorralHome(base / "home")


@pytest.fixture
def bridge(qtbot):
    worker = AsyncWorker()
    yield Bridge(worker)
    worker.stop()


def node_processes(cluster) -> list[str]:
    """Processes of the nodes' users, seen from the root namespace by numeric uid (corral's sshd sessions aside).

    Other test runs may have clusters up with the same uids: only processes in this cluster's network
    namespaces count.
    """
    wanted = set()
    for node in cluster.nodes:
        with contextlib.suppress(OSError):
            st = os.stat(f"/run/netns/{node.netns}")
            wanted.add((st.st_dev, st.st_ino))
    listing = subprocess.run(["ps", "-eo", "uid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    uids = {str(uid) for uid in cluster.node_uids}
    rows = []
    for row in listing.splitlines():
        fields = row.split(None, 2)
        if len(fields) < 3 or fields[0] not in uids or fields[2].startswith("sshd"):
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/proc/{fields[1]}/ns/net")
            if (st.st_dev, st.st_ino) in wanted:
                rows.append(row.strip())
    return rows


def loss_points(dashboard: Dashboard) -> list[int]:
    return [len(dashboard.series.ranks[rank]["loss"]) for rank in sorted(dashboard.series.ranks)]


def test_start_every_rank_charts_then_stop_leaves_nothing(qtbot, prepared, bridge, monkeypatch):
    cluster, home = prepared
    dashboard = Dashboard(bridge, home)
    dashboard.resize(1440, 960)
    qtbot.addWidget(dashboard)
    dashboard.show()
    qtbot.waitUntil(lambda: dashboard.inventory_nodes == ["node1", "node2", "node3"], timeout=10_000)
    assert [row.state for row in dashboard.nodes_table.rows] == ["idle", "idle", "idle"]
    assert dashboard.start_action.isEnabled() and not dashboard.stop_action.isEnabled()

    dashboard.start_action.trigger()
    # Sync of corral's trainer, the venv check, mpirun over three nodes, MLX start-up and the first steps.
    qtbot.waitUntil(lambda: len(loss_points(dashboard)) == 3 and min(loss_points(dashboard)) > 0, timeout=300_000)
    assert dashboard.is_live and dashboard.stop_action.isEnabled() and not dashboard.start_action.isEnabled()
    assert dashboard.record is not None and dashboard.record.nodes == ("node1", "node2", "node3")
    dashboard._redraw(force=True)
    assert [row.state for row in dashboard.nodes_table.rows] == ["training"] * 3
    hosts = {rank: dashboard.series.hosts.get(rank) for rank in range(3)}
    assert hosts == {i: node.hostname for i, node in enumerate(cluster.nodes)}
    assert all(" of " in row.ram for row in dashboard.nodes_table.rows)

    if SCREENSHOTS:
        save_screenshots(qtbot, dashboard, Path(SCREENSHOTS))

    running = node_processes(cluster)
    assert any("corral-run=" in row for row in running), running  # the check sees this cluster's ranks
    monkeypatch.setattr(dashboard_module, "confirm", lambda parent, title, text: True)
    with qtbot.waitSignal(dashboard.run_ended, timeout=120_000) as ended:
        dashboard.stop_action.trigger()
    assert ended.args[0].state is RunState.STOPPED
    qtbot.waitUntil(lambda: dashboard.stop_job is None, timeout=30_000)
    assert "stopped on every node" in dashboard.run_line.text()
    assert dashboard.start_action.isEnabled() and not dashboard.stop_action.isEnabled()

    deadline = time.monotonic() + 15
    while node_processes(cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node_processes(cluster) == []


def save_screenshots(qtbot, dashboard: Dashboard, folder: Path) -> None:
    """The live run as users see it: charts, the per-node view, and the log filtered to one rank."""
    qtbot.waitUntil(lambda: min(loss_points(dashboard)) >= SCREENSHOT_STEPS, timeout=600_000)
    folder.mkdir(parents=True, exist_ok=True)
    qtbot.wait(400)
    dashboard.grab().save(str(folder / "dashboard.png"))
    dashboard.tabs.setCurrentWidget(dashboard.node_panels)
    qtbot.wait(400)
    dashboard.grab().save(str(folder / "dashboard-nodes.png"))
    dashboard.tabs.setCurrentWidget(dashboard.charts)
    dashboard.charts.speed_choice.setCurrentIndex(dashboard.charts.speed_choice.findData("tokens_per_s"))
    dashboard.log_pane.choose(1)
    qtbot.wait(400)
    dashboard.grab().save(str(folder / "dashboard-tokens-log.png"))
    dashboard.log_pane.choose("all")
    dashboard.charts.speed_choice.setCurrentIndex(0)
