"""The run's log: every rank's lines (events as short sentences, other lines as they are) with a rank filter.

Lines arrive in batches of hundreds while a history replays; only the last ``MAX_SHOWN`` that pass the
filter are formatted and inserted, in one edit per batch, and the text widget drops older blocks itself.
The last ``HISTORY`` lines are kept so changing the filter can show a rank's lines from before.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence

from PySide6.QtGui import QColor, QFont, QFontDatabase, QPalette, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from cluster.run_monitor import FollowedLine
from trainer.blas import slow_blas_warning
from trainer.events import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    NodeEvent,
    RawLine,
    StartEvent,
    StepEvent,
)

from gui.theme import heading

MAX_SHOWN = 5_000
HISTORY = 50_000
ALL = "all"
OTHER = "other"  # lines of no rank: the launcher's own (MPI banners and errors)

_ERROR_WORDS = re.compile(r"\b(error|traceback|exception|fatal|killed|abort(ed)?|failed)\b", re.IGNORECASE)
ERROR_COLORS = {"light": "#cf222e", "dark": "#f85149"}


def describe(line: FollowedLine) -> str | None:
    """The text shown for a line (None: not shown, e.g. node memory reports, which the nodes table shows)."""
    event = line.event
    if isinstance(event, RawLine):
        return event.text
    if isinstance(event, StepEvent):
        parts = [f"step {event.step}", f"loss {event.loss:.4f}"]
        if event.loss_mean is not None:
            parts.append(f"(mean {event.loss_mean:.4f})")
        if event.step_time_s is not None:
            parts.append(f"{event.step_time_s * 1000:.0f} ms")
        if event.tokens_per_s is not None:
            parts.append(f"{event.tokens_per_s:,.0f} tok/s")
        if event.learning_rate is not None:
            parts.append(f"lr {event.learning_rate:.2e}")
        return "  ".join(parts)
    if isinstance(event, NodeEvent):
        return None
    if isinstance(event, StartEvent):
        details = [f"world size {event.world_size}"]
        if event.parameters:
            details.append(f"{event.parameters:,} parameters")
        if event.mlx_version:
            details.append(f"MLX {event.mlx_version}")
        host = f" on {event.host}" if event.host else ""
        warning = slow_blas_warning(event.blas, (event.config or {}).get("blas"))
        return f"started{host}: " + ", ".join(details) + (f"\nWARNING: {warning}" if warning else "")
    if isinstance(event, EvalEvent):
        return f"eval after step {event.step}: validation loss {event.val_loss:.4f}"
    if isinstance(event, CheckpointEvent):
        return f"checkpoint of step {event.step} saved to {event.path}"
    if isinstance(event, DoneEvent):
        after = f" after step {event.step}" if event.step is not None else ""
        took = f" in {event.elapsed_s:.1f} s" if event.elapsed_s is not None else ""
        return f"done{after}{took}"
    if isinstance(event, ErrorEvent):
        text = f"ERROR: {event.message}"
        return f"{text}\n{event.traceback.rstrip()}" if event.traceback else text
    return line.text


def is_error(line: FollowedLine) -> bool:
    if isinstance(line.event, ErrorEvent):
        return True
    return isinstance(line.event, RawLine) and bool(_ERROR_WORDS.search(line.text))


def prefix(rank: int | None) -> str:
    return "[launcher] " if rank is None else f"[rank {rank}] "


class LogPane(QWidget):
    """A rank filter over a read-only text view of the run's lines; errors in red."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._history: deque[FollowedLine] = deque(maxlen=HISTORY)
        self.filter = QComboBox()
        self.filter.setAccessibleName("Show lines of")
        self.filter.currentIndexChanged.connect(self._on_filter_chosen)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_SHOWN)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("The ranks' output appears here.")
        header = QHBoxLayout()
        title = heading(QLabel("Log"))
        header.addWidget(title)
        header.addStretch(1)
        header.addWidget(QLabel("Show:"))
        header.addWidget(self.filter)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.text, 1)
        self.set_world_size(0)

    # -- the filter ------------------------------------------------------------------------------

    def set_world_size(self, world_size: int) -> None:
        """Offer "All", each rank, and the launcher's own lines."""
        current = self.current_filter()
        self.filter.blockSignals(True)
        self.filter.clear()
        self.filter.addItem("All ranks", ALL)
        for rank in range(world_size):
            self.filter.addItem(f"rank {rank}", rank)
        self.filter.addItem("launcher / other", OTHER)
        index = self.filter.findData(current)
        self.filter.setCurrentIndex(index if index >= 0 else 0)
        self.filter.blockSignals(False)

    def current_filter(self) -> int | str:
        data = self.filter.currentData()
        return ALL if data is None else data

    def choose(self, choice: int | str) -> None:
        """Show only ``choice``'s lines (a rank number, ``ALL`` or ``OTHER``)."""
        index = self.filter.findData(choice)
        if index < 0:
            raise ValueError(f"no filter {choice!r}")
        self.filter.setCurrentIndex(index)

    def _passes(self, line: FollowedLine, choice: int | str) -> bool:
        if choice == ALL:
            return True
        if choice == OTHER:
            return line.rank is None
        return line.rank == choice

    def _on_filter_chosen(self, _index: int) -> None:
        self.text.clear()
        self._insert(self._newest_shown(self._history))

    # -- lines -----------------------------------------------------------------------------------

    def clear(self) -> None:
        self._history.clear()
        self.text.clear()

    def append_lines(self, lines: Sequence[FollowedLine]) -> None:
        """Add a batch: kept for the filter, and the newest ones that pass it shown."""
        self._history.extend(lines)
        self._insert(self._newest_shown(lines))

    def _newest_shown(self, lines: Sequence[FollowedLine]) -> list[tuple[str, bool]]:
        """The newest lines that pass the filter, oldest first, formatted; at most MAX_SHOWN of them.

        Only the tail can still be on screen, so nothing older is formatted.
        """
        choice = self.current_filter()
        shown: list[tuple[str, bool]] = []
        for line in reversed(lines):
            if not self._passes(line, choice):
                continue
            text = describe(line)
            if text is not None:
                shown.append((prefix(line.rank) + text, is_error(line)))
                if len(shown) >= MAX_SHOWN:
                    break
        shown.reverse()
        return shown

    def _insert(self, shown: list[tuple[str, bool]]) -> None:
        if not shown:
            return
        bar = self.text.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 2
        cursor = QTextCursor(self.text.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        plain = QTextCharFormat()
        error = QTextCharFormat()
        error.setForeground(QColor(ERROR_COLORS["dark" if self._dark() else "light"]))
        error.setFontWeight(QFont.Weight.Bold)
        first = self.text.document().isEmpty()
        # Consecutive lines of the same kind go in with one insert.
        run: list[str] = []
        run_is_error = shown[0][1]
        for text, bad in shown:
            if bad != run_is_error and run:
                cursor.insertText(("" if first else "\n") + "\n".join(run), error if run_is_error else plain)
                first = False
                run = []
            run_is_error = bad
            run.append(text)
        if run:
            cursor.insertText(("" if first else "\n") + "\n".join(run), error if run_is_error else plain)
        cursor.endEditBlock()
        if follow:
            bar.setValue(bar.maximum())

    def _dark(self) -> bool:
        return self.palette().color(QPalette.ColorRole.Base).lightness() < 128

    def shown_lines(self) -> list[str]:
        """The lines on screen (for tests and copying)."""
        return self.text.toPlainText().split("\n") if not self.text.document().isEmpty() else []

    def error_lines(self) -> list[str]:
        """The lines on screen drawn as errors."""
        errors = []
        block = self.text.document().firstBlock()
        while block.isValid():
            it = block.begin()
            if not it.atEnd() and it.fragment().charFormat().fontWeight() == QFont.Weight.Bold:
                errors.append(block.text())
            block = block.next()
        return errors


__all__ = ["ALL", "LogPane", "MAX_SHOWN", "OTHER", "describe", "is_error"]
