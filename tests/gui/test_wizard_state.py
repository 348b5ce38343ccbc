"""The wizard's progress survives closing the app halfway: saved atomically after each page, never with passwords."""

from __future__ import annotations

import json

import pytest

from cluster.inventory import Inventory, Node
from cluster.state import save_cluster
from gui.setup_wizard import SetupWizard
from gui.setup_wizard.state import WizardNode, WizardState, load_state, save_state, state_path
from tests.gui.test_wizard_pages import to_page
from tests.gui.wizard_fakes import FakeCore, found_host, isolated_settings  # noqa: F401 - fixture


def new_wizard(qtbot, bridge, home) -> SetupWizard:
    core = FakeCore(home, found=[found_host(a) for a in ("10.0.0.11", "10.0.0.12", "10.0.0.13")])
    wizard = SetupWizard(bridge, home, core)
    qtbot.addWidget(wizard)
    wizard.resume()
    wizard.show()
    return wizard


def test_state_round_trips_and_unreadable_files_are_set_aside(home):
    state = WizardState(page="code", subnets="10.0.0.0/24", network="169.254.0.0/16", project="/p", keyed=["a"],
                        nodes=[WizardNode("a", "10.0.0.11", user="lab", found_by=("sweep",))], completed=["discover"])
    save_state(home, state)
    assert oct(state_path(home).stat().st_mode & 0o777) == "0o600"
    assert load_state(home) == state
    state_path(home).write_text("{not json")
    assert load_state(home) is None
    assert state_path(home).with_name("wizard.json.unreadable").exists()


def test_closing_halfway_resumes_at_the_same_page_with_back_history(qtbot, bridge, home):
    wizard = new_wizard(qtbot, bridge, home)
    to_page(qtbot, wizard, "environment")
    passwords = list(wizard.passwords.values())
    wizard.reject()  # "Finish later", or the window closed
    saved = json.loads(state_path(home).read_text())
    assert saved["page"] == "environment"
    assert saved["completed"] == ["discover", "network", "credentials", "keys", "code"]
    assert not any(password in state_path(home).read_text() for password in passwords)

    again = new_wizard(qtbot, bridge, home)
    assert again.page_key() == "environment"
    assert not any(again.passwords.values())  # typed again only if a step needs them
    again.back()
    assert again.page_key() == "code"
    assert again.currentPage().isComplete()  # shown as done earlier, not run again


def test_resuming_after_credentials_but_before_keys_asks_for_passwords_again(qtbot, bridge, home):
    wizard = new_wizard(qtbot, bridge, home)
    to_page(qtbot, wizard, "keys")
    keys = wizard.currentPage()
    qtbot.waitUntil(lambda: keys.job is None, timeout=5000)
    wizard.state.page = "code"  # as if closed on Code while a node still needed its key
    wizard.state.completed.remove("keys")
    wizard.reject()
    again = new_wizard(qtbot, bridge, home)
    assert again.page_key() == "credentials"


def test_an_existing_cluster_is_the_starting_point(qtbot, bridge, home):
    save_cluster(home, Inventory((Node("studio", "10.0.0.50", user="me"),), network="169.254.0.0/16"))
    wizard = new_wizard(qtbot, bridge, home)
    assert wizard.selected_names() == ["studio"]
    assert wizard.state.network == "169.254.0.0/16"
