"""The export dialog writes the four files with the core's export and shows the commands with Copy buttons."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication

from cluster.home import CorralHome
from cluster.inventory import Inventory, Node
from cluster.state import save_cluster
from gui.export_dialog import ExportDialog
from gui.settings import EXPORT_FOLDER, read_text
from tests.gui.wizard_fakes import isolated_settings  # noqa: F401 - fixture


def test_export_writes_the_files_and_shows_commands_to_copy(qtbot, tmp_path):
    home = CorralHome(tmp_path / "home")
    save_cluster(home, Inventory((Node("node1", "10.0.0.11", user="lab1"), Node("node2", "10.0.0.12", user="lab2"))))
    dialog = ExportDialog(home)
    qtbot.addWidget(dialog)
    target = tmp_path / "out"
    dialog.folder_edit.setText(str(target))
    dialog.export_button.click()
    assert sorted(p.name for p in target.iterdir()) == ["hostfile", "hosts.json", "mpirun.sh", "ssh_config"]
    assert "lab1@10.0.0.11" in (target / "hostfile").read_text()
    mpirun = dialog.command_edits["mpirun"].text()
    assert mpirun.startswith("mpirun") and str(target / "hostfile") in mpirun
    assert "mlx.launch" in dialog.command_edits["mlx"].text()
    assert "Wrote hostfile, hosts.json, ssh_config, mpirun.sh" in dialog.status.text()
    copy_buttons = [w for w in dialog.findChildren(type(dialog.export_button)) if w.text() == "Copy"]
    assert all(button.isEnabled() for button in copy_buttons)
    copy_buttons[1].click()
    assert QGuiApplication.clipboard().text() == mpirun
    assert read_text(EXPORT_FOLDER) == str(target)


def test_export_without_nodes_says_what_to_do(qtbot, tmp_path):
    dialog = ExportDialog(CorralHome(tmp_path / "home"))
    qtbot.addWidget(dialog)
    dialog.folder_edit.setText(str(tmp_path / "out"))
    assert not dialog.export()
    assert "no nodes yet; set it up first" in dialog.status.text()
    assert not (tmp_path / "out").exists()
