"""The app's full path on the 3-node test cluster: welcome → wizard → dashboard → Start → live charts → Stop.

One test drives the main window as a user would: the wizard from discovery to a checked cluster (all green),
the dashboard it lands on, Start, every rank's loss curve getting points, Stop, and no process of the run left
on any node.

Set ``CORRAL_DASHBOARD_SCREENSHOTS=DIR`` (and run under Xvfb with ``QT_QPA_PLATFORM=xcb``) to save screenshots
of the live run there, after ``CORRAL_DASHBOARD_SCREENSHOT_STEPS`` steps (default 12).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time  # noqa: E402 - Qt's platform must be chosen before Qt loads
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import gui.dashboard.widget as dashboard_module  # noqa: E402
from cluster.home import CorralHome  # noqa: E402
from cluster.layout import RemoteLayout  # noqa: E402
from cluster.run_status import RunState  # noqa: E402
from cluster.state import load_cluster  # noqa: E402
from gui.bridge import AsyncWorker, Bridge  # noqa: E402
from gui.dashboard import Dashboard  # noqa: E402
from gui.main_window import DASHBOARD, WELCOME, WIZARD, MainWindow  # noqa: E402
from gui.setup_wizard import PAGES, SetupWizard  # noqa: E402
from gui.setup_wizard.state import state_path  # noqa: E402
from tests.integration.train_helpers import WHEEL_CACHE, leftover_processes  # noqa: E402

pytestmark = pytest.mark.integration

SCREENSHOTS = os.environ.get("CORRAL_DASHBOARD_SCREENSHOTS")
SCREENSHOT_STEPS = int(os.environ.get("CORRAL_DASHBOARD_SCREENSHOT_STEPS", "12"))


@pytest.fixture
def bridge(qtbot):
    worker = AsyncWorker()
    yield Bridge(worker)
    worker.stop()


def go_next(qtbot, wizard: SetupWizard, page: str, timeout_s: float) -> None:
    """Wait until the page may be left (its work finished, all green), then press Next."""
    current = wizard.currentPage()
    assert wizard.page_key() == page
    qtbot.waitUntil(current.isComplete, timeout=int(timeout_s * 1000))
    wizard.next()
    assert wizard.page_key() == PAGES[PAGES.index(page) + 1]


def set_up_with_the_wizard(qtbot, wizard: SetupWizard, cluster, project: Path) -> None:
    """Discover → Network → Credentials → Keys → Code → Environment → Check → Done, as a user clicks through."""
    addresses = {node.address for node in cluster.nodes}

    # Discover: the sweep of the cluster's subnet lists every node live; tick them.
    discover = wizard.currentPage()
    discover.cancel()
    qtbot.waitUntil(lambda: discover.job is None, timeout=10_000)
    discover.subnet_edit.setText(cluster.subnet)
    discover.search()
    qtbot.waitUntil(lambda: discover.job is None, timeout=20_000)
    found = {node.address: node for node in wizard.state.nodes}
    assert addresses <= set(found), discover.status.text()
    assert all("sweep" in found[address].found_by and found[address].banner for address in addresses)
    assert not discover.isComplete()  # nothing ticked yet
    for address in addresses:
        discover.set_selected(found[address].name, True)
    go_next(qtbot, wizard, "discover", 5)
    # Named in address order: the same names the test cluster uses.
    assert sorted(wizard.selected_names()) == sorted(node.name for node in cluster.nodes)

    # Network: the nodes' own subnet.
    assert wizard.currentPage().automatic_network() == cluster.subnet
    go_next(qtbot, wizard, "network", 5)

    # Credentials: each node's user and password; the fingerprints shown are the nodes' real ones.
    credentials = wizard.currentPage()
    qtbot.waitUntil(lambda: credentials.job is None and len(credentials.keys) == 3, timeout=20_000)
    for node in cluster.nodes:
        assert credentials.keys[node.name].fingerprint == node.host_key_fingerprint
        credentials.user_edits[node.name].setText(node.user)
        credentials.password_edits[node.name].setText(node.password)
    assert not credentials.isComplete()  # new host keys must be trusted first
    for node in cluster.nodes:
        credentials.trust(node.name)
    go_next(qtbot, wizard, "credentials", 5)

    # Keys: installed with the passwords, node-to-node access; the nodes are saved as the cluster.
    go_next(qtbot, wizard, "keys", 60)
    inventory = load_cluster(wizard.home)
    assert [(n.name, n.address, n.user) for n in inventory.nodes] == [
        (n.name, n.address, n.user) for n in cluster.nodes]

    # Code: the project folder, copied to every node.
    code = wizard.currentPage()
    code.set_folder(str(project))
    code.copy_button.click()
    go_next(qtbot, wizard, "code", 60)

    # Environment: wheels pushed from here (the nodes have no internet).
    environment = wizard.currentPage()
    environment.set_wheels("push")
    environment.build_button.click()
    go_next(qtbot, wizard, "environment", 900)

    # Check: the doctor's table, every cell green, down to mpirun across the nodes.
    check = wizard.currentPage()
    go_next(qtbot, wizard, "check", 300)
    assert check.report is not None and check.report.ok, [r.fix for r in check.report.failures()]
    assert wizard.page_key() == "done"


def processes_after(cluster, timeout_s: float) -> dict[str, list[str]]:
    """The node users' processes on each node once none are left, or what is still there after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    left = leftover_processes(cluster)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = leftover_processes(cluster)
    return left


def loss_points(dashboard: Dashboard) -> list[int]:
    return [len(dashboard.series.ranks[rank]["loss"]) for rank in sorted(dashboard.series.ranks)]


def test_wizard_then_start_every_rank_charts_then_stop_leaves_nothing(test_cluster, tmp_path, qtbot, bridge,
                                                                     monkeypatch):
    cluster = test_cluster
    monkeypatch.setenv("CORRAL_WHEELHOUSE", str(WHEEL_CACHE))
    monkeypatch.setenv("CORRAL_SETTINGS_FILE", str(tmp_path / "settings.ini"))
    home = CorralHome(tmp_path / "home")
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('training')\n")

    # No cluster yet: the welcome page; "Set up a cluster" opens the wizard.
    main = MainWindow(bridge, home)
    qtbot.addWidget(main)
    main.resize(1440, 960)
    main.show()
    assert main.current_view() == WELCOME
    main.welcome.setup_button.click()
    assert main.current_view() == WIZARD
    wizard = main.wizard
    set_up_with_the_wizard(qtbot, wizard, cluster, project)

    # Done: the inventory is the cluster, the wizard's progress is cleared, the window shows the dashboard.
    with qtbot.waitSignal(wizard.setup_finished, timeout=5000):
        wizard.accept()
    assert not state_path(home).exists()
    assert main.current_view() == DASHBOARD
    inventory = load_cluster(home)
    assert inventory.project == str(project)
    public_key = home.public_key_path.read_text().strip()
    layout = RemoteLayout.for_project(project)
    for node in cluster.nodes:
        assert public_key in (node.home_on_host / ".ssh" / "authorized_keys").read_text()
        assert (node.home_on_host / layout.code_dir / "train.py").is_file()
        assert (node.home_on_host / layout.venv_python).exists()
    # Passwords never reached a file of corral's.
    for path in home.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(node.password.encode() in data for node in cluster.nodes), path

    dashboard = main.dashboard
    assert dashboard is not None
    qtbot.waitUntil(lambda: dashboard.inventory_nodes == ["node1", "node2", "node3"], timeout=10_000)
    assert [row.state for row in dashboard.nodes_table.rows] == ["idle", "idle", "idle"]
    assert dashboard.start_action.isEnabled() and not dashboard.stop_action.isEnabled()
    # The doctor's mpirun watchdog notices within a second that mpirun is gone; then the nodes are quiet.
    assert processes_after(cluster, 10) == {}

    # Start: sync of corral's trainer, the venv check, mpirun over three nodes, MLX start-up and the first steps.
    dashboard.start_action.trigger()
    qtbot.waitUntil(lambda: len(loss_points(dashboard)) == 3 and min(loss_points(dashboard)) > 0, timeout=300_000)
    assert dashboard.is_live and dashboard.stop_action.isEnabled() and not dashboard.start_action.isEnabled()
    assert dashboard.record is not None and dashboard.record.nodes == ("node1", "node2", "node3")
    dashboard._redraw(force=True)
    # Every rank's curve on the loss chart holds the rank's points, and the chart drew them.
    for rank in range(3):
        assert dashboard.charts.loss.points(f"rank:{rank}") > 0
        xs, _ys = dashboard.charts.loss.curves[f"rank:{rank}"].item.getData()
        assert xs is not None and len(xs) > 0
    assert [row.state for row in dashboard.nodes_table.rows] == ["training"] * 3
    hosts = {rank: dashboard.series.hosts.get(rank) for rank in range(3)}
    assert hosts == {i: node.hostname for i, node in enumerate(cluster.nodes)}
    assert all(" of " in row.ram for row in dashboard.nodes_table.rows)

    if SCREENSHOTS:
        save_screenshots(qtbot, dashboard, Path(SCREENSHOTS))

    running = leftover_processes(cluster)
    assert sorted(running) == ["node1", "node2", "node3"], running  # the check sees the ranks on every node
    assert all(any("corral-run=" in row for row in rows) for rows in running.values()), running

    # Stop (confirmed): the run ends as stopped and nothing of it is left on any node.
    monkeypatch.setattr(dashboard_module, "confirm", lambda parent, title, text: True)
    with qtbot.waitSignal(dashboard.run_ended, timeout=120_000) as ended:
        dashboard.stop_action.trigger()
    assert ended.args[0].state is RunState.STOPPED
    qtbot.waitUntil(lambda: dashboard.stop_job is None, timeout=30_000)
    assert "stopped on every node" in dashboard.run_line.text()
    assert dashboard.start_action.isEnabled() and not dashboard.stop_action.isEnabled()
    assert processes_after(cluster, 15) == {}


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
