"""Keys: install corral's SSH key on each node with its password, then node-to-node access; saves nodes as they succeed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QLabel

from cluster.errors import ClusterError
from cluster.inventory import Node
from gui.messages import show_error
from gui.setup_wizard.core import NodeStep, StepState
from gui.setup_wizard.node_progress import RowUpdate
from gui.setup_wizard.step_page import StepPage

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard


class KeysPage(StepPage):
    key = "keys"

    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__(wizard)
        self.setTitle("Install corral's key")
        self.setSubTitle("Each machine gets corral's SSH key (using its password once), then every machine learns to "
                         "reach the others by key, as mpirun needs.")
        intro = QLabel("Machines that already accept corral's key need no password.")
        intro.setWordWrap(True)
        self.body.addWidget(intro)
        self.body.addWidget(self.progress, 1)
        self.body.addWidget(self.error_label)

    def done_text(self, name: str) -> str:
        return "corral's key works and node-to-node access is set up."

    def start_work(self, names: list[str], report: Callable[[object], None]) -> Awaitable[object]:
        ctx = self.ctx
        nodes = [ctx.node(name) for name in names]
        mesh_nodes = [ctx.node(name) for name in ctx.selected_names() if name in names or name in ctx.state.keyed]
        trusted = dict(ctx.trusted_fingerprints)
        passwords = {name: ctx.password_for(name) for name in names}
        questions = ctx.questions

        async def confirm(node: Node, fingerprint: str) -> bool:
            if trusted.get(node.name) == fingerprint:
                return True
            return await questions.confirm(node, fingerprint)

        async def ask_password(node: Node) -> str | None:
            return passwords.get(node.name)

        return ctx.core.install_keys(nodes, mesh_nodes, confirm, ask_password, report)

    def to_updates(self, event: object) -> Sequence[RowUpdate]:
        if not isinstance(event, NodeStep):
            return []
        if event.state in (StepState.OK, StepState.FAILED):
            return [RowUpdate(event.node, event.state, "done" if event.state is StepState.OK else "failed",
                              outcome=event.text)]
        return [RowUpdate(event.node, event.state, event.text)]

    def finish(self, names: list[str], result: object) -> None:
        results: dict[str, str | None] = result  # type: ignore[assignment]  # install_keys' mapping
        state = self.ctx.state
        for name, failure in results.items():
            if name not in self.progress.names():
                continue
            if failure is None:
                if name not in state.keyed:
                    state.keyed.append(name)
                if self.progress.state_of(name) is not StepState.OK:
                    self.progress.apply(RowUpdate(name, StepState.OK, "done", outcome=self.done_text(name)))
            else:
                if name in state.keyed:
                    state.keyed.remove(name)
                self.progress.apply(RowUpdate(name, StepState.FAILED, "failed", outcome=failure))
        try:
            self.ctx.write_inventory()  # the nodes that succeeded are the cluster from now on
        except ClusterError as exc:
            show_error(self, exc)
