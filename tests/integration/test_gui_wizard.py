"""The setup wizard, driven as a user would, against the real 3-node test cluster: Discover to Done, all green."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402 - Qt's platform must be chosen before Qt loads

import pytest  # noqa: E402

from cluster.home import CorralHome  # noqa: E402
from cluster.layout import RemoteLayout  # noqa: E402
from cluster.state import load_cluster  # noqa: E402
from gui.bridge import AsyncWorker, Bridge  # noqa: E402
from gui.setup_wizard import PAGES, SetupWizard  # noqa: E402
from gui.setup_wizard.state import state_path  # noqa: E402

pytestmark = pytest.mark.integration

# Shared with the doctor's and env's tests, so repeated runs reuse the downloaded wheels.
WHEEL_CACHE = Path(os.environ.get("CORRAL_TEST_WHEEL_CACHE", "/var/tmp/corral-test-wheel-cache"))


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


def test_wizard_from_discovery_to_a_checked_cluster(test_cluster, tmp_path, qtbot, bridge, monkeypatch):
    monkeypatch.setenv("CORRAL_WHEELHOUSE", str(WHEEL_CACHE))
    monkeypatch.setenv("CORRAL_SETTINGS_FILE", str(tmp_path / "settings.ini"))
    home = CorralHome(tmp_path / "home")
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('training')\n")
    wizard = SetupWizard(bridge, home)
    qtbot.addWidget(wizard)
    wizard.resume()
    wizard.show()
    addresses = {node.address: node for node in test_cluster.nodes}

    # Discover: the sweep of the cluster's subnet lists every node live; tick them.
    discover = wizard.currentPage()
    discover.cancel()
    qtbot.waitUntil(lambda: discover.job is None, timeout=10_000)
    discover.subnet_edit.setText(test_cluster.subnet)
    discover.search()
    qtbot.waitUntil(lambda: discover.job is None, timeout=20_000)
    found = {node.address: node for node in wizard.state.nodes}
    assert set(addresses) <= set(found), discover.status.text()
    assert all("sweep" in found[address].found_by and found[address].banner for address in addresses)
    assert not discover.isComplete()  # nothing ticked yet
    for address in addresses:
        discover.set_selected(found[address].name, True)
    go_next(qtbot, wizard, "discover", 5)
    # Named in address order: the same names the test cluster uses.
    assert sorted(wizard.selected_names()) == sorted(node.name for node in test_cluster.nodes)

    # Network: the nodes' own subnet.
    network = wizard.currentPage()
    assert network.automatic_network() == test_cluster.subnet
    go_next(qtbot, wizard, "network", 5)

    # Credentials: each node's user and password; the fingerprints shown are the nodes' real ones.
    credentials = wizard.currentPage()
    qtbot.waitUntil(lambda: credentials.job is None and len(credentials.keys) == 3, timeout=20_000)
    for node in test_cluster.nodes:
        assert credentials.keys[node.name].fingerprint == node.host_key_fingerprint
        credentials.user_edits[node.name].setText(node.user)
        credentials.password_edits[node.name].setText(node.password)
    assert not credentials.isComplete()  # new host keys must be trusted first
    for node in test_cluster.nodes:
        credentials.trust(node.name)
    go_next(qtbot, wizard, "credentials", 5)

    # Keys: installed with the passwords, node-to-node access; the nodes are saved as the cluster.
    go_next(qtbot, wizard, "keys", 60)
    inventory = load_cluster(home)
    assert [(n.name, n.address, n.user) for n in inventory.nodes] == [
        (n.name, n.address, n.user) for n in test_cluster.nodes]

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

    # Done: the inventory is the cluster; the wizard's progress is cleared.
    assert wizard.page_key() == "done"
    with qtbot.waitSignal(wizard.setup_finished, timeout=5000):
        wizard.accept()
    assert not state_path(home).exists()

    inventory = load_cluster(home)
    assert inventory.project == str(project)
    public_key = home.public_key_path.read_text().strip()
    layout = RemoteLayout.for_project(project)
    for node in test_cluster.nodes:
        assert public_key in (node.home_on_host / ".ssh" / "authorized_keys").read_text()
        assert (node.home_on_host / layout.code_dir / "train.py").is_file()
        assert (node.home_on_host / layout.venv_python).exists()
    # Passwords never reached a file of corral's.
    for path in home.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(node.password.encode() in data for node in test_cluster.nodes), path
