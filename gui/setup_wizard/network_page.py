"""Network: which network MPI's traffic uses (e.g. a Thunderbolt bridge rather than Wi-Fi), and each node's address on it."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWizardPage,
)

from cluster.inventory import covering_subnet
from cluster.inventory_file import network_problem
from gui.theme import status_color

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard


def address_in(address: str, network: str | None) -> bool:
    if network is None:
        return False
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


class NetworkPage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self.ctx = wizard
        self.setTitle("Choose the network for training traffic")
        self.setSubTitle("MPI sends gradients between the nodes on every step: pick the fastest network they are all "
                         "on, e.g. a Thunderbolt bridge (169.254.0.0/16) or wired Ethernet rather than Wi-Fi.")
        self.group = QButtonGroup(self)
        self.choices_box = QVBoxLayout()
        self.other_radio = QRadioButton("Another network (CIDR):")
        self.other_edit = QLineEdit()
        self.other_edit.setPlaceholderText("e.g. 169.254.0.0/16")
        self.other_edit.textEdited.connect(lambda _: self.other_radio.setChecked(True))
        self.other_edit.textChanged.connect(self._refresh)
        other_row = QHBoxLayout()
        other_row.addWidget(self.other_radio)
        other_row.addWidget(self.other_edit, 1)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Node", "Address corral logs in to", "Address on the chosen network"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        note = QLabel("Before keys are installed corral sees the nodes from this computer only; the Check step "
                      "confirms every node's own address on the chosen network.")
        note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(self.choices_box)
        layout.addLayout(other_row)
        layout.addWidget(self.problem)
        layout.addWidget(self.table, 1)
        layout.addWidget(note)
        self.group.addButton(self.other_radio)
        self.group.buttonToggled.connect(lambda *_: self._refresh())
        self._radios: list[tuple[QRadioButton, str | None]] = []

    def automatic_network(self) -> str | None:
        return covering_subnet(node.address for node in self.ctx.state.selected_nodes())

    def initializePage(self) -> None:
        for radio, _ in self._radios:
            self.group.removeButton(radio)
            radio.setParent(None)
            radio.deleteLater()
        self._radios = []
        auto = self.automatic_network()
        auto_text = f"Automatic: the nodes' own subnet ({auto})" if auto else \
            "Automatic: the nodes' own subnet (unknown: some addresses are host names; choose below)"
        choices: list[tuple[str, str | None]] = [(auto_text, None)]
        seen = set()
        for network in self.ctx.core.local_networks():
            if network.cidr not in seen:
                seen.add(network.cidr)
                choices.append((network.label, network.cidr))
        for text, cidr in choices:
            radio = QRadioButton(text)
            self.group.addButton(radio)
            self.choices_box.addWidget(radio)
            self._radios.append((radio, cidr))
        chosen = self.ctx.state.network
        for radio, cidr in self._radios:
            if cidr == chosen:
                radio.setChecked(True)
                break
        else:
            self.other_radio.setChecked(True)
            self.other_edit.setText(chosen or "")
        self._refresh()

    def chosen_network(self) -> tuple[str | None, str | None]:
        """(network or None for automatic, problem sentence or None)."""
        if self.other_radio.isChecked():
            text = self.other_edit.text().strip()
            problem = network_problem(text) if text else "type a network such as 169.254.0.0/16"
            return (None, f"Network: {problem}.") if problem else (text, None)
        for radio, cidr in self._radios:
            if radio.isChecked():
                return cidr, None
        return None, "Choose a network."

    def select(self, cidr: str | None) -> None:
        """Choose a listed network (None: automatic) or type another one."""
        for radio, value in self._radios:
            if value == cidr:
                radio.setChecked(True)
                return
        self.other_radio.setChecked(True)
        self.other_edit.setText(cidr or "")

    def _refresh(self) -> None:
        network, problem = self.chosen_network()
        self.problem.setText(problem or "")
        self.problem.setStyleSheet(f"color: {status_color('fail')}")
        self.problem.setVisible(bool(problem))
        effective = network or self.automatic_network()
        nodes = self.ctx.state.selected_nodes()
        self.table.setRowCount(len(nodes))
        for row, node in enumerate(nodes):
            self.table.setItem(row, 0, QTableWidgetItem(node.name))
            self.table.setItem(row, 1, QTableWidgetItem(node.address))
            if address_in(node.address, effective):
                text = node.address
            else:
                text = "not this address: the Check step finds the node's own address there"
            self.table.setItem(row, 2, QTableWidgetItem(text))
        self.completeChanged.emit()

    def isComplete(self) -> bool:
        return self.chosen_network()[1] is None

    def validatePage(self) -> bool:
        network, problem = self.chosen_network()
        if problem:
            return False
        state = self.ctx.state
        if network != state.network:
            state.network = network
            if "check" in state.completed:
                state.completed.remove("check")
            if state.keyed:
                self.ctx.write_inventory()
        state.mark_completed("network")
        self.ctx.save()
        return True
