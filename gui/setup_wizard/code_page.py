"""Code: choose the project folder and copy it to every node with rsync, showing each node's transfer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QLineEdit, QPushButton

from cluster.errors import ClusterError
from cluster.layout import RemoteLayout
from gui.setup_wizard.core import StepState
from gui.setup_wizard.node_progress import RowUpdate
from gui.setup_wizard.step_page import StepPage
from gui.theme import status_color

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard


class CodePage(StepPage):
    key = "code"
    auto_start = False  # starts when the folder is chosen

    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__(wizard)
        self.setTitle("Copy your project to the nodes")
        self.setSubTitle("Choose the folder with your training code. corral copies it to every node (rsync, honouring "
                         ".gitignore) into ~/corral/projects/ under each node user's home.")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("the project folder, e.g. ~/code/train")
        self.folder_edit.textChanged.connect(self._on_folder_changed)
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        self.copy_button = QPushButton("Copy to the nodes")
        self.copy_button.clicked.connect(lambda: self.run_for(self.ctx.selected_names()))
        row = QHBoxLayout()
        row.addWidget(QLabel("Project folder:"))
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        row.addWidget(self.copy_button)
        self.folder_problem = QLabel()
        self.folder_problem.setWordWrap(True)
        self.folder_problem.hide()
        self.body.addLayout(row)
        self.body.addWidget(self.folder_problem)
        self.body.addWidget(self.progress, 1)
        self.body.addWidget(self.error_label)

    def initializePage(self) -> None:
        self.folder_edit.blockSignals(True)
        self.folder_edit.setText(self.ctx.state.project)
        self.folder_edit.blockSignals(False)
        super().initializePage()

    def done_text(self, name: str) -> str:
        return f"The project is in ~/{RemoteLayout.for_project(self.ctx.state.project).code_dir} on {name}."

    def set_folder(self, folder: str) -> None:
        self.folder_edit.setText(folder)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the project folder", self.folder_edit.text() or str(Path.home()))
        if folder:
            self.folder_edit.setText(folder)

    def _on_folder_changed(self, text: str) -> None:
        if text.strip() != self.ctx.state.project:
            self.ctx.state.forget_completed_from("code")
            for name in self.progress.names():
                self.progress.apply(RowUpdate(name, StepState.WAITING, "waiting", outcome=""))
        self.folder_problem.hide()
        self.completeChanged.emit()

    def before_start(self, names: list[str]) -> None:
        text = self.folder_edit.text().strip()
        try:
            folder = self.ctx.core.check_project(text or ".")
        except ClusterError as exc:
            self.folder_problem.setText(str(exc))
            self.folder_problem.setStyleSheet(f"color: {status_color('fail')}")
            self.folder_problem.show()
            raise
        self.ctx.state.project = str(folder)
        self.ctx.save()
        self.inventory = self.ctx.write_inventory()

    def start_work(self, names: list[str], report: Callable[[object], None]) -> Awaitable[object]:
        return self.ctx.core.sync(self.inventory, self.ctx.state.project, names, report)

    def to_updates(self, event: object) -> Sequence[RowUpdate]:
        from cluster.cli_sync import describe_progress
        from cluster.sync import SyncPhase, SyncProgress

        if not isinstance(event, SyncProgress):
            return []
        if event.phase is SyncPhase.FAILED:
            return [RowUpdate(event.node, StepState.FAILED, "failed", outcome=event.message)]
        if event.phase is SyncPhase.DONE:
            return [RowUpdate(event.node, StepState.OK, "copied", 100, outcome=describe_progress(event).capitalize())]
        return [RowUpdate(event.node, StepState.RUNNING, describe_progress(event), event.percent)]

    def finish(self, names: list[str], result: object) -> None:
        for outcome in result:  # type: ignore[attr-defined]  # list of NodeOutcome
            name = outcome.node.name
            if name not in self.progress.names():
                continue
            if outcome.ok:
                stats = outcome.value.stats
                self.progress.apply(RowUpdate(name, StepState.OK, "copied", 100, outcome=(
                    f"{stats.files_transferred} file(s) sent, {stats.files_total} in the project, in "
                    f"{outcome.elapsed_s:.1f} s: ~/{outcome.value.code_dir} on {name}.")))
            else:
                self.progress.apply(RowUpdate(name, StepState.FAILED, "failed", outcome=outcome.message))
