"""The nodes table: one row per node with its ranks, state, RAM, load, last step and last loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from cluster.run_status import RunState, RunStatus
from gui.series import RunSeries, SlowestRank

MAX_VISIBLE_ROWS = 8
COLUMNS = ("Node", "Ranks", "State", "RAM", "Load", "Step", "Loss")
STATE_COLORS = {
    "training": {"light": "#1a7f37", "dark": "#3fb950"},
    "done": {"light": "#1a7f37", "dark": "#3fb950"},
    "failed": {"light": "#cf222e", "dark": "#f85149"},
    "starting": {"light": "#9a6700", "dark": "#d29922"},
    "stopped": {"light": "#9a6700", "dark": "#d29922"},
}


@dataclass(frozen=True)
class NodeRow:
    node: str
    ranks: tuple[int, ...]
    state: str
    ram: str
    load: str
    step: str
    loss: str
    slowest: int | None = None  # the flagged rank, when it runs on this node


def format_bytes(value: float | None) -> str:
    if value is None:
        return "–"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def node_state(status: RunStatus | None, ranks: Sequence[int]) -> str:
    """What the node is doing in the run, judged from its ranks' events and the run's state."""
    if status is None or not ranks:
        return "idle"
    mine = [status.ranks[r] for r in ranks if r in status.ranks]
    if any(r.error for r in mine):
        return "failed"
    if mine and len(mine) == len(ranks) and all(r.done for r in mine):
        return "done"
    if status.state is RunState.STOPPED:
        return "stopped"
    if status.state is RunState.FAILED:
        return "failed"
    if status.state is RunState.FINISHED:
        return "done"
    if any(r.step > 0 for r in mine):
        return "training"
    return "starting"


def node_rows(nodes: Sequence[str], series: RunSeries | None, status: RunStatus | None,
              slowest: SlowestRank | None) -> list[NodeRow]:
    """Rows for ``nodes`` (in order); nodes with no ranks in the run are idle."""
    rows = []
    for node in nodes:
        ranks = tuple(series.ranks_on(node)) if series is not None else ()
        used, total = series.node_ram_now(node) if series is not None else (None, None)
        if used is None:
            ram = "–"
        elif total:
            ram = f"{format_bytes(used)} of {format_bytes(total)} ({used / total:.0%})"
        else:
            ram = format_bytes(used)
        load = series.node_load.get(node) if series is not None else None
        steps = [status.ranks[r].step for r in ranks if status is not None and r in status.ranks]
        losses = [status.ranks[r].loss for r in ranks if status is not None and r in status.ranks]
        losses = [loss for loss in losses if loss is not None]
        rows.append(NodeRow(
            node=node,
            ranks=ranks,
            state=node_state(status, ranks),
            ram=ram,
            load="–" if load is None else f"{load:.2f}",
            step=str(min(steps)) if steps and min(steps) > 0 else "–",
            loss=" / ".join(f"{loss:.3f}" for loss in losses) or "–",
            slowest=slowest.rank if slowest is not None and slowest.rank in ranks else None,
        ))
    return rows


class NodesTable(QTableWidget):
    """Shows ``NodeRow``s; rewritten in place on each dashboard tick (a few rows, cheap)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(COLUMNS), parent)
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.rows: list[NodeRow] = []

    def show_rows(self, rows: list[NodeRow]) -> None:
        if rows == self.rows:
            return
        if len(rows) != len(self.rows):
            self._fit_height(len(rows))
        self.rows = rows
        self.setRowCount(len(rows))
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        for index, row in enumerate(rows):
            ranks = ", ".join(map(str, row.ranks)) or "–"
            if row.slowest is not None:
                ranks += f"  ⚑ rank {row.slowest} slowest"
            values = (row.node, ranks, row.state, row.ram, row.load, row.step, row.loss)
            for column, value in enumerate(values):
                item = self.item(index, column)
                if item is None:
                    item = QTableWidgetItem()
                    self.setItem(index, column, item)
                item.setText(value)
                if column in (COLUMNS.index("Load"), COLUMNS.index("Step")):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            # A colour only where one means something; None leaves the palette's text colour, which follows a switch
            # between light and dark (a brush set from the palette stayed black on the dark background).
            colors = STATE_COLORS.get(row.state)
            warn = STATE_COLORS["starting"]["dark" if dark else "light"]
            self.item(index, COLUMNS.index("State")).setData(
                Qt.ItemDataRole.ForegroundRole, QColor(colors["dark" if dark else "light"]) if colors else None)
            self.item(index, COLUMNS.index("Ranks")).setData(
                Qt.ItemDataRole.ForegroundRole, QColor(warn) if row.slowest is not None else None)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.PaletteChange and self.rows:
            rows, self.rows = self.rows, []
            self.show_rows(rows)  # the state colours' light or dark variant
        super().changeEvent(event)

    def _fit_height(self, count: int) -> None:
        """Tall enough for every node up to MAX_VISIBLE_ROWS (the splitter gives the rest to the charts)."""
        rows = max(1, min(count, MAX_VISIBLE_ROWS))
        height = self.horizontalHeader().sizeHint().height() + rows * self.verticalHeader().defaultSectionSize()
        self.setMaximumHeight(height + 2 * self.frameWidth() + 2)

    def cell(self, node: str, column: str) -> str:
        """The text in ``column`` of ``node``'s row (for tests)."""
        for index, row in enumerate(self.rows):
            if row.node == node:
                return self.item(index, COLUMNS.index(column)).text()
        raise KeyError(node)


__all__ = ["COLUMNS", "NodeRow", "NodesTable", "format_bytes", "node_rows", "node_state"]
