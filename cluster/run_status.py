"""A run's status derived from its ranks' events alone: state, step, each rank's last loss, elapsed, ETA.

Launchers' exit codes are not trusted (``mlx.launch`` returns 0 when ranks fail): a run is finished
when every rank said ``done``, failed when any rank said ``error`` or the launcher ended without every
``done``. Pure logic, fed from live streams or from a replayed log alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from cluster.inventory import Node
from trainer.events import DoneEvent, ErrorEvent, Event, EvalEvent, StartEvent, StepEvent


class RunState(str, Enum):
    STARTING = "starting"  # launched; no rank has trained a step yet
    RUNNING = "running"  # steps are arriving
    FINISHED = "finished"  # every rank reported done
    FAILED = "failed"  # a rank reported an error, died, or went silent
    STOPPED = "stopped"  # the user stopped it

    @property
    def is_over(self) -> bool:
        return self in (RunState.FINISHED, RunState.FAILED, RunState.STOPPED)


def ranks_to_nodes(nodes: Sequence[Node]) -> list[str]:
    """Node name of each rank: mpirun fills each host's slots in hostfile order (its default by-slot mapping)."""
    return [node.name for node in nodes for _ in range(node.slots)]


@dataclass
class RankStatus:
    rank: int
    node: str | None = None
    host: str | None = None
    step: int = 0
    loss: float | None = None
    val_loss: float | None = None
    last_event_time: float | None = None
    done: bool = False
    error: str | None = None


@dataclass
class RunStatus:
    """Folds events into the run's status; ``apply`` each event in the order it was read."""

    rank_nodes: list[str] = field(default_factory=list)
    world_size: int | None = None
    total_steps: int | None = None
    state: RunState = RunState.STARTING
    failure: str | None = None
    started_time: float | None = None
    last_event_time: float | None = None
    ranks: dict[int, RankStatus] = field(default_factory=dict)
    # (time, global step) when steps began, for the rate behind the ETA.
    _first_step: tuple[float, int] | None = None

    def rank(self, rank: int) -> RankStatus:
        status = self.ranks.get(rank)
        if status is None:
            node = self.rank_nodes[rank] if 0 <= rank < len(self.rank_nodes) else None
            status = self.ranks[rank] = RankStatus(rank, node=node)
        return status

    def apply(self, event: Event) -> None:
        status = self.rank(event.rank)
        status.last_event_time = event.time
        self.last_event_time = max(self.last_event_time or event.time, event.time)
        if isinstance(event, StartEvent):
            self.world_size = event.world_size
            status.host = event.host or status.host
            config = event.config or {}
            # The scratch trainer names its length "steps"; LoRA configs use mlx-lm's "iters".
            steps = config.get("steps", config.get("iters"))
            if isinstance(steps, int):
                self.total_steps = steps
            if self.started_time is None or event.time < self.started_time:
                self.started_time = event.time
        elif isinstance(event, StepEvent):
            status.step = max(status.step, event.step)
            status.loss = event.loss
            if self.state is RunState.STARTING:
                self.state = RunState.RUNNING
            if self._first_step is None:
                self._first_step = (event.time, event.step)
        elif isinstance(event, EvalEvent):
            status.val_loss = event.val_loss
        elif isinstance(event, DoneEvent):
            status.done = True
            if event.step is not None:
                status.step = max(status.step, event.step)
            if not self.state.is_over and self.world_size and sum(r.done for r in self.ranks.values()) >= self.world_size:
                self.state = RunState.FINISHED
        elif isinstance(event, ErrorEvent):
            status.error = event.message
            if not self.state.is_over:
                self.fail(f"rank {event.rank}{self._where(status)} failed: {event.message}")

    def fail(self, reason: str) -> None:
        """Mark the run failed (the first reason is kept: later ones are usually consequences)."""
        if not self.state.is_over:
            self.state = RunState.FAILED
            self.failure = reason

    def launcher_ended(self, returncode: int | None) -> None:
        """The launcher exited: the run is over; without every rank's ``done`` it failed."""
        if self.state.is_over:
            return
        expected = self.world_size or len(self.rank_nodes)
        finished = [r for r in self.ranks.values() if r.done]
        if expected and len(finished) >= expected:
            self.state = RunState.FINISHED
            return
        silent = [r for r in range(expected) if not self.rank(r).done]
        names = ", ".join(f"rank {r}{self._where(self.rank(r))}" for r in silent) or "every rank"
        code = "" if returncode is None else f" (launcher exit status {returncode})"
        self.fail(f"the launcher ended before {names} finished{code}")

    def _where(self, status: RankStatus) -> str:
        if status.node:
            return f" on {status.node}"
        return f" on {status.host}" if status.host else ""

    @property
    def step(self) -> int:
        """The run's step: the slowest rank's (all ranks step together in data-parallel training)."""
        if not self.ranks:
            return 0
        return min(r.step for r in self.ranks.values())

    def elapsed_s(self, now: float) -> float | None:
        if self.started_time is None:
            return None
        end = self.last_event_time if self.state.is_over and self.last_event_time else now
        return max(0.0, end - self.started_time)

    def eta_s(self, now: float) -> float | None:
        """Seconds until ``total_steps`` at the step rate so far; None until there is a rate."""
        if self.state.is_over or not self.total_steps or self._first_step is None:
            return None
        first_time, first_step = self._first_step
        done_steps = self.step - first_step
        if done_steps <= 0 or now <= first_time:
            return None
        rate = done_steps / (now - first_time)
        return max(0.0, (self.total_steps - self.step) / rate)
