"""A run API with cluster.launch's interface that replays recorded mpirun output instead of running anything.

Recorded streams are the head node's ``output.log`` as mpirun ``--tag-output`` writes it; they are turned
into ``FollowedLine``s by the real ``RunMonitor`` (tag reassembly, event parsing, run status), so the
dashboard sees exactly what ``cluster.launch.follow_run`` would hand it.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cluster.home import CorralHome
from cluster.launch import TrainRequest
from cluster.run_monitor import FollowedLine, RunMonitor
from cluster.run_status import RunState, RunStatus
from cluster.run_stop import StopReport
from cluster.runs import RunRecord
from trainer.events import NodeEvent, StartEvent, StepEvent, EvalEvent, DoneEvent, to_line

DATA = Path(__file__).parent / "data"
RECORDED_3_RANKS = DATA / "local_3ranks_40steps.log"


def recorded_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def make_record(run_id: str, rank_nodes: list[str], *, state: str = "finished", created: float | None = None,
                total_steps: int | None = None) -> RunRecord:
    nodes = tuple(dict.fromkeys(rank_nodes))
    return RunRecord(id=run_id, created=created if created is not None else time.time(), nodes=nodes, head=nodes[0],
                     world_size=len(rank_nodes), backend="mpi", program=("-m", "trainer"),
                     remote_run_dir=f"corral/runs/{run_id}", rank_nodes=tuple(rank_nodes), state=state,
                     total_steps=total_steps)


@dataclass
class FakeRun:
    """A run's recorded output; ``produced`` lines of it exist so far (all of them for a finished run)."""

    record: RunRecord
    lines: list[str]
    produced: int = 0
    stopped: bool = False
    live: bool = False

    @property
    def over(self) -> bool:
        return self.stopped or self.produced >= len(self.lines)


class FakeRunApi:
    """``start_run``, ``follow_run``, ``stop_run``, ``run_status``, ``list_runs`` and ``TrainRequest`` over recordings.

    A started run plays ``start_lines`` live at ``lines_per_s``; following replays what it has produced so
    far, then streams the rest as it is produced, until the run is over or the follower is cancelled.
    """

    TrainRequest = TrainRequest

    def __init__(self, *, start_lines: list[str] | None = None, start_rank_nodes: list[str] | None = None,
                 lines_per_s: float = 400.0) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.start_lines = start_lines or []
        self.start_rank_nodes = start_rank_nodes or []
        self.lines_per_s = lines_per_s
        self.started_requests: list[TrainRequest] = []
        self.stopped_ids: list[str] = []
        self.follow_calls: list[str] = []
        self.start_error: BaseException | None = None
        self._clock = 0

    def add_finished(self, run_id: str, lines: list[str], rank_nodes: list[str], *, state: str = "finished") -> RunRecord:
        record = make_record(run_id, rank_nodes, state=state, created=self._next_created())
        self.runs[run_id] = FakeRun(record, lines, produced=len(lines))
        return record

    def add_live(self, run_id: str, lines: list[str], rank_nodes: list[str], *, produced: int = 0) -> FakeRun:
        """A run that is still going: ``produced`` lines are history; the rest arrive once someone drives it."""
        record = make_record(run_id, rank_nodes, state="running", created=self._next_created())
        run = self.runs[run_id] = FakeRun(record, lines, produced=produced, live=True)
        return run

    def _next_created(self) -> float:
        self._clock += 1
        return 1_800_000_000.0 + self._clock

    # -- the run API -----------------------------------------------------------------------------

    def list_runs(self, home: CorralHome) -> list[RunRecord]:
        records = [self._current_record(run) for run in self.runs.values()]
        return sorted(records, key=lambda r: (r.created, r.id), reverse=True)

    async def start_run(self, home: CorralHome, request: TrainRequest, *,
                        on_progress: Callable[[object], None] | None = None) -> RunRecord:
        self.started_requests.append(request)
        if self.start_error is not None:
            raise self.start_error
        if on_progress is not None:
            from cluster.launch import LaunchProgress

            on_progress(LaunchProgress("start", "starting 3 ranks"))
        run_id = f"run-{len(self.runs) + 1:03d}"
        run = self.add_live(run_id, self.start_lines, self.start_rank_nodes)
        asyncio.get_running_loop().create_task(self._produce(run))
        return run.record

    async def _produce(self, run: FakeRun) -> None:
        """Make the run's lines appear at the configured rate, in small batches like a live log."""
        interval_s = 0.02
        per_tick = max(1, int(self.lines_per_s * interval_s))
        while not run.over:
            run.produced = min(len(run.lines), run.produced + per_tick)
            await asyncio.sleep(interval_s)

    def drive(self, run_id: str) -> None:
        """Start producing a live run added with ``add_live`` (call from the asyncio loop's thread)."""
        asyncio.get_running_loop().create_task(self._produce(self.runs[run_id]))

    async def follow_run(self, home: CorralHome, run_id: str, *, on_line: Callable[[FollowedLine], None],
                         replay: bool = True) -> RunStatus:
        self.follow_calls.append(run_id)
        run = self.runs[run_id]
        monitor = RunMonitor(RunStatus(rank_nodes=list(run.record.rank_nodes)))
        position = run.produced
        for raw in run.lines[:position]:
            for line in monitor.feed(raw, replayed=True):
                if replay:
                    on_line(line)
        while True:
            end = run.produced
            for raw in run.lines[position:end]:
                for line in monitor.feed(raw):
                    on_line(line)
            position = end
            if run.over and position >= run.produced:
                break
            await asyncio.sleep(0.01)
        for line in monitor.flush():
            on_line(line)
        if run.stopped:
            monitor.status.state = RunState.STOPPED
        else:
            monitor.status.launcher_ended(0)
        return monitor.status

    async def stop_run(self, home: CorralHome, run_id: str) -> StopReport:
        run = self.runs[run_id]
        run.stopped = True
        self.stopped_ids.append(run_id)
        await asyncio.sleep(0.01)
        return StopReport(run_id, launcher_stopped=True, signals=["INT"], swept={n: False for n in run.record.nodes})

    async def run_status(self, home: CorralHome, run_id: str) -> RunStatus:
        run = self.runs[run_id]
        monitor = RunMonitor(RunStatus(rank_nodes=list(run.record.rank_nodes)))
        for raw in run.lines[: run.produced]:
            monitor.feed(raw)
        return monitor.status

    def _current_record(self, run: FakeRun) -> RunRecord:
        if run.stopped:
            return replace(run.record, state="stopped")
        if run.live and run.over:
            return replace(run.record, state="finished")
        return run.record


# -- a synthetic long run ----------------------------------------------------------------------


@dataclass
class SyntheticRun:
    """Settings of a generated run: ranks spread over nodes, one rank slower than the others."""

    ranks: int = 8
    steps: int = 500
    ranks_per_node: int = 2
    slow_rank: int | None = 5
    slow_factor: float = 1.3
    node_every: int = 10  # steps between node events
    eval_every: int = 100
    seed: int = 1
    raw_lines: list[tuple[int | None, str, str]] = field(default_factory=lambda: [
        (None, "stdout", "--------------------------------------------------------------------------"),
        (None, "stdout", "WARNING: There was an error initializing an OpenFabrics device."),
        (3, "stderr", "UserWarning: something the user's script printed on stderr"),
        (2, "stdout", "a plain print from rank 2"),
    ])

    def rank_nodes(self) -> list[str]:
        return [f"node{rank // self.ranks_per_node + 1}" for rank in range(self.ranks)]


def synthetic_stream(run: SyntheticRun = SyntheticRun(), *, start_time: float = 1_800_000_000.0) -> list[str]:
    """mpirun ``--tag-output`` lines of a whole run: start, steps, node, eval, done events and some raw lines."""
    rng = random.Random(run.seed)
    nodes = run.rank_nodes()
    out: list[str] = []

    def emit(rank: int | None, stream: str, text: str) -> None:
        out.append(text if rank is None else f"[1,{rank}]<{stream}>:{text}")

    for rank, stream, text in run.raw_lines[:2]:
        emit(rank, stream, text)
    now = start_time
    for rank in range(run.ranks):
        emit(rank, "stdout", to_line(StartEvent(rank, now, run.ranks, host=nodes[rank], config={"steps": run.steps})))
    for rank, stream, text in run.raw_lines[2:]:
        if rank is None or rank < run.ranks:
            emit(rank, stream, text)
    for step in range(1, run.steps + 1):
        base = 0.05 * (1 + 0.1 * rng.random())
        losses = [5.5 * math.exp(-step / (run.steps / 3)) + 1.5 + 0.2 * rng.random() for _ in range(run.ranks)]
        mean = sum(losses) / run.ranks
        now += base * run.slow_factor
        for rank in range(run.ranks):
            step_time = base * (run.slow_factor if rank == run.slow_rank else 1.0)
            emit(rank, "stdout", to_line(StepEvent(
                rank, now, step, losses[rank], loss_mean=mean, learning_rate=3e-3, step_time_s=step_time,
                tokens_per_s=2048 / step_time, tokens=2048 * step, epoch=0,
                mlx_active_bytes=18_000_000 + rank * 1_000_000, mlx_peak_bytes=200_000_000 + rank * 1_000_000,
                mlx_cache_bytes=30_000_000, rss_bytes=260_000_000)))
            if step % run.node_every == 0:
                used = 4_000_000_000 + 100_000_000 * (rank // run.ranks_per_node) + 1_000_000 * step
                emit(rank, "stdout", to_line(NodeEvent(rank, now, host=nodes[rank], ram_used_bytes=used,
                                                       ram_total_bytes=16_000_000_000, load_1m=1.5)))
        if run.eval_every and step % run.eval_every == 0:
            for rank in range(run.ranks):
                emit(rank, "stdout", to_line(EvalEvent(rank, now, step, val_loss=mean + 0.1)))
    for rank in range(run.ranks):
        emit(rank, "stdout", to_line(DoneEvent(rank, now, step=run.steps, elapsed_s=now - start_time)))
    return out


def count_events(lines: list[str], kind: str, rank: int | None = None) -> int:
    """How many ``kind`` events (of ``rank``) the recorded lines hold: what the charts must end up with."""
    total = 0
    for line in lines:
        _, _, text = line.partition(">:")
        if not text.startswith("{"):
            continue
        data = json.loads(text)
        if data["event"] == kind and (rank is None or data["rank"] == rank):
            total += 1
    return total
