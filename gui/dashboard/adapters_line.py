"""Under the run line: where a LoRA run's adapters were copied on this computer, with a button that opens the folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget


def _open_url(url: QUrl) -> bool:
    return QDesktopServices.openUrl(url)


# Tests replace this to see what would be opened without starting a file manager.
open_url: Callable[[QUrl], bool] = _open_url


class AdaptersLine(QWidget):
    """``Adapters saved to PATH  [Open folder]``; hidden for runs without adapters copied back."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path: str | None = None
        self.label = QLabel()
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # A long path must not set the window's minimum width: it is cut instead (the tooltip has it whole).
        self.label.setMinimumWidth(1)
        self.open_button = QPushButton("Open folder")
        self.open_button.setToolTip("Show the adapters folder in the file manager")
        self.open_button.clicked.connect(self.open_folder)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        layout.addWidget(self.open_button)
        layout.addStretch(1)
        self.setVisible(False)

    def show_path(self, path: str | None) -> None:
        """Show where the adapters are (None hides the line); cheap when nothing changed (it runs on every redraw)."""
        if path == self.path:
            return
        self.path = path
        self.setVisible(path is not None)
        if path is None:
            return
        self.label.setText(f"Adapters saved to {path}")
        self.label.setToolTip(f"{path}\nLoad them with mlx_lm.load(model, adapter_path=this folder); see docs/lora.md")
        there = Path(path).is_dir()
        self.open_button.setEnabled(there)
        if not there:
            self.label.setText(f"Adapters saved to {path} (no longer there)")

    def open_folder(self) -> None:
        if self.path is None:
            return
        if not Path(self.path).is_dir():
            # Moved or deleted since the run ended: say so instead of opening nothing.
            self.label.setText(f"Adapters saved to {self.path} (no longer there)")
            self.open_button.setEnabled(False)
            return
        if not open_url(QUrl.fromLocalFile(self.path)):
            self.label.setText(f"Adapters saved to {self.path} (no file manager opened it; the path can be copied)")


__all__ = ["AdaptersLine", "open_url"]
