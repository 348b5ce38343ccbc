"""The setup wizard: from bare machines to a checked cluster, resumable, every long step per node and cancellable."""

from __future__ import annotations

import logging
from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QWidget, QWizard

from cluster.errors import ClusterError
from cluster.home import CorralHome
from cluster.inventory import Inventory, Node, local_user
from cluster.state import load_cluster, save_cluster
from gui.bridge import Bridge
from gui.messages import show_error
from gui.setup_wizard.core import WizardCore
from gui.setup_wizard.questions import HostKeyQuestions
from gui.setup_wizard.state import PAGES, WizardNode, WizardState, clear_state, load_state, save_state

log = logging.getLogger(__name__)


def initial_state(home: CorralHome) -> WizardState:
    """Fresh progress; an existing cluster's nodes, network and project are the starting point."""
    try:
        inventory = load_cluster(home)
    except ClusterError:
        inventory = Inventory()
    nodes = [WizardNode(name=n.name, address=n.address, port=n.port, user=n.user, slots=n.slots,
                        found_by=("inventory",), auto_named=False) for n in inventory.nodes]
    return WizardState(nodes=nodes, network=inventory.network, project=inventory.project or "")


class SetupWizard(QWizard):
    """Pages share this object: the state, the core, the bridge, and the passwords (in memory only)."""

    setup_finished = Signal()  # Done: the cluster is saved and checked
    setup_closed = Signal()  # closed halfway: everything so far is saved, the wizard resumes next time

    def __init__(self, bridge: Bridge, home: CorralHome, core: WizardCore | None = None,
                 parent: QWidget | None = None, *, questions: HostKeyQuestions | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.home = home
        self.core = core or WizardCore(home)
        self.questions = questions or HostKeyQuestions(self)
        saved = load_state(home)
        self.state = saved if saved is not None and not saved.finished else initial_state(home)
        # Never written anywhere: typed on the Credentials page, used by the Keys page.
        self.passwords: dict[str, str] = {}
        self.shared_password = ""
        self.trusted_fingerprints: dict[str, str] = {}
        self._dropped: dict[str, bool] = {}  # name → was it keyed, for Undo
        self.resuming = False

        self.setWindowTitle("Set up a cluster")
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setOption(QWizard.WizardOption.HaveHelpButton, False)
        self.setButtonText(QWizard.WizardButton.CancelButton, "Finish later")
        self.setButtonText(QWizard.WizardButton.FinishButton, "Open the dashboard")
        from gui.setup_wizard.pages import make_pages

        for index, page in enumerate(make_pages(self)):
            self.setPage(index, page)
        self.currentIdChanged.connect(self._on_page_changed)

    # --- pages and resuming ---

    def page_key(self, page_id: int | None = None) -> str:
        page_id = self.currentId() if page_id is None else page_id
        return PAGES[page_id] if 0 <= page_id < len(PAGES) else PAGES[0]

    def resume(self) -> None:
        """Start, then walk forward to the saved page so Back still leads to the earlier ones."""
        target = PAGES.index(self.state.page)
        if target > PAGES.index("keys") and "keys" not in self.state.completed:
            target = PAGES.index("credentials")  # passwords are not saved: type them again before Keys
        self.resuming = True
        try:
            self.restart()
            while self.currentId() < target:
                before = self.currentId()
                self.next()
                if self.currentId() == before:  # a page refused (its choices are no longer valid)
                    break
        finally:
            self.resuming = False
        page = self.currentPage()
        if page is not None:
            page.initializePage()  # now without resuming: it may start its work

    def _on_page_changed(self, page_id: int) -> None:
        if page_id < 0:
            return
        self.state.page = self.page_key(page_id)
        self.save()

    def save(self) -> None:
        try:
            save_state(self.home, self.state)
        except OSError as exc:
            log.warning("could not save the wizard's progress in %s: %s", self.home.root, exc)

    # --- nodes ---

    def selected_names(self) -> list[str]:
        return [node.name for node in self.state.selected_nodes()]

    def default_user(self) -> str:
        return self.state.shared_user or local_user()

    def node(self, name: str) -> Node:
        return self.state.node(name).as_node(self.default_user())

    def selected_nodes(self) -> list[Node]:
        return [node.as_node(self.default_user()) for node in self.state.selected_nodes()]

    def password_for(self, name: str) -> str | None:
        password = self.shared_password if self.state.shared_credentials else self.passwords.get(name, "")
        return password or None

    def write_inventory(self) -> Inventory:
        """Save the keyed, selected nodes and the network as the cluster (keeping the synced project)."""
        current = load_cluster(self.home)
        nodes = tuple(node for node in self.selected_nodes() if node.name in self.state.keyed)
        inventory = replace(current, nodes=nodes, network=self.state.network)
        if inventory != current:
            save_cluster(self.home, inventory)
        return inventory

    def drop_node(self, name: str) -> None:
        self._dropped[name] = name in self.state.keyed
        self.state.replace_node(name, selected=False)
        self._save_nodes()

    def undo_drop(self, name: str) -> None:
        self.state.replace_node(name, selected=True)
        self._dropped.pop(name, None)
        self._save_nodes()

    def _save_nodes(self) -> None:
        self.save()
        if self.state.keyed:
            try:
                self.write_inventory()
            except ClusterError as exc:
                show_error(self, exc)

    # --- closing ---

    def cancel_work(self) -> None:
        for page_id in self.pageIds():
            page = self.page(page_id)
            cancel = getattr(page, "cancel", None)
            if cancel is not None:
                cancel()

    def done(self, result: int) -> None:  # noqa: D401 - QDialog's name
        self.cancel_work()
        if result == QWizard.DialogCode.Accepted:
            self.state.finished = True
            clear_state(self.home)
            super().done(result)
            self.setup_finished.emit()
        else:
            self.save()
            super().done(result)
            self.setup_closed.emit()

    def keyPressEvent(self, event) -> None:  # noqa: ANN001, N802 - Qt's signature
        # Embedded in the main window, Escape must not close the wizard by accident.
        if event.key() == Qt.Key.Key_Escape:
            event.ignore()
            return
        super().keyPressEvent(event)
