"""Export: write hostfile, hosts.json, ssh_config and mpirun.sh to a folder and show the commands to copy."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cluster.errors import ClusterError
from cluster.home import CorralHome
from gui.messages import show_error
from gui.settings import EXPORT_FOLDER, read_text, write_text
from gui.theme import status_color


class ExportDialog(QDialog):
    """Choose a folder, press Export; the files are written and the equivalent commands shown with Copy buttons."""

    def __init__(self, home: CorralHome, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.home = home
        self.result_ = None
        self.setWindowTitle("Export the cluster for the terminal")
        self.setMinimumWidth(720)
        intro = QLabel("Writes an Open MPI hostfile, an MLX hosts.json, an ssh_config and mpirun.sh, so the cluster "
                       "works from a terminal without corral.")
        intro.setWordWrap(True)
        self.folder_edit = QLineEdit(read_text(EXPORT_FOLDER, str(Path.home() / "corral-export")))
        browse = QPushButton("Choose…")
        browse.clicked.connect(self._browse)
        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.export)
        row = QHBoxLayout()
        row.addWidget(QLabel("Folder:"))
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        row.addWidget(self.export_button)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.commands = QGridLayout()
        self.command_edits: dict[str, QLineEdit] = {}
        for index, (key, label) in enumerate((("script", "Run a program on every node:"),
                                              ("mpirun", "The same with mpirun itself:"),
                                              ("mlx", "With MLX's launcher (after `corral ssh-config --install`):"))):
            edit = QLineEdit()
            edit.setReadOnly(True)
            edit.setFont(QFont("monospace"))
            edit.setCursorPosition(0)
            copy = QPushButton("Copy")
            copy.setEnabled(False)
            copy.clicked.connect(lambda _=False, e=edit: self.copy(e))
            edit.textChanged.connect(lambda text, b=copy: b.setEnabled(bool(text)))
            self.commands.addWidget(QLabel(label), index * 2, 0, 1, 2)
            self.commands.addWidget(edit, index * 2 + 1, 0)
            self.commands.addWidget(copy, index * 2 + 1, 1)
            self.command_edits[key] = edit
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addLayout(self.commands)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into", self.folder_edit.text() or str(Path.home()))
        if folder:
            self.folder_edit.setText(folder)

    def export(self) -> bool:
        from cluster.export import export_cluster
        from cluster.state import load_cluster

        folder = self.folder_edit.text().strip()
        try:
            if not folder:
                raise ClusterError("Folder: choose where to write the files, e.g. ~/corral-export.")
            inventory = load_cluster(self.home)
            if not inventory.nodes:
                raise ClusterError("The cluster has no nodes yet; set it up first (Cluster › Set up a cluster).")
            result = export_cluster(inventory, self.home, Path(folder))
        except ClusterError as exc:
            self._set_status(str(exc), error=True)
            return False
        except OSError as exc:
            self._set_status(f"Could not write into {folder} ({exc.strerror}); choose a folder you can write to.",
                             error=True)
            return False
        except Exception as exc:  # noqa: BLE001 - a bug: the crash dialog shows and saves it
            show_error(self, exc)
            return False
        self.result_ = result
        write_text(EXPORT_FOLDER, folder)
        self._set_status("Wrote " + ", ".join(path.name for path in result.files) + f" in {result.directory}.")
        self.command_edits["script"].setText(f"{result.directory / 'mpirun.sh'} PROGRAM [ARGS...]")
        self.command_edits["mpirun"].setText(result.mpirun_command)
        self.command_edits["mlx"].setText(result.mlx_launch_command)
        for edit in self.command_edits.values():
            edit.setCursorPosition(0)
        return True

    def copy(self, edit: QLineEdit) -> None:
        QGuiApplication.clipboard().setText(edit.text())
        self._set_status("Copied to the clipboard: " + edit.text()[:80] + ("…" if len(edit.text()) > 80 else ""))

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {status_color('fail')}" if error else "")
