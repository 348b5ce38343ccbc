"""The nodes table: state colours and the slowest flag follow a switch between light and dark."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from gui.dashboard.nodes_table import COLUMNS, STATE_COLORS, NodeRow, NodesTable
from gui.theme import dark_palette, light_palette


def test_colours_follow_a_switch_to_dark(qtbot):
    table = NodesTable()
    qtbot.addWidget(table)
    table.show()
    table.show_rows([NodeRow("node1", (0, 1), "training", "1 GB", "0.5", "10", "2.0"),
                     NodeRow("node2", (2, 3), "training", "1 GB", "0.5", "10", "2.1", slowest=2)])
    app = QApplication.instance()
    before = app.palette()
    try:
        app.setPalette(dark_palette())
        qtbot.wait(10)

        def foreground(row: int, column: str):
            return table.item(row, COLUMNS.index(column)).data(Qt.ItemDataRole.ForegroundRole)

        # Plain cells carry no colour of their own: the (dark) palette's text colour draws them.
        assert foreground(0, "Ranks") is None
        assert QColor(foreground(0, "State")) == QColor(STATE_COLORS["training"]["dark"])
        assert QColor(foreground(1, "Ranks")) == QColor(STATE_COLORS["starting"]["dark"])
        app.setPalette(light_palette())  # and back
        qtbot.wait(10)
        assert QColor(foreground(0, "State")) == QColor(STATE_COLORS["training"]["light"])
    finally:
        app.setPalette(before)
