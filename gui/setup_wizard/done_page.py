"""Done: the cluster is saved and checked; what was set up, and where to go next."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWizardPage

from cluster.errors import ClusterError
from cluster.state import load_cluster

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard


class DonePage(QWizardPage):
    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__()
        self.ctx = wizard
        self.setTitle("Your cluster is ready")
        self.setFinalPage(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.export_button = QPushButton("Export for the terminal…")
        self.export_button.clicked.connect(self._export)
        row = QHBoxLayout()
        row.addWidget(self.export_button)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addLayout(row)
        layout.addStretch(1)

    def initializePage(self) -> None:
        self.ctx.state.mark_completed("done")
        self.ctx.save()
        try:
            inventory = load_cluster(self.ctx.home)
        except ClusterError as exc:
            self.summary.setText(str(exc))
            return
        nodes = "".join(f"<li><b>{n.name}</b> — {n.user}@{n.address} ({n.slots} rank{'s' if n.slots > 1 else ''})</li>"
                        for n in inventory.nodes)
        network = inventory.effective_network() or "not set"
        self.summary.setText(
            f"<p>{len(inventory.nodes)} node(s), {inventory.total_slots()} rank(s) in total, saved in "
            f"<code>{self.ctx.home.inventory_path}</code>:</p><ul>{nodes}</ul>"
            f"<p>MPI network: {network}{'' if inventory.network else ' (the nodes’ own subnet)'}<br>"
            f"Project: <code>{inventory.project or '—'}</code></p>"
            "<p>Press <b>Open the dashboard</b> to start training and watch every rank live. The same cluster works "
            "from the terminal: <code>corral exec -- hostname</code>, <code>corral doctor</code>.</p>")

    def _export(self) -> None:
        from gui.export_dialog import ExportDialog

        ExportDialog(self.ctx.home, self).exec()
