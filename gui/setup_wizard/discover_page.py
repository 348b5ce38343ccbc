"""Discover: a live list of SSH hosts from mDNS and the sweep, a subnet field, and adding a machine by hand."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWizardPage,
)

from cluster.errors import ClusterError
from cluster.inventory import DEFAULT_SSH_PORT, Inventory, Node, default_node_name
from cluster.inventory_file import address_problem, name_problem, user_problem
from gui.bridge import Job
from gui.messages import report_crash
from gui.setup_wizard.state import WizardNode
from gui.theme import status_color

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard

SEARCH_TIMEOUT_S = 3.0
COLUMNS = ("Use", "Name", "Address", "Host name", "System", "Found by")


def _sort_key(node: WizardNode) -> tuple[int, int, str, int]:
    try:
        ip = ipaddress.ip_address(node.address)
        return (0, ip.version, f"{int(ip):040d}", node.port)
    except ValueError:
        return (1, 0, node.address.lower(), node.port)


def renamed_in_order(nodes: list[WizardNode], fixed: set[str]) -> list[WizardNode]:
    """Give corral-named nodes ``nodeN`` (or their host name) in address order; ``fixed`` names stay."""
    taken = Inventory(tuple(Node(n.name, n.address) for n in nodes if not n.auto_named or n.name in fixed))
    renamed = []
    # Ticked machines first, so the cluster's nodes are node1, node2, … in address order.
    for node in sorted(nodes, key=lambda n: (not n.selected, _sort_key(n))):
        if node.auto_named and node.name not in fixed:
            name = default_node_name(node.hostname or node.address, taken)
            node = WizardNode(**{**node.__dict__, "name": name})
            taken = Inventory((*taken.nodes, Node(name, node.address)))
        renamed.append(node)
    return renamed


class DiscoverPage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self.ctx = wizard
        self.job: Job | None = None
        self.setTitle("Find your machines")
        self.setSubTitle("corral looks for SSH servers on your network (mDNS and a port-22 sweep). Tick the machines "
                         "that should train together; add any it cannot see by hand.")

        self.subnet_edit = QLineEdit()
        self.subnet_edit.setPlaceholderText("e.g. 192.168.1.0/24 (several: separate with commas)")
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        self.cancel_button = QPushButton("Stop")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        search_row = QHBoxLayout()
        search_row.addWidget(QLabel("Subnets:"))
        search_row.addWidget(self.subnet_edit, 1)
        search_row.addWidget(self.search_button)
        search_row.addWidget(self.cancel_button)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.itemChanged.connect(self._on_item_changed)

        self.address_edit = QLineEdit()
        self.address_edit.setPlaceholderText("IP address or host name, e.g. mac-studio.local")
        self.user_edit = QLineEdit()
        self.user_edit.setPlaceholderText(f"default: {wizard.default_user()}")
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(DEFAULT_SSH_PORT)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("optional: corral picks one")
        self.add_button = QPushButton("Add")
        self.add_button.clicked.connect(self.add_manually)
        self.add_error = QLabel()
        self.add_error.setWordWrap(True)
        self.add_error.hide()
        manual = QGroupBox("Add a machine by hand")
        form = QFormLayout(manual)
        address_row = QHBoxLayout()
        address_row.addWidget(self.address_edit, 3)
        address_row.addWidget(QLabel("Port:"))
        address_row.addWidget(self.port_spin)
        form.addRow("Address:", address_row)
        user_row = QHBoxLayout()
        user_row.addWidget(self.user_edit, 1)
        user_row.addWidget(QLabel("Name:"))
        user_row.addWidget(self.name_edit, 1)
        user_row.addWidget(self.add_button)
        form.addRow("User:", user_row)
        form.addRow(self.add_error)

        layout = QVBoxLayout(self)
        layout.addLayout(search_row)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(manual)
        self._filling = False
        self._searched = False

    # --- page ---

    def initializePage(self) -> None:
        state = self.ctx.state
        if not state.subnets:
            state.subnets = ", ".join(self.ctx.core.default_subnets())
        self.subnet_edit.setText(state.subnets)
        self._fill()
        if not self._searched and not self.ctx.resuming and not any(n.found_by != ("manual",) for n in state.nodes
                                                                    if "inventory" not in n.found_by):
            self.search()

    def cleanupPage(self) -> None:
        self.cancel()

    def isComplete(self) -> bool:
        return any(node.selected for node in self.ctx.state.nodes)

    def validatePage(self) -> bool:
        self.cancel()
        state = self.ctx.state
        state.subnets = self.subnet_edit.text().strip()
        state.nodes = renamed_in_order(state.nodes, fixed=set(state.keyed))
        state.mark_completed("discover")
        self.ctx.save()
        return True

    # --- search ---

    def search(self) -> None:
        if self.job is not None:
            return
        text = self.subnet_edit.text().strip()
        try:
            from cluster.discovery import parse_subnets

            subnets = [str(s) for s in parse_subnets(part for part in text.replace(",", " ").split())]
        except ClusterError as exc:
            self._set_status(str(exc), error=True)
            return
        self.ctx.state.subnets = text
        self._searched = True
        where = ", ".join(subnets) if subnets else "this computer's networks"
        self._set_status(f"Searching {where} and mDNS…")
        self.job = self.ctx.bridge.start(
            lambda report: self.ctx.core.discover(subnets, SEARCH_TIMEOUT_S, report), parent=self)
        self.job.progressed.connect(self._on_found)
        self.job.succeeded.connect(self._on_finished)
        self.job.failed.connect(self._on_failed)
        self.search_button.setEnabled(False)
        self.cancel_button.setEnabled(True)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _on_found(self, hosts: list[object]) -> None:
        for host in hosts:
            self.merge_found(host)
        self._fill()

    def merge_found(self, host: object) -> None:
        """Add or update the row of a found host (a ``cluster.discovery.FoundHost``)."""
        address, port = host.address, host.port  # type: ignore[attr-defined]  # FoundHost
        state = self.ctx.state
        for node in state.nodes:
            if (node.address, node.port) == (address, port):
                state.replace_node(node.name, hostname=node.hostname or host.hostname,  # type: ignore[attr-defined]
                                   banner=node.banner or host.banner, os_hint=node.os_hint or host.os_hint,  # type: ignore[attr-defined]
                                   found_by=tuple(dict.fromkeys((*node.found_by, *host.methods))))  # type: ignore[attr-defined]
                return
        taken = Inventory(tuple(Node(n.name, n.address) for n in state.nodes))
        name = default_node_name(host.hostname or address, taken)  # type: ignore[attr-defined]
        state.nodes.append(WizardNode(name=name, address=address, port=port, hostname=host.hostname,  # type: ignore[attr-defined]
                                      banner=host.banner, os_hint=host.os_hint, found_by=tuple(host.methods),  # type: ignore[attr-defined]
                                      selected=False))

    def _on_finished(self, hosts: list[object]) -> None:
        self._end_search()
        for host in hosts or []:
            self.merge_found(host)
        self._fill()
        found = len(hosts or [])
        if found:
            self._set_status(f"Found {found} SSH server(s). Tick the ones to use, then press Next.")
        else:
            self._set_status("No SSH servers found. On a Mac, turn on Remote Login (System Settings › General › "
                             "Sharing); or type the subnet above (e.g. 192.168.1.0/24) and search again, or add the "
                             "machine by hand below.")
        self.ctx.save()

    def _on_failed(self, error: BaseException) -> None:
        self._end_search()
        if isinstance(error, asyncio.CancelledError):
            self._set_status("Search stopped. Machines found so far are listed.")
        elif isinstance(error, ClusterError):
            self._set_status(str(error), error=True)
        else:
            self._set_status("The search failed with an unexpected error (a bug); see the crash report.", error=True)
            report_crash(type(error), error, error.__traceback__, parent=self)

    def _end_search(self) -> None:
        self.job = None
        self.search_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {status_color('fail')}" if error else "")

    # --- manual add ---

    def add_manually(self) -> None:
        address = self.address_edit.text().strip()
        user = self.user_edit.text().strip()
        name = self.name_edit.text().strip()
        state = self.ctx.state
        problems = [f"Address: {p}." for p in [address_problem(address)] if p]
        if user and (p := user_problem(user)):
            problems.append(f"User: {p}.")
        if name and (p := name_problem(name)):
            problems.append(f"Name: {p}.")
        port = self.port_spin.value()
        for node in state.nodes:
            if (node.address.lower(), node.port) == (address.lower(), port):
                problems.append(f"{address}:{port} is already in the list as {node.name}; tick it there.")
            elif name and node.name.lower() == name.lower():
                problems.append(f"A node named {name!r} is already in the list; choose another name.")
        if problems:
            self.add_error.setText(" ".join(problems))
            self.add_error.setStyleSheet(f"color: {status_color('fail')}")
            self.add_error.show()
            return
        self.add_error.hide()
        taken = Inventory(tuple(Node(n.name, n.address) for n in state.nodes))
        state.nodes.append(WizardNode(name=name or default_node_name(address, taken), address=address, port=port,
                                      user=user, found_by=("manual",), selected=True, auto_named=not name))
        for edit in (self.address_edit, self.user_edit, self.name_edit):
            edit.clear()
        self._fill()
        self.ctx.save()
        self.completeChanged.emit()

    # --- the table ---

    def _fill(self) -> None:
        self._filling = True
        nodes = sorted(self.ctx.state.nodes, key=_sort_key)
        self.table.setRowCount(len(nodes))
        for row, node in enumerate(nodes):
            use = QTableWidgetItem()
            use.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            use.setCheckState(Qt.CheckState.Checked if node.selected else Qt.CheckState.Unchecked)
            use.setData(Qt.ItemDataRole.UserRole, node.name)
            system = node.os_hint or ""
            software = _software(node.banner)
            if software:
                system = f"{system} ({software})" if system else software
            cells = [use, QTableWidgetItem(node.name), QTableWidgetItem(node.address if node.port == DEFAULT_SSH_PORT
                                                                         else f"{node.address}:{node.port}"),
                     QTableWidgetItem(node.hostname or ""), QTableWidgetItem(system),
                     QTableWidgetItem(", ".join(_method_label(m) for m in node.found_by))]
            for column, item in enumerate(cells):
                if node.banner:
                    item.setToolTip(node.banner)
                self.table.setItem(row, column, item)
        self._filling = False
        self.completeChanged.emit()

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 0:
            return
        name = item.data(Qt.ItemDataRole.UserRole)
        self.ctx.state.replace_node(name, selected=item.checkState() == Qt.CheckState.Checked)
        self.ctx.save()
        self.completeChanged.emit()

    def set_selected(self, name: str, selected: bool) -> None:
        """Tick or untick a node (what a click on its checkbox does)."""
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item.data(Qt.ItemDataRole.UserRole) == name:
                item.setCheckState(Qt.CheckState.Checked if selected else Qt.CheckState.Unchecked)


def _software(banner: str | None) -> str:
    from cluster.discovery import parse_banner

    parsed = parse_banner(banner)
    return parsed.software.replace("_", " ") if parsed else ""


def _method_label(method: str) -> str:
    return {"mdns": "mDNS", "sweep": "sweep", "manual": "added by hand", "inventory": "your cluster"}.get(method, method)
