"""The dashboard: start and stop runs, pick one from the history, and watch it live (nodes, charts, per-node view, log).

Following a run replays its whole history, then streams it live; lines reach the GUI thread in batches
through the bridge, are folded into the run's series in time slices (a long history never freezes the
window), and everything on screen is redrawn by one ~10 Hz timer, never per line. Closing the window only
stops following: training goes on, and the next dashboard attaches to the newest live run by itself.
Stopping a run is the Stop action's job alone, after a confirmation.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from PySide6.QtCore import QEvent, QTimer, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from cluster.errors import ClusterError
from cluster.home import CorralHome
from cluster.run_monitor import FollowedLine
from cluster.run_status import RunState, RunStatus
from cluster.runs import RunRecord
from gui import chart_export
from gui.bridge import Bridge, Job
from gui.dashboard.adapters_line import AdaptersLine
from gui.dashboard.config_chooser import ConfigChooser, ConfigLine, ConfigSummary
from gui.dashboard.log_pane import LogPane
from gui.dashboard.node_panels import NodePanels
from gui.dashboard.nodes_table import NodesTable, node_rows
from gui.dashboard.run_selector import RunSelector, describe_run, latest_to_show
from gui.messages import report_crash, show_error
from gui.rank_charts import SLOWEST_MIN_EXCESS, RankCharts
from gui.series import RunSeries
from gui.theme import status_color
from trainer.events import RawLine

REDRAW_INTERVAL_MS = 100  # ~10 Hz: smooth enough for training curves, cheap with 8 ranks
INGEST_SLICE = 1_000  # lines folded per slice while a history replays (~15 ms), then the GUI breathes


def _ask(parent: QWidget, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


# Tests replace this to answer the Stop confirmation without a modal dialog.
confirm: Callable[[QWidget, str, str], bool] = _ask


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _default_run_api() -> ModuleType:
    import cluster.launch

    return cluster.launch


class Dashboard(QWidget):
    """Start/Stop, the run selector, the nodes table, the charts, the per-node view and the log of one run."""

    run_followed = Signal(str)  # run id: its history is being replayed and it is followed live
    run_ended = Signal(object)  # the final RunStatus of the followed run
    lines_ingested = Signal(int)  # how many lines the last slice folded (tests wait on this)

    def __init__(self, bridge: Bridge, home: CorralHome, parent: QWidget | None = None, *,
                 run_api: Any = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.home = home
        # cluster.launch or a stand-in with the same functions (tests replay recordings through one).
        self.api = run_api if run_api is not None else _default_run_api()
        self.record: RunRecord | None = None
        self.status: RunStatus | None = None
        self.series = RunSeries()
        self.inventory_nodes: list[str] = []
        self.follow_job: Job | None = None
        self.start_job: Job | None = None
        self.stop_job: Job | None = None
        self.refresh_job: Job | None = None
        self.message = ""  # the last launch/stop sentence, shown under the run line
        self._pending: deque[FollowedLine] = deque()
        self._log_batch: list[FollowedLine] = []
        self._follow_over = False
        self._attached_once = False
        self._drawn_status: tuple | None = None

        self.start_action = QAction("Start training", self)
        self.start_action.triggered.connect(lambda: self.start_run())
        self.stop_action = QAction("Stop training", self)
        self.stop_action.setToolTip("Stop the run on every node (asks first)")
        self.stop_action.triggered.connect(self.stop_run)
        self.stop_action.setEnabled(False)
        self.refresh_action = QAction("Refresh runs", self)
        self.refresh_action.triggered.connect(self.refresh)
        self.export_png_action = QAction("Export charts as PNG…", self)
        self.export_png_action.triggered.connect(self._on_export_png)
        self.export_csv_action = QAction("Export chart data as CSV…", self)
        self.export_csv_action.triggered.connect(self._on_export_csv)

        self.run_selector = RunSelector()
        self.run_selector.run_chosen.connect(self.follow)
        self.config_chooser = ConfigChooser()
        self.config_line = ConfigLine()
        self.config_chooser.choice_changed.connect(self._on_choice_changed)
        self._set_start_tooltip()
        self.adapters_line = AdaptersLine()
        self.run_line = QLabel("No run yet: Start trains the bundled model on your cluster.")
        self.run_line.setTextFormat(Qt.TextFormat.PlainText)
        self.run_line.setWordWrap(True)
        self.run_line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.nodes_table = NodesTable()
        self.charts = RankCharts()
        self.node_panels = NodePanels()
        self.log_pane = LogPane()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.charts, "Charts")
        self.tabs.addTab(self.node_panels, "Per node")
        self.tabs.currentChanged.connect(lambda _index: self._redraw())
        self._build_layout()

        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(REDRAW_INTERVAL_MS)
        self._redraw_timer.timeout.connect(self._redraw)
        self._redraw_timer.start()
        self._ingest_timer = QTimer(self)
        self._ingest_timer.setSingleShot(True)
        self._ingest_timer.setInterval(0)
        self._ingest_timer.timeout.connect(self._ingest_slice)
        self.refresh()

    def _build_layout(self) -> None:
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Run:"))
        bar.addWidget(self.run_selector, 1)
        bar.addSpacing(12)
        train_label = QLabel("Train:")
        train_label.setBuddy(self.config_chooser)
        bar.addWidget(train_label)
        bar.addWidget(self.config_chooser)
        for action in (self.start_action, self.stop_action):
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            bar.addWidget(button)
        export = QToolButton()
        export.setText("Export")
        export.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(export)
        menu.addAction(self.export_png_action)
        menu.addAction(self.export_csv_action)
        export.setMenu(menu)
        bar.addWidget(export)
        self.export_button = export

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.tabs)
        splitter.addWidget(self.log_pane)
        splitter.setStretchFactor(0, 4)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([560, 170])
        self.splitter = splitter

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(bar)
        layout.addWidget(self.config_line)
        layout.addWidget(self.run_line)
        layout.addWidget(self.adapters_line)
        layout.addWidget(self.nodes_table)
        layout.addWidget(splitter, 1)

    # -- the run list --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the inventory and the run list; the first time, attach to the newest live run (or show the newest)."""
        home, api = self.home, self.api

        async def load(_report: Callable[[object], None]) -> tuple[list[str], list[RunRecord], str | None]:
            from cluster.state import load_cluster

            problem = None
            try:
                inventory = await asyncio.to_thread(load_cluster, home)
                names = [node.name for node in inventory.nodes]
            except ClusterError as exc:
                names, problem = [], str(exc)
            runs = await asyncio.to_thread(api.list_runs, home)
            return names, runs, problem

        job = self.refresh_job = self.bridge.start(load, parent=self)
        job.succeeded.connect(lambda result, job=job: self._on_refreshed(job, result))
        job.failed.connect(lambda error: self._on_job_failed(error))

    def _on_refreshed(self, job: Job, result: tuple[list[str], list[RunRecord], str | None]) -> None:
        if job is not self.refresh_job:
            return
        names, runs, problem = result
        self.inventory_nodes = names
        if problem:
            self.message = problem
        current = self.record.id if self.record else None
        if current is not None:
            # Keep the shown record's latest state (the follower may have finished it meanwhile).
            self.record = next((r for r in runs if r.id == current), self.record)
        self.run_selector.show_runs(runs, current)
        if not self._attached_once:
            self._attached_once = True
            latest = latest_to_show(runs)
            if latest is not None and self.record is None:
                self.follow(latest)
        self._redraw(force=True)

    # -- following a run -----------------------------------------------------------------------

    def follow(self, record: RunRecord) -> None:
        """Show ``record``'s run: replay its history and keep following it while it is live."""
        if self.follow_job is not None and self.record is not None and record.id == self.record.id \
                and self.follow_job.running:
            return
        self.detach()
        self.record = record
        self.status = RunStatus(rank_nodes=list(record.rank_nodes))
        self.status.world_size = record.world_size or None
        self.status.total_steps = record.total_steps
        self.series = RunSeries(rank_nodes=list(record.rank_nodes), world_size=record.world_size)
        self._pending.clear()
        self._log_batch = []
        self._follow_over = False
        self.charts.set_run(self.series)
        self.node_panels.set_run(self.series)
        self.log_pane.clear()
        self.log_pane.set_world_size(record.world_size)
        index = self.run_selector.findData(record.id)
        if index >= 0:
            self.run_selector.setCurrentIndex(index)
        home, api, run_id = self.home, self.api, record.id
        job = self.follow_job = self.bridge.start(
            lambda report: api.follow_run(home, run_id, on_line=report, replay=True), parent=self)
        job.progressed.connect(lambda batch, job=job: self._on_lines(job, batch))
        job.succeeded.connect(lambda status, job=job: self._on_follow_ended(job, status))
        job.failed.connect(lambda error, job=job: self._on_follow_failed(job, error))
        self.run_followed.emit(record.id)
        self._redraw(force=True)

    def detach(self) -> None:
        """Stop following (the run itself goes on): for closing the window or switching runs."""
        if self.follow_job is not None:
            self.follow_job.cancel()
            self.follow_job = None

    def _on_lines(self, job: Job, batch: list[FollowedLine]) -> None:
        if job is not self.follow_job:
            return
        self._pending.extend(batch)
        if not self._ingest_timer.isActive():
            self._ingest_timer.start()

    def _ingest_slice(self) -> None:
        """Fold up to INGEST_SLICE pending lines into the status, the series and the log."""
        count = min(INGEST_SLICE, len(self._pending))
        if not count:
            return
        lines = [self._pending.popleft() for _ in range(count)]
        status, series = self.status, self.series
        for line in lines:
            event = line.event
            if not isinstance(event, RawLine) and status is not None:
                status.apply(event)
                series.add(event)
        # The log is written on the redraw tick: one text insert per tick costs far less than one per slice.
        self._log_batch.extend(lines)
        if series.world_size > self.log_pane.filter.count() - 2:
            self.log_pane.set_world_size(series.world_size)
        if self._pending:
            self._ingest_timer.start()
        self.lines_ingested.emit(count)

    def _on_follow_ended(self, job: Job, status: RunStatus) -> None:
        if job is not self.follow_job:
            return
        self._ingest_all()
        if isinstance(status, RunStatus):
            # The follower's verdict includes what events cannot say (stopped, launcher died, silent nodes).
            self.status = status
        self._follow_over = True
        self.follow_job = None
        self._redraw(force=True)
        self.run_ended.emit(self.status)
        self.refresh()

    def _on_follow_failed(self, job: Job, error: BaseException) -> None:
        if job is not self.follow_job or isinstance(error, asyncio.CancelledError):
            return
        self._ingest_all()
        self.follow_job = None
        self._follow_over = True
        if isinstance(error, ClusterError):
            self.message = f"Lost the run's output: {error}"
        else:
            report_crash(type(error), error, error.__traceback__, parent=self)
        self._redraw(force=True)

    def _ingest_all(self) -> None:
        while self._pending:
            self._ingest_slice()

    @property
    def is_live(self) -> bool:
        """The shown run is being followed and is not over."""
        return (self.follow_job is not None and self.status is not None and not self.status.state.is_over
                and not self._follow_over)

    # -- start and stop ------------------------------------------------------------------------

    def start_run(self, *, local: bool | None = None) -> None:
        """Start training what the chooser shows on the cluster (this computer when it has no nodes).

        A config file is read again first: it may have changed since it was chosen, and an invalid one
        is never launched (the config line says what is wrong).
        """
        if self.start_job is not None or self.is_live:
            return
        summary = self.config_chooser.recheck()
        if summary is not None and not summary.ok:
            self._redraw(force=True)
            return
        self._start(self.api.TrainRequest(**self._request_fields(local, summary)), self.config_chooser.what())

    def _request_fields(self, local: bool | None, summary: ConfigSummary | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if local is not None:
            fields["local"] = local
        if summary is not None:
            fields["config_file"] = summary.path
        return fields

    def _start(self, request: Any, what: str) -> None:
        if self.start_job is not None or self.is_live:
            return
        home, api = self.home, self.api
        self.message = f"Starting a run of {what}…"
        job = self.start_job = self.bridge.start(
            lambda report: api.start_run(home, request, on_progress=report), parent=self)
        job.progressed.connect(self._on_start_progress)
        job.succeeded.connect(self._on_started)
        job.failed.connect(self._on_start_failed)
        self._update_actions()
        self._redraw(force=True)

    def start_demo(self) -> None:
        """"Try on this computer": the bundled model on local ranks, whatever the cluster holds or the chooser shows."""
        self._start(self.api.TrainRequest(local=True), "the bundled model")

    def _on_choice_changed(self, summary: ConfigSummary | None) -> None:
        self.config_line.show_summary(summary)
        self._set_start_tooltip()
        self._redraw(force=True)

    def _set_start_tooltip(self) -> None:
        summary = self.config_chooser.summary
        if summary is None:
            text = "Start a training run with the bundled model on the cluster"
        elif summary.ok:
            text = f"Start training {summary.path.name} ({summary.path}) on the cluster"
        else:
            text = f"{summary.path.name} cannot be used; fix it or choose another config"
        self.start_action.setToolTip(text + (" (on this computer when the cluster has no nodes)" if summary is None
                                             or summary.ok else ""))

    def _on_start_progress(self, batch: list[object]) -> None:
        message = getattr(batch[-1], "message", None)
        if message:
            self.message = f"{message[:1].upper()}{message[1:]}…"
            self._redraw(force=True)

    def _on_started(self, record: RunRecord) -> None:
        self.start_job = None
        self.message = f"Run {record.id} started."
        self.follow(record)
        self.refresh()

    def _on_start_failed(self, error: BaseException) -> None:
        self.start_job = None
        self.message = ""
        self._update_actions()
        show_error(self, error, title="Could not start training")
        self._redraw(force=True)

    def stop_run(self) -> None:
        """Stop the shown run on every node, after the user confirms."""
        record = self.record
        if record is None or self.stop_job is not None or not self.is_live:
            return
        nodes = ", ".join(record.nodes) if not record.local else "this computer"
        if not confirm(self, "Stop training?",
                       f"Stop run {record.id} on {nodes}? Every rank is stopped; checkpoints already written "
                       "stay, and the run can be resumed from the last one."):
            return
        home, api = self.home, self.api
        self.message = f"Stopping run {record.id}…"
        job = self.stop_job = self.bridge.start(lambda report: api.stop_run(home, record.id), parent=self)
        job.succeeded.connect(self._on_stopped)
        job.failed.connect(self._on_stop_failed)
        self._update_actions()
        self._redraw(force=True)

    def _on_stopped(self, report: object) -> None:
        self.stop_job = None
        self.message = getattr(report, "message", "") or "The run was stopped."
        self._redraw(force=True)

    def _on_stop_failed(self, error: BaseException) -> None:
        self.stop_job = None
        self.message = ""
        show_error(self, error, title="Could not stop training")
        self._redraw(force=True)

    def _on_job_failed(self, error: BaseException) -> None:
        show_error(self, error)

    def _update_actions(self) -> None:
        live = self.is_live
        self.start_action.setEnabled(self.start_job is None and not live and self.config_chooser.can_start)
        self.stop_action.setEnabled(live and self.stop_job is None)

    # -- export --------------------------------------------------------------------------------

    def export_pngs(self, folder: Path) -> list[Path]:
        self.charts.redraw()
        return chart_export.write_pngs(self.charts.charts, folder, prefix=self._export_prefix())

    def export_csvs(self, folder: Path) -> list[Path]:
        self._ingest_all()
        return chart_export.write_csvs(self.series, folder, prefix=self._export_prefix())

    def _export_prefix(self) -> str:
        return f"{self.record.id}-" if self.record is not None else ""

    def _on_export_png(self) -> None:
        self._export(self.export_pngs, "Export charts as PNG")

    def _on_export_csv(self) -> None:
        self._export(self.export_csvs, "Export chart data as CSV")

    def _export(self, action: Callable[[Path], list[Path]], title: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, f"{title}: choose a folder")
        if not folder:
            return
        try:
            paths = action(Path(folder))
        except OSError as exc:
            show_error(self, ClusterError(f"Could not export to {folder} ({exc.strerror or exc}); choose a "
                                          "folder you can write to."), title=title)
            return
        self.message = f"Wrote {len(paths)} files to {folder}."
        self._redraw(force=True)

    # -- drawing -------------------------------------------------------------------------------

    def _redraw(self, force: bool = False) -> None:
        """The ~10 Hz tick: charts of the visible tab, the nodes table, the log, the run line, the actions."""
        if self._log_batch:
            batch, self._log_batch = self._log_batch, []
            self.log_pane.append_lines(batch)
        slowest = self.charts.slowest
        if self.tabs.currentWidget() is self.charts:
            self.charts.redraw()
            slowest = self.charts.slowest
        else:
            slowest = self.series.slowest_rank()
            slowest = slowest if slowest is not None and slowest.excess >= SLOWEST_MIN_EXCESS else None
        nodes = self.series.nodes() if self.record is not None else self.inventory_nodes
        for name in self.inventory_nodes if self.record is None else ():
            if name not in nodes:
                nodes.append(name)
        rows = node_rows(nodes, self.series if self.record else None, self.status if self.record else None, slowest)
        self.nodes_table.show_rows(rows)
        if self.tabs.currentWidget() is self.node_panels:
            self.node_panels.redraw(rows)
        self._update_actions()
        self._show_run_line()

    def _show_run_line(self) -> None:
        record, status = self.record, self.status
        self.adapters_line.show_path(record.adapters_path if record is not None else None)
        if record is None or status is None:
            text = self.message or (f"No run yet: Start trains {self.config_chooser.what()} on "
                                    + ("your cluster." if self.inventory_nodes else "this computer (2 ranks)."))
            self._set_run_line(text, None)
            return
        now = time.time()
        state = status.state
        self.run_selector.show_progress(record.id, state.value, status.step, status.total_steps)
        parts = [f"Run {record.id}: {state.value}"]
        if status.step:
            total = f" of {status.total_steps}" if status.total_steps else ""
            parts.append(f"step {status.step}{total}")
        elapsed = status.elapsed_s(now)
        if elapsed is not None:
            parts.append(f"{_duration(elapsed)} elapsed")
        eta = status.eta_s(now) if not self._follow_over else None
        if eta is not None:
            parts.append(f"about {_duration(eta)} left")
        if self._pending:
            parts.append(f"replaying {len(self._pending):,} lines")
        elif self.follow_job is None and not state.is_over:
            parts.append("not followed")
        text = " · ".join(parts)
        if state is RunState.FAILED and status.failure:
            text += f"\n{status.failure[:1].upper()}{status.failure[1:]}"
        if self.message:
            text += f"\n{self.message}"
        kind = {"failed": "fail", "finished": "ok", "running": "ok", "stopped": "warn"}.get(state.value)
        self._set_run_line(text, kind)

    def _set_run_line(self, text: str, kind: str | None) -> None:
        if text == self.run_line.text() and kind == self.run_line.property("kind"):
            return
        self.run_line.setText(text)
        self.run_line.setProperty("kind", kind)
        self._style_run_line()

    def _style_run_line(self) -> None:
        kind = self.run_line.property("kind")
        self.run_line.setStyleSheet("" if kind is None else f"color: {status_color(kind, self.palette())}")

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        # The state colours are picked for the background: follow a switch between light and dark.
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._style_run_line()
        super().changeEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        # Only the following stops; the run keeps training on the cluster.
        self.detach()
        super().closeEvent(event)


__all__ = ["Dashboard", "confirm", "describe_run"]
