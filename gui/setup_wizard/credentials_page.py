"""Credentials: the login user and password per node (or one for all), and each node's host key to confirm."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QWizardPage,
)

from cluster.errors import ClusterError
from cluster.inventory_file import user_problem
from gui.bridge import Job
from gui.messages import report_crash
from gui.setup_wizard.core import HostKeyStatus, HostKeyView, NodeStep
from gui.theme import status_color

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard

NODE, ADDRESS, USER, PASSWORD, HOST_KEY, TRUST = range(6)


class CredentialsPage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self.ctx = wizard
        self.job: Job | None = None
        self.keys: dict[str, HostKeyView] = {}
        self.key_problems: dict[str, str] = {}
        self.user_edits: dict[str, QLineEdit] = {}
        self.password_edits: dict[str, QLineEdit] = {}
        self.trust_boxes: dict[str, QCheckBox] = {}
        self.setTitle("Log in to each machine once")
        self.setSubTitle("corral uses each password once, to install its own SSH key; passwords are never saved. "
                         "Compare each host key with the machine's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`) "
                         "before you trust it.")
        self.shared_box = QCheckBox("Same user and password on every machine")
        self.shared_box.toggled.connect(self._on_shared_toggled)
        self.shared_user = QLineEdit()
        self.shared_password = QLineEdit()
        self.shared_password.setEchoMode(QLineEdit.EchoMode.Password)
        self.shared_user.textChanged.connect(lambda _: self.completeChanged.emit())
        shared_form = QFormLayout()
        shared_form.addRow("User:", self.shared_user)
        shared_form.addRow("Password:", self.shared_password)
        self.shared_widget = QWidget()
        self.shared_widget.setLayout(shared_form)

        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["Node", "Address", "User", "Password", "Host key (SHA256)", "Trust"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(HOST_KEY, QHeaderView.ResizeMode.Stretch)
        self.problems = QLabel()
        self.problems.setWordWrap(True)
        self.problems.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.recheck_button = QPushButton("Check host keys again")
        self.recheck_button.clicked.connect(self.fetch_host_keys)
        self.trust_all_button = QPushButton("Trust all new keys shown")
        self.trust_all_button.clicked.connect(self.trust_all_new)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.trust_all_button)
        buttons.addWidget(self.recheck_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.shared_box)
        layout.addWidget(self.shared_widget)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.problems)
        layout.addLayout(buttons)

    # --- page ---

    def initializePage(self) -> None:
        state = self.ctx.state
        self.shared_box.setChecked(state.shared_credentials)
        self.shared_user.setText(state.shared_user)
        self.shared_password.setText(self.ctx.shared_password)
        self._fill()
        self._on_shared_toggled(state.shared_credentials)
        if not self.ctx.resuming:
            self.fetch_host_keys()

    def cleanupPage(self) -> None:
        self.cancel()
        self._store()

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _fill(self) -> None:
        nodes = self.ctx.state.selected_nodes()
        self.table.setRowCount(len(nodes))
        self.user_edits, self.password_edits, self.trust_boxes = {}, {}, {}
        for row, node in enumerate(nodes):
            self.table.setItem(row, NODE, QTableWidgetItem(node.name))
            self.table.setItem(row, ADDRESS, QTableWidgetItem(node.address))
            user = QLineEdit(node.user)
            user.setPlaceholderText(self.ctx.default_user())
            user.textChanged.connect(lambda _: self.completeChanged.emit())
            password = QLineEdit(self.ctx.passwords.get(node.name, ""))
            password.setEchoMode(QLineEdit.EchoMode.Password)
            password.setPlaceholderText("password")
            self.table.setCellWidget(row, USER, user)
            self.table.setCellWidget(row, PASSWORD, password)
            self.user_edits[node.name] = user
            self.password_edits[node.name] = password
            self._show_key(row, node.name)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setSectionResizeMode(HOST_KEY, QHeaderView.ResizeMode.Stretch)
        self._show_problems()

    def _row_of(self, name: str) -> int:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, NODE)
            if item is not None and item.text() == name:
                return row
        return -1

    def _show_key(self, row: int, name: str, pending: str | None = None) -> None:
        view = self.keys.get(name)
        problem = self.key_problems.get(name)
        item = QTableWidgetItem()
        trust: QWidget
        if pending is not None:
            item.setText(pending)
            trust = QLabel("")
        elif view is not None:
            item.setText(view.fingerprint)
            item.setToolTip(view.fingerprint)
            if view.status is HostKeyStatus.TRUSTED:
                box = QCheckBox("already trusted")
                box.setChecked(True)
                box.setEnabled(False)
                trust = box
            elif view.status is HostKeyStatus.NEW:
                box = QCheckBox("trust")
                box.setChecked(self.ctx.trusted_fingerprints.get(name) == view.fingerprint)
                box.toggled.connect(lambda _: self.completeChanged.emit())
                self.trust_boxes[name] = box
                trust = box
            else:
                item.setForeground(_color("fail"))
                trust = self._leave_out_button(name, "changed: refused")
        else:
            item.setText("could not be checked" if problem else "not checked yet")
            if problem:
                item.setForeground(_color("fail"))
            trust = self._leave_out_button(name, "") if problem else QLabel("")
        self.table.setItem(row, HOST_KEY, item)
        self.table.setCellWidget(row, TRUST, trust)

    def _leave_out_button(self, name: str, text: str) -> QWidget:
        holder = QWidget()
        layout = QHBoxLayout(holder)
        layout.setContentsMargins(2, 0, 2, 0)
        if text:
            label = QLabel(text)
            label.setStyleSheet(f"color: {status_color('fail')}")
            layout.addWidget(label)
        button = QPushButton("Leave out")
        button.setToolTip(f"Leave {name} out of the cluster (tick it again on the first page to bring it back)")
        button.clicked.connect(lambda: self.leave_out(name))
        layout.addWidget(button)
        return holder

    def leave_out(self, name: str) -> None:
        self._store()
        self.ctx.drop_node(name)
        self._fill()
        self.completeChanged.emit()

    def _show_problems(self) -> None:
        names = set(self.ctx.selected_names())
        lines = [text for name, text in self.key_problems.items() if name in names]
        lines += [view.message for name, view in self.keys.items()
                  if name in names and view.status is HostKeyStatus.CHANGED]
        self.problems.setText("\n\n".join(lines))
        self.problems.setStyleSheet(f"color: {status_color('fail')}")
        self.problems.setVisible(bool(lines))

    def _on_shared_toggled(self, shared: bool) -> None:
        self.shared_widget.setVisible(shared)
        self.table.setColumnHidden(USER, shared)
        self.table.setColumnHidden(PASSWORD, shared)
        self.completeChanged.emit()

    # --- host keys ---

    def fetch_host_keys(self) -> None:
        if self.job is not None:
            return
        nodes = self.ctx.selected_nodes()
        for node in nodes:
            self.keys.pop(node.name, None)
            self.key_problems.pop(node.name, None)
            self._show_key(self._row_of(node.name), node.name, pending="asking the node…")
        self.recheck_button.setEnabled(False)
        self.job = self.ctx.bridge.start(lambda report: self.ctx.core.host_keys(nodes, report), parent=self)
        self.job.progressed.connect(self._on_key_events)
        self.job.succeeded.connect(self._on_keys)
        self.job.failed.connect(self._on_keys_failed)
        self.completeChanged.emit()

    def _on_key_events(self, events: list[object]) -> None:
        for event in events:
            if isinstance(event, NodeStep) and (row := self._row_of(event.node)) >= 0 and event.node not in self.keys:
                if event.state.value == "running":
                    self._show_key(row, event.node, pending=event.text)

    def _on_keys(self, outcomes: list[object]) -> None:
        self._end_job()
        for outcome in outcomes:
            name = outcome.node.name  # type: ignore[attr-defined]  # NodeOutcome
            if outcome.ok:  # type: ignore[attr-defined]
                self.keys[name] = outcome.value  # type: ignore[attr-defined]
            else:
                self.key_problems[name] = outcome.message  # type: ignore[attr-defined]
        self._refresh_keys()

    def _on_keys_failed(self, error: BaseException) -> None:
        self._end_job()
        if isinstance(error, asyncio.CancelledError):
            pass
        elif isinstance(error, ClusterError):
            for name in self.ctx.selected_names():
                self.key_problems[name] = str(error)
        else:
            report_crash(type(error), error, error.__traceback__, parent=self)
        self._refresh_keys()

    def _end_job(self) -> None:
        self.job = None
        self.recheck_button.setEnabled(True)

    def _refresh_keys(self) -> None:
        for name in self.ctx.selected_names():
            self._show_key(self._row_of(name), name)
        self._show_problems()
        self.completeChanged.emit()

    def trust(self, name: str, trusted: bool = True) -> None:
        self.trust_boxes[name].setChecked(trusted)

    def trust_all_new(self) -> None:
        for box in self.trust_boxes.values():
            box.setChecked(True)

    # --- completing ---

    def _user_for(self, name: str) -> str:
        if self.shared_box.isChecked():
            return self.shared_user.text().strip()
        return self.user_edits[name].text().strip() if name in self.user_edits else ""

    def user_problems(self) -> list[str]:
        problems = []
        for name in self.ctx.selected_names():
            user = self._user_for(name) or self.ctx.default_user()
            if problem := user_problem(user):
                problems.append(f"{name}: user {problem}.")
        return problems

    def isComplete(self) -> bool:
        if self.job is not None or self.user_problems():
            return False
        for name in self.ctx.selected_names():
            view = self.keys.get(name)
            if view is None or view.status is HostKeyStatus.CHANGED:
                return False
            if view.status is HostKeyStatus.NEW and not (name in self.trust_boxes and self.trust_boxes[name].isChecked()):
                return False
        return True

    def _store(self) -> None:
        state = self.ctx.state
        shared = self.shared_box.isChecked()
        state.shared_credentials = shared
        state.shared_user = self.shared_user.text().strip() if shared else state.shared_user
        self.ctx.shared_password = self.shared_password.text()
        for name in self.ctx.selected_names():
            if name in self.password_edits:
                self.ctx.passwords[name] = self.password_edits[name].text()
            user = self.shared_user.text().strip() if shared else (self.user_edits[name].text().strip()
                                                                     if name in self.user_edits else "")
            if user != state.node(name).user:
                state.replace_node(name, user=user)
                if name in state.keyed:  # another login: its key must be installed for that user
                    state.keyed.remove(name)
                    state.forget_completed_from("keys")
            view = self.keys.get(name)
            if view is not None and name in self.trust_boxes and self.trust_boxes[name].isChecked():
                self.ctx.trusted_fingerprints[name] = view.fingerprint

    def validatePage(self) -> bool:
        self._store()
        self.ctx.state.mark_completed("credentials")
        self.ctx.save()
        return True


def _color(kind: str):  # noqa: ANN202 - a QColor
    from PySide6.QtGui import QColor

    return QColor(status_color(kind))
