"""The run selector: the run history, newest first, with each run's state; choosing one shows it."""

from __future__ import annotations

import time
from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QWidget

from cluster.runs import RunRecord

LIVE_STATES = ("starting", "running")


def is_live(record: RunRecord) -> bool:
    """The record says the run was going when corral last looked (following it tells for sure)."""
    return record.state in LIVE_STATES and record.ended is None


def describe_run(record: RunRecord) -> str:
    """``20261121-120512-ab12 · running · 3 nodes, 3 ranks · step 120 of 300``."""
    where = "this computer" if record.local else f"{len(record.nodes)} node{'s' * (len(record.nodes) != 1)}"
    parts = [record.id, record.state, f"{where}, {record.world_size} rank{'s' * (record.world_size != 1)}"]
    if record.step:
        parts.append(f"step {record.step}" + (f" of {record.total_steps}" if record.total_steps else ""))
    return " · ".join(parts)


def latest_to_show(records: Sequence[RunRecord]) -> RunRecord | None:
    """What the dashboard opens on: the newest live run, else the newest run."""
    for record in records:
        if is_live(record):
            return record
    return records[0] if records else None


class RunSelector(QComboBox):
    """Lists runs; ``run_chosen`` fires when the user picks one (not when the list is refreshed)."""

    run_chosen = Signal(object)  # RunRecord

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Run")
        self.setMinimumContentsLength(42)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setPlaceholderText("No runs yet")
        self.records: list[RunRecord] = []
        self.activated.connect(self._on_activated)

    def show_runs(self, records: Sequence[RunRecord], current_id: str | None) -> None:
        self.blockSignals(True)
        self.records = list(records)
        self.clear()
        for record in self.records:
            self.addItem(describe_run(record), record.id)
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            self.setItemData(self.count() - 1, f"started {created} on {', '.join(record.nodes)}",
                             Qt.ItemDataRole.ToolTipRole)
        index = self.findData(current_id) if current_id else -1
        self.setCurrentIndex(index)
        self.blockSignals(False)

    def show_progress(self, run_id: str, state: str, step: int, total_steps: int | None) -> None:
        """Keep the shown run's entry current while it is followed (the record on disk lags behind)."""
        index = self.findData(run_id)
        if index < 0:
            return
        record = self.records[index].updated(state=state, step=step or None, total_steps=total_steps)
        self.records[index] = record
        text = describe_run(record)
        if self.itemText(index) != text:
            self.setItemText(index, text)

    def _on_activated(self, index: int) -> None:
        if 0 <= index < len(self.records):
            self.run_chosen.emit(self.records[index])

    def choose(self, run_id: str) -> None:
        """Pick a run as the user would."""
        index = self.findData(run_id)
        if index < 0:
            raise KeyError(run_id)
        self.setCurrentIndex(index)
        self._on_activated(index)


__all__ = ["RunSelector", "describe_run", "is_live", "latest_to_show"]
