"""Each wizard page against a fake core: live discovery, validation, host keys, per-node progress, cancel, retry, drop."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtWidgets import QWizard

from cluster.state import load_cluster
from gui import messages
from gui.setup_wizard import SetupWizard
from gui.setup_wizard.core import HostKeyStatus, StepState
from gui.setup_wizard.questions import HostKeyQuestions
from tests.gui.wizard_fakes import FakeCore, auth_failed, found_host, isolated_settings  # noqa: F401 - fixture

ADDRESSES = ["10.0.0.13", "10.0.0.11", "10.0.0.12"]  # found out of order, as a sweep does


@pytest.fixture
def core(home) -> FakeCore:
    return FakeCore(home, found=[found_host(a) for a in ADDRESSES] + [found_host("10.0.0.20", "studio.local", "mdns")])


@pytest.fixture
def asked():
    return []


@pytest.fixture
def make_wizard(qtbot, bridge, home, core, asked):
    def make() -> SetupWizard:
        questions = HostKeyQuestions(ask=lambda parent, node, fp: asked.append((node.name, fp)) or True)
        wizard = SetupWizard(bridge, home, core, questions=questions)
        qtbot.addWidget(wizard)
        wizard.resume()
        wizard.show()
        return wizard

    return make


def discover(qtbot, wizard: SetupWizard, addresses=ADDRESSES):  # noqa: ANN001, ANN201
    page = wizard.currentPage()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    by_address = {n.address: n.name for n in wizard.state.nodes}
    for address in addresses:
        page.set_selected(by_address[address], True)
    return page


def to_page(qtbot, wizard: SetupWizard, key: str) -> None:
    """Walk the happy path up to page ``key``."""
    discover(qtbot, wizard)
    order = ["discover", "network", "credentials", "keys", "code", "environment", "check"]
    for step in order[: order.index(key)]:
        page = wizard.currentPage()
        if step == "credentials":
            qtbot.waitUntil(lambda: page.job is None and len(page.keys) == 3, timeout=5000)
            for name in wizard.selected_names():
                page.password_edits[name].setText(f"pw-{name}")
            page.trust_all_new()
        elif step == "code":
            page.set_folder(str(wizard.home.root.parent))
            page.copy_button.click()
        elif step == "environment":
            page.build_button.click()
        qtbot.waitUntil(page.isComplete, timeout=5000)
        wizard.next()
    assert wizard.page_key() == key


def test_discovery_fills_the_list_live_and_names_ticked_nodes_in_address_order(qtbot, make_wizard, core):
    wizard = make_wizard()
    page = discover(qtbot, wizard)
    assert core.calls[0] == ("discover", ("192.168.1.0/24",))
    rows = {page.table.item(r, 2).text(): r for r in range(page.table.rowCount())}
    assert set(rows) == {*ADDRESSES, "10.0.0.20"}
    assert page.table.item(rows["10.0.0.11"], 4).text() == "Debian (OpenSSH 9.2p1)"
    assert page.table.item(rows["10.0.0.20"], 3).text() == "studio.local"
    assert page.table.item(rows["10.0.0.20"], 5).text() == "mDNS"
    assert "Found 4 SSH server(s)" in page.status.text()
    wizard.next()
    names = {n.address: n.name for n in wizard.state.selected_nodes()}
    assert names == {"10.0.0.11": "node1", "10.0.0.12": "node2", "10.0.0.13": "node3"}


def test_nothing_ticked_means_no_next(qtbot, make_wizard):
    wizard = make_wizard()
    page = wizard.currentPage()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    assert not page.isComplete()
    assert not wizard.button(QWizard.WizardButton.NextButton).isEnabled()


@pytest.mark.parametrize(("address", "user", "name", "expected"), [
    ("", "", "", "Address: is empty"),
    ("lab@10.0.0.5", "", "", "includes a user"),
    ("10.0.0.5:2222", "", "", "includes a port"),
    ("10.0.0.5", "-root", "", "User: '-root' is not a login name"),
    ("10.0.0.5", "", "my node", "Name: 'my node' is not a usable node name"),
    ("10.0.0.11", "", "", "already in the list"),
])
def test_manual_add_refuses_bad_input_with_a_sentence(qtbot, make_wizard, address, user, name, expected):
    wizard = make_wizard()
    page = discover(qtbot, wizard, [])
    page.address_edit.setText(address)
    page.user_edit.setText(user)
    page.name_edit.setText(name)
    page.add_button.click()
    assert expected in page.add_error.text()
    assert not page.isComplete()


def test_manual_add_appends_a_ticked_node(qtbot, make_wizard):
    wizard = make_wizard()
    page = discover(qtbot, wizard, [])
    page.address_edit.setText("mini.local")
    page.user_edit.setText("alice")
    page.port_spin.setValue(2222)
    page.add_button.click()
    assert page.add_error.isHidden()
    node = wizard.state.node("mini")
    assert (node.address, node.port, node.user, node.selected) == ("mini.local", 2222, "alice", True)
    assert page.isComplete()


def test_network_page_validates_a_typed_cidr(qtbot, make_wizard):
    wizard = make_wizard()
    to_page(qtbot, wizard, "network")
    page = wizard.currentPage()
    assert page.automatic_network() == "10.0.0.0/24"
    rows = {page.table.item(r, 0).text(): page.table.item(r, 2).text() for r in range(page.table.rowCount())}
    assert rows["node1"] == "10.0.0.11"
    page.select("169.254.0.0/16")
    assert page.isComplete()
    assert "the Check step" in page.table.item(0, 2).text()  # not its address there, from this computer's view
    page.select("10.0.0.1/24")
    assert not page.isComplete()
    assert "has host bits set; did you mean '10.0.0.0/24'" in page.problem.text()
    page.select(None)
    wizard.next()
    assert wizard.state.network is None


def test_a_changed_host_key_is_refused_with_the_sentence_and_can_be_left_out(qtbot, make_wizard, core):
    core.host_key_status["node2"] = HostKeyStatus.CHANGED
    core.host_key_status["node3"] = HostKeyStatus.TRUSTED
    wizard = make_wizard()
    to_page(qtbot, wizard, "credentials")
    page = wizard.currentPage()
    qtbot.waitUntil(lambda: page.job is None and len(page.keys) == 3, timeout=5000)
    assert "node2" not in page.trust_boxes  # nothing to tick: it cannot be accepted here
    assert "node2 (" in page.problems.text() and "someone is impersonating it" in page.problems.text()
    page.trust_all_new()
    assert not page.isComplete()
    page.leave_out("node2")
    assert wizard.selected_names() == ["node1", "node3"]
    assert page.isComplete()


def test_keys_use_the_typed_passwords_and_save_nodes_as_they_succeed(qtbot, make_wizard, core, home):
    core.key_failures["node2"] = [auth_failed("node2")]
    wizard = make_wizard()
    to_page(qtbot, wizard, "keys")
    page = wizard.currentPage()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    assert core.passwords_seen == {"node1": "pw-node1", "node2": "pw-node2", "node3": "pw-node3"}
    assert page.progress.state_of("node1") is StepState.OK
    assert page.progress.state_of("node2") is StepState.FAILED
    assert "rejected the password" in page.progress.outcome_of("node2")
    assert not page.isComplete()
    assert load_cluster(home).names() == ["node1", "node3"]  # saved as soon as they succeeded

    page.progress.row("node2").retry_button.click()
    qtbot.waitUntil(lambda: page.job is None and page.isComplete(), timeout=5000)
    assert core.calls[-1] == ("keys", ("node2",))
    assert load_cluster(home).names() == ["node1", "node2", "node3"]


def test_an_unknown_fingerprint_is_asked_in_the_window(qtbot, make_wizard, asked):
    wizard = make_wizard()
    to_page(qtbot, wizard, "credentials")
    page = wizard.currentPage()
    qtbot.waitUntil(lambda: page.job is None and len(page.keys) == 3, timeout=5000)
    page.trust_all_new()
    wizard.next()
    keys = wizard.currentPage()
    qtbot.waitUntil(lambda: keys.job is None, timeout=5000)
    assert asked == []  # the fingerprints trusted on the Credentials page are not asked again
    wizard.trusted_fingerprints["node3"] = "SHA256:something-else"  # the key changed since it was shown
    keys.run_for(["node3"])
    qtbot.waitUntil(lambda: keys.job is None, timeout=5000)
    assert asked == [("node3", "SHA256:fp-node3")]
    assert keys.progress.state_of("node3") is StepState.OK


def test_cancel_stops_a_step_and_retry_runs_it_again(qtbot, make_wizard, core):
    wizard = make_wizard()
    to_page(qtbot, wizard, "code")
    page = wizard.currentPage()
    core.hold = threading.Event()
    page.set_folder(str(wizard.home.root.parent))
    page.copy_button.click()
    qtbot.waitUntil(lambda: page.progress.row("node1").bar.format().startswith("transferring"), timeout=5000)
    assert page.progress.cancel_button.isEnabled()
    assert wizard.isEnabled()  # the window stays usable while the step runs
    page.progress.cancel_button.click()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    assert page.progress.failed_nodes() == ["node1", "node2", "node3"]
    assert "cancelled" in page.progress.outcome_of("node1")
    core.hold.set()
    page.progress.retry_button.click()
    qtbot.waitUntil(page.isComplete, timeout=5000)


def test_a_failed_node_can_be_dropped_and_brought_back(qtbot, make_wizard, core, home):
    core.sync_failures["node2"] = ["node2 (lab2@10.0.0.12:22): the node's disk is full; free space there."]
    wizard = make_wizard()
    to_page(qtbot, wizard, "code")
    page = wizard.currentPage()
    page.set_folder(str(wizard.home.root.parent))
    page.copy_button.click()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    assert "disk is full" in page.progress.outcome_of("node2")
    page.progress.row("node2").drop_button.click()
    assert page.isComplete()
    assert wizard.selected_names() == ["node1", "node3"]
    assert load_cluster(home).names() == ["node1", "node3"]
    assert "node2 was dropped" in page.progress.undo_label.text()
    page.progress.undo_button.click()
    assert load_cluster(home).names() == ["node1", "node2", "node3"]
    assert page.progress.names() == ["node1", "node2", "node3"]
    assert not page.isComplete()


def test_check_page_fills_the_doctor_table_and_explains_failures(qtbot, make_wizard, core):
    core.doctor_failures["node3"] = "node3: the venv is missing; run the Environment step again."
    wizard = make_wizard()
    to_page(qtbot, wizard, "check")
    page = wizard.currentPage()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    venv_row = page._rows["venv"]
    assert page.table.item(venv_row, 0).text() == "✓"
    assert page.table.item(venv_row, 2).text() == "✗"
    assert "run the Environment step again" in page.table.item(venv_row, 2).toolTip()
    assert page.progress.state_of("node3") is StepState.FAILED
    assert "the venv is missing" in page.progress.outcome_of("node3")
    assert not page.isComplete()
    core.doctor_failures.clear()
    page.rerun_button.click()
    qtbot.waitUntil(page.isComplete, timeout=5000)
    wizard.next()
    assert wizard.page_key() == "done"
    assert "3 node(s), 3 rank(s)" in wizard.currentPage().summary.text()


def test_an_unexpected_error_opens_the_crash_dialog_and_saves_the_traceback(qtbot, make_wizard, core, tmp_path,
                                                                             monkeypatch):
    shown = []
    monkeypatch.setattr(messages, "crash_dialog", lambda parent, summary, details: shown.append((summary, details)))
    monkeypatch.setattr(messages, "_crash_dir", tmp_path / "crashes")
    core.crash_on = "env"
    wizard = make_wizard()
    to_page(qtbot, wizard, "environment")
    page = wizard.currentPage()
    page.build_button.click()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    assert shown and "RuntimeError: a bug in env" in shown[0][0] and "Traceback" in shown[0][1]
    assert list((tmp_path / "crashes").glob("crash-*.txt"))
    assert page.progress.state_of("node1") is StepState.FAILED
