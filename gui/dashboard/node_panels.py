"""The per-node view: one compact panel per node with its ranks' loss curves and the node's RAM."""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtWidgets import QGridLayout, QProgressBar, QScrollArea, QVBoxLayout, QWidget

from gui.dashboard.nodes_table import NodeRow, format_bytes
from gui.rank_charts import Chart, is_dark, rank_color
from gui.series import RunSeries


class NodePanel(QWidget):
    """A node's title line (ranks, state), a RAM bar, and a small chart of its ranks' loss."""

    def __init__(self, node: str, series: RunSeries, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node = node
        self.series = series
        self.chart = Chart(node, "loss")
        self.chart.plot.setLabel("bottom", "")
        self.chart.plot_widget.setMinimumHeight(110)
        self.chart.apply_palette(self.palette())
        self.ram = QProgressBar()
        self.ram.setRange(0, 1000)
        self.ram.setFormat("RAM –")
        self.ram.setAccessibleName(f"RAM of {node}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(2)
        layout.addWidget(self.chart, 1)
        layout.addWidget(self.ram)
        self.ranks: list[int] = []
        self.sync_ranks()

    def sync_ranks(self) -> None:
        ranks = self.series.ranks_on(self.node)
        if ranks == self.ranks:
            return
        self.chart.remove_curves()
        world = self.series.world_size
        dark = is_dark(self.palette())
        for rank in ranks:
            self.chart.add_curve(f"rank:{rank}", self.series.rank(rank)["loss"],
                                 pg.mkPen(rank_color(rank, world, dark=dark), width=1), name=f"rank {rank}")
        self.ranks = ranks

    def redraw(self, row: NodeRow | None) -> int:
        self.sync_ranks()
        if row is not None:
            ranks = ("rank " if len(row.ranks) == 1 else "ranks ") + (", ".join(map(str, row.ranks)) or "none")
            flag = f" · ⚑ rank {row.slowest} slowest" if row.slowest is not None else ""
            self.chart.title.setText(f"{self.node} · {ranks} · {row.state} · step {row.step}{flag}")
        used, total = self.series.node_ram_now(self.node)
        if used is not None and total:
            self.ram.setValue(int(1000 * min(1.0, used / total)))
            self.ram.setFormat(f"RAM {format_bytes(used)} of {format_bytes(total)} ({used / total:.0%})")
        elif used is not None:
            self.ram.setFormat(f"RAM {format_bytes(used)}")
        updated = self.chart.redraw()
        if updated:
            # The auto-range now, as RankCharts does: left to the paint, it changes the axes mid-paint (two paints).
            self.chart.view.prepareForPaint()
        return updated


class NodePanels(QScrollArea):
    """Panels for every node of the run, in a grid that scrolls when there are many."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self._inner = QWidget()
        self._grid = QGridLayout(self._inner)
        self._grid.setContentsMargins(4, 4, 4, 4)
        self._grid.setSpacing(8)
        self.setWidget(self._inner)
        self.series = RunSeries()
        self.panels: dict[str, NodePanel] = {}

    def set_run(self, series: RunSeries) -> None:
        for panel in self.panels.values():
            self._grid.removeWidget(panel)
            panel.deleteLater()
        self.panels = {}
        self.series = series
        self._sync_nodes()

    def _sync_nodes(self) -> None:
        nodes = self.series.nodes()
        if list(self.panels) == nodes:
            return
        columns = 1 if len(nodes) <= 1 else 2 if len(nodes) <= 4 else 3 if len(nodes) <= 9 else 4
        for node in nodes:
            if node not in self.panels:
                self.panels[node] = NodePanel(node, self.series, self._inner)
        for panel in self.panels.values():
            self._grid.removeWidget(panel)
        for index, node in enumerate(nodes):
            self._grid.addWidget(self.panels[node], index // columns, index % columns)
        rows = math.ceil(len(nodes) / columns) if nodes else 0
        for row in range(rows):
            self._grid.setRowStretch(row, 1)

    def redraw(self, rows: list[NodeRow]) -> int:
        self._sync_nodes()
        by_node = {row.node: row for row in rows}
        return sum(panel.redraw(by_node.get(node)) for node, panel in self.panels.items())

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.Type.PaletteChange:
            for panel in self.panels.values():
                panel.chart.apply_palette(self.palette())
        super().changeEvent(event)


__all__ = ["NodePanel", "NodePanels"]
