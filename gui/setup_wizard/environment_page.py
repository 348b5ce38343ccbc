"""Environment: the same venv (MLX, mpi4py, the project's requirements) on every node, online or with pushed wheels."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QButtonGroup, QHBoxLayout, QPushButton, QRadioButton, QVBoxLayout

from gui.setup_wizard.core import StepState
from gui.setup_wizard.node_progress import RowUpdate
from gui.setup_wizard.step_page import StepPage

if TYPE_CHECKING:
    from gui.setup_wizard.wizard import SetupWizard

# Rough share of a node's install each step stands for, so the bar moves forward.
STEP_PERCENT = {"probing": 5, "downloading wheels": 15, "copying wheels": 35, "creating venv": 50,
                "installing": 65, "verifying": 90}


class EnvironmentPage(StepPage):
    key = "environment"
    auto_start = False  # the user picks online or pushed wheels first

    def __init__(self, wizard: SetupWizard) -> None:
        super().__init__(wizard)
        self.setTitle("Build the Python environment on every node")
        self.setSubTitle("Each node gets a venv with MLX, mpi4py and your project's requirements.txt, the same "
                         "versions everywhere. It is rebuilt only when something changed.")
        self.online = QRadioButton("The nodes download packages themselves (they have internet)")
        self.push = QRadioButton("This computer downloads the packages and copies them over (nodes without internet)")
        group = QButtonGroup(self)
        group.addButton(self.online)
        group.addButton(self.push)
        self.build_button = QPushButton("Build environments")
        self.build_button.clicked.connect(lambda: self.run_for(self.ctx.selected_names()))
        choices = QVBoxLayout()
        choices.addWidget(self.online)
        choices.addWidget(self.push)
        row = QHBoxLayout()
        row.addLayout(choices, 1)
        row.addWidget(self.build_button)
        self.body.addLayout(row)
        self.body.addWidget(self.progress, 1)
        self.body.addWidget(self.error_label)

    def initializePage(self) -> None:
        (self.push if self.ctx.state.wheels == "push" else self.online).setChecked(True)
        super().initializePage()

    def done_text(self, name: str) -> str:
        return "The venv is ready (built earlier)."

    def set_wheels(self, mode: str) -> None:
        (self.push if mode == "push" else self.online).setChecked(True)

    def before_start(self, names: list[str]) -> None:
        self.ctx.state.wheels = "push" if self.push.isChecked() else "online"
        self.ctx.save()
        self.inventory = self.ctx.write_inventory()

    def start_work(self, names: list[str], report: Callable[[object], None]) -> Awaitable[object]:
        return self.ctx.core.build_env(self.inventory, names, self.ctx.state.wheels, report)

    def to_updates(self, event: object) -> Sequence[RowUpdate]:
        from cluster.remote_env import EnvProgress, EnvStep

        if not isinstance(event, EnvProgress):
            return []
        if event.step is EnvStep.FAILED:
            return [RowUpdate(event.node, StepState.FAILED, "failed", outcome=event.detail)]
        if event.step in (EnvStep.DONE, EnvStep.UNCHANGED):
            return [RowUpdate(event.node, StepState.OK, event.step.value, 100)]
        text = event.step.value + (f" ({event.detail})" if event.detail else "")
        return [RowUpdate(event.node, StepState.RUNNING, text, STEP_PERCENT.get(event.step.value))]

    def finish(self, names: list[str], result: object) -> None:
        for outcome in result:  # type: ignore[attr-defined]  # list of NodeOutcome[NodeEnv]
            name = outcome.node.name
            if name not in self.progress.names():
                continue
            if outcome.ok:
                env = outcome.value
                what = "installed" if env.action == "installed" else "already up to date"
                self.progress.apply(RowUpdate(name, StepState.OK, what, 100, outcome=(
                    f"Python {env.python_version}, MLX {env.mlx_version}, mpi4py {env.mpi4py_version} on "
                    f"{env.platform}: {what} ({env.installer}, {outcome.elapsed_s:.1f} s).")))
            else:
                self.progress.apply(RowUpdate(name, StepState.FAILED, "failed", outcome=outcome.message))
