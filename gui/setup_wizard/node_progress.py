"""One row per node for the wizard's long steps: state, progress or step text, the outcome sentence, retry and drop."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from gui.setup_wizard.core import StepState
from gui.theme import status_color

SYMBOLS = {
    StepState.WAITING: ("○", "muted"),
    StepState.RUNNING: ("●", "warn"),
    StepState.OK: ("✓", "ok"),
    StepState.FAILED: ("✗", "fail"),
    StepState.CANCELLED: ("–", "muted"),
}


@dataclass(frozen=True)
class RowUpdate:
    """What a page learned about one node from the core's progress events."""

    node: str
    state: StepState
    text: str = ""  # the current step ("copying wheels"), shown on the bar
    percent: int | None = None  # None: busy without a known fraction
    outcome: str | None = None  # the sentence under the row: what happened, or what to do


class NodeRow(QFrame):
    retry_clicked = Signal(str)
    drop_clicked = Signal(str)

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.state = StepState.WAITING
        self.outcome = ""
        self.setObjectName(f"row-{name}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.icon = QLabel()
        self.icon.setFixedWidth(22)
        self.icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.title = QLabel(f"<b>{name}</b>")
        self.title.setMinimumWidth(110)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setMinimumWidth(220)
        self.retry_button = QPushButton("Retry")
        self.drop_button = QPushButton("Drop node")
        self.retry_button.clicked.connect(lambda: self.retry_clicked.emit(self.name))
        self.drop_button.clicked.connect(lambda: self.drop_clicked.emit(self.name))
        self.outcome_label = QLabel()
        self.outcome_label.setWordWrap(True)
        self.outcome_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.outcome_label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)

        top = QHBoxLayout()
        top.addWidget(self.icon)
        top.addWidget(self.title)
        top.addWidget(self.bar, 1)
        top.addWidget(self.retry_button)
        top.addWidget(self.drop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addLayout(top)
        layout.addWidget(self.outcome_label)
        self.apply(RowUpdate(name, StepState.WAITING, "waiting"))

    def apply(self, update: RowUpdate) -> None:
        self.state = update.state
        symbol, kind = SYMBOLS[update.state]
        self.icon.setText(f"<span style='font-size:15px; color:{status_color(kind)}'>{symbol}</span>")
        if update.state is StepState.RUNNING and update.percent is None:
            self.bar.setRange(0, 0)  # busy: the step has no known fraction
        else:
            self.bar.setRange(0, 100)
            done = update.state in (StepState.OK,)
            self.bar.setValue(100 if done else (update.percent or 0))
        self.bar.setFormat(update.text or update.state.value)
        if update.outcome is not None:
            self.outcome = update.outcome
            color = status_color("fail") if update.state is StepState.FAILED else ""
            self.outcome_label.setStyleSheet(f"color: {color}" if color else "")
            self.outcome_label.setText(update.outcome)
        self.outcome_label.setVisible(bool(self.outcome))
        failed = update.state in (StepState.FAILED, StepState.CANCELLED)
        self.retry_button.setVisible(failed)
        self.drop_button.setVisible(failed)

    def set_busy(self, busy: bool) -> None:
        self.retry_button.setEnabled(not busy)
        self.drop_button.setEnabled(not busy)


class NodeProgressWidget(QWidget):
    """Rows of nodes plus Cancel / Retry failed, and an undo bar after a node was dropped."""

    cancel_requested = Signal()
    retry_requested = Signal(list)  # node names
    drop_requested = Signal(str)
    undo_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: dict[str, NodeRow] = {}
        self._running = False
        self._dropped: str | None = None
        self._rows_box = QVBoxLayout()
        self._rows_box.setSpacing(4)
        holder = QWidget()
        outer = QVBoxLayout(holder)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self._rows_box)
        outer.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(holder)

        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.retry_button = QPushButton("Retry failed")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.retry_button.clicked.connect(lambda: self.retry_requested.emit(self.failed_nodes()))
        self.undo_label = QLabel()
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self._on_undo)
        self.undo_bar = QWidget()
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(0, 0, 0, 0)
        undo_layout.addWidget(self.undo_label, 1)
        undo_layout.addWidget(self.undo_button)
        self.undo_bar.hide()

        buttons = QHBoxLayout()
        buttons.addWidget(self.summary, 1)
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.undo_bar)
        layout.addLayout(buttons)
        self.set_running(False)

    # --- rows ---

    def set_nodes(self, names: list[str]) -> None:
        for row in self._rows.values():
            row.setParent(None)
            row.deleteLater()
        self._rows = {}
        for name in names:
            self._add_row(name)
        self._refresh()

    def _add_row(self, name: str) -> NodeRow:
        row = NodeRow(name, self)
        row.retry_clicked.connect(lambda node: self.retry_requested.emit([node]))
        row.drop_clicked.connect(self._on_drop)
        row.set_busy(self._running)
        self._rows[name] = row
        self._rows_box.addWidget(row)
        return row

    def names(self) -> list[str]:
        return list(self._rows)

    def row(self, name: str) -> NodeRow:
        return self._rows[name]

    def apply(self, update: RowUpdate) -> None:
        row = self._rows.get(update.node)
        if row is not None:  # events of a node dropped meanwhile are ignored
            row.apply(update)
            self._refresh()

    def state_of(self, name: str) -> StepState:
        return self._rows[name].state

    def outcome_of(self, name: str) -> str:
        return self._rows[name].outcome

    def failed_nodes(self) -> list[str]:
        return [n for n, row in self._rows.items() if row.state in (StepState.FAILED, StepState.CANCELLED)]

    def all_ok(self) -> bool:
        return bool(self._rows) and all(row.state is StepState.OK for row in self._rows.values())

    # --- running, cancel, drop ---

    def set_running(self, running: bool) -> None:
        self._running = running
        self.cancel_button.setEnabled(running)
        for row in self._rows.values():
            row.set_busy(running)
        self._refresh()

    @property
    def running(self) -> bool:
        return self._running

    def mark_cancelled(self) -> None:
        for name, row in self._rows.items():
            if row.state in (StepState.RUNNING, StepState.WAITING):
                row.apply(RowUpdate(name, StepState.CANCELLED, "cancelled",
                                    outcome=f"{name}: cancelled before it finished; press Retry to run it again."))
        self._refresh()

    def _on_drop(self, name: str) -> None:
        row = self._rows.pop(name, None)
        if row is None:
            return
        row.setParent(None)
        row.deleteLater()
        self._dropped = name
        self.undo_label.setText(f"{name} was dropped from the cluster; it is not set up further.")
        self.undo_bar.show()
        self._refresh()
        self.drop_requested.emit(name)

    def _on_undo(self) -> None:
        name, self._dropped = self._dropped, None
        self.undo_bar.hide()
        if name is not None:
            self.undo_requested.emit(name)

    def restore_row(self, name: str, order: list[str]) -> NodeRow:
        """Put a node back (after Undo) at its place in ``order``."""
        row = self._add_row(name)
        for index, other in enumerate(order):
            if other == name:
                self._rows_box.insertWidget(index, row)
        self._rows = {n: self._rows[n] for n in order if n in self._rows}
        self._refresh()
        return row

    def _refresh(self) -> None:
        failed = self.failed_nodes()
        self.retry_button.setEnabled(bool(failed) and not self._running)
        ok = sum(1 for row in self._rows.values() if row.state is StepState.OK)
        total = len(self._rows)
        if self._running:
            text = f"Working… {ok} of {total} node(s) done."
        elif not total:
            text = "No nodes selected."
        elif failed:
            text = f"{ok} of {total} node(s) ready; {len(failed)} failed: retry or drop them."
        elif ok == total:
            text = f"All {total} node(s) ready."
        else:
            text = ""
        self.summary.setText(text)
