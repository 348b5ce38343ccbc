"""Check: the doctor's node × check table filled live, every failure explained with its fix; Next needs all green."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
)

from cluster.doctor import CHECKS, CLUSTER, CheckFinished, CheckResult, DoctorReport, DoctorStarted, Status
from gui.setup_wizard.core import StepState
from gui.setup_wizard.node_progress import RowUpdate
from gui.setup_wizard.step_page import StepPage
from gui.theme import status_color

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard

ROW_HEIGHT = 24
SYMBOLS = {Status.PASS: ("✓", "ok"), Status.FAIL: ("✗", "fail"), Status.WARN: ("!", "warn"), Status.SKIP: ("–", "muted")}


class CheckPage(StepPage):
    key = "check"

    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__(wizard)
        self.setTitle("Check the cluster")
        self.setSubTitle("corral's doctor checks every node: SSH, code, venv, versions, node-to-node SSH, the MPI "
                         "network, and a real mpirun across all of them.")
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.verticalHeader().setDefaultSectionSize(ROW_HEIGHT)
        self.report: DoctorReport | None = None
        self._rows: dict[str, int] = {}
        self._columns: dict[str, int] = {}
        self.rerun_button = QPushButton("Run the checks again")
        self.rerun_button.clicked.connect(lambda: self.run_for(self.ctx.selected_names()))
        self.legend = QLabel("✓ passed   ✗ failed   ! warning   – skipped (an earlier check failed)")
        row = QHBoxLayout()
        row.addWidget(self.legend, 1)
        row.addWidget(self.rerun_button)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.table)
        splitter.addWidget(self.progress)
        splitter.setStretchFactor(0, 0)  # the table is as tall as its rows; the node rows take the rest
        splitter.setStretchFactor(1, 1)
        self.body.addWidget(splitter, 1)
        self.body.addLayout(row)
        self.body.addWidget(self.error_label)

    def done_text(self, name: str) -> str:
        return "Every check passed earlier."

    def run_for(self, names: list[str]) -> None:
        # The doctor checks the cluster as a whole (node-to-node SSH, the fabric): always every node.
        super().run_for(self.ctx.selected_names())

    def _on_drop(self, name: str) -> None:
        super()._on_drop(name)
        self.run_for(self.ctx.selected_names())

    def before_start(self, names: list[str]) -> None:
        self.rerun_button.setEnabled(False)
        self.inventory = self.ctx.write_inventory()
        self.report = None

    def start_work(self, names: list[str], report: Callable[[object], None]) -> Awaitable[object]:
        return self.ctx.core.doctor(self.inventory, report)

    def to_updates(self, event: object) -> Sequence[RowUpdate]:
        if isinstance(event, DoctorStarted):
            self._shape([check.title for check in event.checks], [check.id for check in event.checks], list(event.nodes))
            return [RowUpdate(node, StepState.RUNNING, "checking") for node in event.nodes]
        if isinstance(event, CheckFinished):
            self._show_cell(event.result)
            result = event.result
            if result.node != CLUSTER and result.status is Status.FAIL:
                return [RowUpdate(result.node, StepState.RUNNING, f"checking ({result.title} failed)")]
        return []

    def _shape(self, titles: list[str], ids: list[str], nodes: list[str]) -> None:
        columns = [*nodes, CLUSTER]
        self.table.clear()
        self.table.setRowCount(len(ids))
        self.table.setColumnCount(len(columns))
        self.table.setVerticalHeaderLabels(titles)
        self.table.setHorizontalHeaderLabels([("cluster" if c == CLUSTER else c) for c in columns])
        header_height = self.table.horizontalHeader().sizeHint().height()
        # As tall as its rows, so every check is visible without scrolling.
        self.table.setFixedHeight(header_height + ROW_HEIGHT * len(ids) + 2 * self.table.frameWidth() + 2)
        self.table.setColumnHidden(len(columns) - 1, True)
        self._rows = {check: index for index, check in enumerate(ids)}
        self._columns = {node: index for index, node in enumerate(columns)}

    def _show_cell(self, result: CheckResult) -> None:
        row, column = self._rows.get(result.check), self._columns.get(result.node)
        if row is None or column is None:
            return
        if result.node == CLUSTER:
            self.table.setColumnHidden(column, False)
        symbol, kind = SYMBOLS[result.status]
        item = QTableWidgetItem(symbol)
        item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
        item.setForeground(QColor(status_color(kind)))
        font = item.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.3)
        item.setFont(font)
        item.setToolTip("\n".join(part for part in (result.detail, result.fix or "") if part))
        self.table.setItem(row, column, item)

    def finish(self, names: list[str], result: object) -> None:
        report: DoctorReport = result  # type: ignore[assignment]  # run_doctor's report
        self.report = report
        self.rerun_button.setEnabled(True)
        if not self._rows:
            self._shape([c.title for c in CHECKS], [c.id for c in CHECKS], list(report.nodes))
        for cell in report.results:
            self._show_cell(cell)
        for name in self.progress.names():
            mine = [r for r in report.results if r.node == name]
            failures = [r.fix or f"{name}: {r.title} failed." for r in mine if r.status is Status.FAIL]
            warnings = [r.fix for r in mine if r.status is Status.WARN and r.fix]
            if failures:
                self.progress.apply(RowUpdate(name, StepState.FAILED, "checks failed", 100,
                                              outcome="\n".join(failures)))
            else:
                passed = sum(1 for r in mine if r.status is Status.PASS)
                text = f"All {passed} checks passed." + (" Warnings: " + " ".join(warnings) if warnings else "")
                self.progress.apply(RowUpdate(name, StepState.OK, "all checks passed", 100, outcome=text))
        cluster_failures = [r.fix or r.title for r in report.results if r.node == CLUSTER and r.status is Status.FAIL]
        if cluster_failures:
            self._show_error("\n".join(cluster_failures))
            for name in self.progress.names():
                if self.progress.state_of(name) is StepState.OK:
                    self.progress.apply(RowUpdate(name, StepState.FAILED, "cluster check failed",
                                                  outcome="A check of the whole cluster failed (see below)."))
        elif report.ok:
            self._show_error("")

    def _on_failed(self, names: list[str], error: BaseException) -> None:
        self.rerun_button.setEnabled(True)
        super()._on_failed(names, error)
