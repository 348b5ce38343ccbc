"""A wizard page whose work runs per node on the worker loop, shown in a NodeProgressWidget with cancel, retry, drop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWizardPage

from cluster.errors import ClusterError, NodeError
from gui.bridge import Job
from gui.messages import report_crash
from gui.setup_wizard.core import StepState
from gui.setup_wizard.node_progress import NodeProgressWidget, RowUpdate
from gui.theme import status_color

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard


class StepPage(QWizardPage):
    """Subclasses set ``key`` and implement ``start_work``, ``to_updates`` and ``finish``."""

    key = ""
    auto_start = True

    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self.ctx = wizard
        self.job: Job | None = None
        self.progress = NodeProgressWidget()
        self.progress.cancel_requested.connect(self.cancel)
        self.progress.retry_requested.connect(self.run_for)
        self.progress.drop_requested.connect(self._on_drop)
        self.progress.undo_requested.connect(self._on_undo)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.body = QVBoxLayout(self)

    # --- what subclasses provide ---

    def start_work(self, names: list[str], report: Callable[[object], None]) -> Awaitable[object]:
        raise NotImplementedError

    def to_updates(self, event: object) -> Sequence[RowUpdate]:
        raise NotImplementedError

    def finish(self, names: list[str], result: object) -> None:
        """Turn the job's result into each node's final row."""
        raise NotImplementedError

    def done_text(self, name: str) -> str:
        return "Done earlier; press Retry on a node to repeat it."

    # --- the page ---

    def initializePage(self) -> None:
        names = self.ctx.selected_names()
        self.progress.set_nodes(names)
        self._show_error("")
        if self.key in self.ctx.state.completed:
            for name in names:
                self.progress.apply(RowUpdate(name, StepState.OK, "done", outcome=self.done_text(name)))
        elif self.auto_start and not self.ctx.resuming and names:
            self.run_for(names)
        self.completeChanged.emit()

    def cleanupPage(self) -> None:
        self.cancel()

    def isComplete(self) -> bool:
        return self.job is None and self.progress.all_ok()

    def run_for(self, names: list[str]) -> None:
        if self.job is not None or not names:
            return
        self._show_error("")
        for name in names:
            self.progress.apply(RowUpdate(name, StepState.RUNNING, "starting", outcome=""))
        self.ctx.state.forget_completed_from(self.key)
        try:
            self.before_start(names)
        except ClusterError as exc:
            self._fail_rows(names, str(exc))
            return
        self.job = self.ctx.bridge.start(lambda report: self.start_work(names, report), parent=self)
        self.job.progressed.connect(self._on_events)
        self.job.succeeded.connect(lambda result: self._on_succeeded(names, result))
        self.job.failed.connect(lambda error: self._on_failed(names, error))
        self.progress.set_running(True)
        self.completeChanged.emit()

    def before_start(self, names: list[str]) -> None:
        """Checks and saves in the GUI thread before the work starts; a ClusterError fails the rows."""

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def _on_events(self, batch: list[object]) -> None:
        for event in batch:
            for update in self.to_updates(event):
                self.progress.apply(update)

    def _on_succeeded(self, names: list[str], result: object) -> None:
        self.job = None
        self.progress.set_running(False)
        try:
            self.finish(names, result)
        finally:
            self._after_job()

    def _on_failed(self, names: list[str], error: BaseException) -> None:
        self.job = None
        self.progress.set_running(False)
        if isinstance(error, asyncio.CancelledError):
            self.progress.mark_cancelled()
        # The step as a whole failed, so no node's result from it can be trusted, not even one shown done.
        elif isinstance(error, NodeError) and error.node in names:
            self._fail_rows([error.node], str(error), force=True)
            self._fail_rows([n for n in names if n != error.node], f"Stopped because of {error.node}: {error}",
                            force=True)
        elif isinstance(error, ClusterError):
            self._fail_rows(names, str(error), force=True)
        else:
            self._fail_rows(names, "corral hit an unexpected error (a bug in corral); the details are in the crash "
                                   "report. Press Retry to try again.", force=True)
            report_crash(type(error), error, error.__traceback__, parent=self)
        self._after_job()

    def _after_job(self) -> None:
        if self.progress.all_ok():
            self.ctx.state.mark_completed(self.key)
        self.ctx.save()
        self.completeChanged.emit()

    def _fail_rows(self, names: Sequence[str], sentence: str, *, force: bool = False) -> None:
        for name in names:
            if name in self.progress.names() and (force or self.progress.state_of(name) is not StepState.OK):
                self.progress.apply(RowUpdate(name, StepState.FAILED, "failed", outcome=sentence))
        self.completeChanged.emit()

    def _show_error(self, text: str) -> None:
        self.error_label.setText(text)
        self.error_label.setStyleSheet(f"color: {status_color('fail')}")
        self.error_label.setVisible(bool(text))

    def _on_drop(self, name: str) -> None:
        self.ctx.drop_node(name)
        self.completeChanged.emit()

    def _on_undo(self, name: str) -> None:
        self.ctx.undo_drop(name)
        self.progress.restore_row(name, self.ctx.selected_names())
        self.completeChanged.emit()
