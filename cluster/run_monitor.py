"""Turn a run's raw launcher output into per-rank lines, events and status, and notice when the ranks fall silent.

Pure logic (no I/O), fed the head node's ``output.log`` line by line, whether replayed from the mirror
or arriving live. mpirun's output is tagged per chunk and reassembled per rank; ``mlx.launch`` does not
tag, so a line's rank comes from its event (a plain line has rank None). A rank that emits no corral
events but runs ``mlx_lm.lora`` gets its console reports read as events (cluster.mlx_lm_output); the
line's text is kept as it was.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.mlx_lm_output import parse_mlx_lm_line
from cluster.mpi_output import RankLine, TagReassembler
from cluster.run_status import RunState, RunStatus
from trainer.events import ErrorEvent, Event, RawLine, StepEvent, parse_line

# No rank emitted for this long (and at least this multiple of the median step) → probe the nodes.
SILENCE_MIN_S = 4.0
SILENCE_STEP_FACTOR = 4.0
# Before the first step: starting MLX, compiling and loading data take longer than a step.
STARTUP_SILENCE_S = 45.0

# Open MPI's own words about a rank that died (mpirun prints them untagged).
_RANK_SIGNAL = re.compile(r"process rank (\d+) with PID \d+ on node (\S+) exited on signal (\d+)")
# mlx.launch's words about a rank whose command ended badly ("... was killed" is its own stopping of the others).
_RING_RANK_EXIT = re.compile(r"Node with rank (\d+) exited with code (\d+)")
# What the surviving ranks of a ring say when a peer went away: a consequence of another rank's end, not its cause.
_RING_PEER_LOST = ("connection to a peer was lost", "was closed by the peer")


@dataclass(frozen=True)
class FollowedLine:
    """One complete line of a run: its rank (None: the launcher's own), stream, text and what it parsed to."""

    rank: int | None
    stream: str
    text: str
    event: Event | RawLine
    received_time: float
    replayed: bool = False  # from history (the mirror or an earlier part of the log), not live


OnFollowedLine = Callable[[FollowedLine], None]


@dataclass
class RunMonitor:
    """Feed raw output lines; get FollowedLines and a RunStatus; ask whether the ranks have gone silent."""

    status: RunStatus
    backend: str = "mpi"
    clock: Callable[[], float] = time.time
    _reassembler: TagReassembler = field(default_factory=TagReassembler)
    _step_times: list[float] = field(default_factory=list)
    last_rank_output: float | None = None  # this computer's clock, when a rank last said anything live
    started_watching: float | None = None
    launcher_said: list[str] = field(default_factory=list)
    # Ring ranks that failed only because a peer went away, and whether the run's failure is one of their
    # reports: then the launcher's word on which rank ended (it may come after theirs) replaces it.
    _peer_lost_ranks: set[int] = field(default_factory=set)
    _failure_is_peer_loss: bool = False
    # Ranks that emit corral's events themselves: their mlx-lm console lines stay text (no double counting).
    _protocol_ranks: set[int] = field(default_factory=set)
    _last_console_step: dict[int, tuple[float, int]] = field(default_factory=dict)

    def feed(self, raw_line: str, *, replayed: bool = False) -> list[FollowedLine]:
        """One line of output.log (without its newline) → the complete rank lines it finished."""
        now = self.clock()
        if self.backend == "mpi":
            pieces = self._reassembler.feed(raw_line + "\n")
        else:
            pieces = [RankLine(None, "stdout", raw_line)]
        return [self._take(piece, now, replayed) for piece in pieces]

    def flush(self, *, replayed: bool = False) -> list[FollowedLine]:
        now = self.clock()
        return [self._take(piece, now, replayed) for piece in self._reassembler.flush()]

    def _take(self, piece: RankLine, now: float, replayed: bool) -> FollowedLine:
        event = parse_line(piece.text)
        rank = piece.rank
        console = None
        if isinstance(event, RawLine):
            console = self._console_event(piece, now)
            if console is not None:
                event = console
        if isinstance(event, RawLine):
            if rank is None:
                self._read_launcher_line(piece.text)
        else:
            if console is None:
                self._protocol_ranks.add(event.rank)
            if rank is None or self.backend != "mpi":
                rank = event.rank
            was_over = self.status.state.is_over
            self.status.apply(event)
            if (self.backend == "ring" and isinstance(event, ErrorEvent)
                    and any(words in event.message for words in _RING_PEER_LOST)):
                self._peer_lost_ranks.add(event.rank)
                self._failure_is_peer_loss = self._failure_is_peer_loss or not was_over
            if isinstance(event, StepEvent) and console is not None:
                self._note_console_report(event, now)
            elif isinstance(event, StepEvent) and event.step_time_s:
                self._step_times.append(event.step_time_s)
                del self._step_times[:-50]
        if rank is not None and not replayed:
            self.last_rank_output = now
        return FollowedLine(rank, piece.stream, piece.text, event, now, replayed)

    def _console_event(self, piece: RankLine, now: float) -> Event | None:
        """An mlx-lm console line of a rank that emits no corral events, as the event it reports."""
        if piece.rank is None and self.backend == "mpi":
            return None  # mpirun's own words; ranks' lines are always tagged
        if piece.rank in self._protocol_ranks or (piece.rank is None and self._protocol_ranks):
            return None
        if not piece.text.strip() or ("Iter " not in piece.text and not piece.text.startswith(" ")
                                      and "\r" not in piece.text and "\x1b" not in piece.text):
            return None  # cheap rejection: every report line starts with "Iter " or indentation
        # Under mlx.launch lines carry no rank; mlx-lm 0.32 reports from rank 0 only.
        return parse_mlx_lm_line(piece.text, rank=piece.rank if piece.rank is not None else 0, time=now)

    def _note_console_report(self, event: StepEvent, now: float) -> None:
        """mlx-lm reports every few steps: the silence rule waits for the gap between reports, not one step."""
        previous = self._last_console_step.get(event.rank)
        self._last_console_step[event.rank] = (now, event.step)
        if previous is None or event.step <= previous[1]:
            return
        steps = event.step - previous[1]
        gap_s = event.step_time_s * steps if event.step_time_s else now - previous[0]
        if gap_s > 0:
            self._step_times.append(gap_s)
            del self._step_times[:-50]

    def _read_launcher_line(self, text: str) -> None:
        self.launcher_said.append(text)
        del self.launcher_said[:-40]
        match = _RANK_SIGNAL.search(text)
        if match:
            rank, host, signal_number = int(match.group(1)), match.group(2), match.group(3)
            where = self.status.rank(rank).node or host
            self.status.fail(f"rank {rank} on {where} was killed (signal {signal_number})")
        match = _RING_RANK_EXIT.search(text) if self.backend == "ring" else None
        if match:
            rank, code = int(match.group(1)), match.group(2)
            if rank in self._peer_lost_ranks:
                return  # it ended because of another rank
            reason = (f"rank {rank} on {self.status.rank(rank).node or 'its node'} ended with exit code {code} "
                      "(mlx.launch then stopped the other ranks)")
            if self._failure_is_peer_loss and self.status.state is RunState.FAILED:
                self.status.failure = reason  # the cause, instead of a peer's report of it
                self._failure_is_peer_loss = False
            else:
                self.status.fail(reason)

    def silence_threshold_s(self) -> float:
        if not self._step_times:
            return STARTUP_SILENCE_S
        return max(SILENCE_MIN_S, SILENCE_STEP_FACTOR * statistics.median(self._step_times))

    def silent_for_s(self) -> float:
        """How long no rank has said anything since live following began."""
        reference = self.last_rank_output or self.started_watching
        if reference is None:
            return 0.0
        return max(0.0, self.clock() - reference)

    def is_silent(self) -> bool:
        return not self.status.state.is_over and self.silent_for_s() > self.silence_threshold_s()

    def heard_now(self) -> None:
        """Reset the silence clock (after a probe found every node answering: a slow step, not a dead link)."""
        self.last_rank_output = self.clock()

    def launcher_tail(self, count: int = 3) -> str:
        lines = [line.strip() for line in self.launcher_said if line.strip() and not set(line.strip()) <= set("-*=")]
        return " / ".join(lines[-count:])


def ranks_of(status: RunStatus, node: str) -> list[int]:
    return [rank for rank, name in enumerate(status.rank_nodes) if name == node]


def describe_ranks(ranks: list[int]) -> str:
    if not ranks:
        return "no ranks"
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def unreachable_failure(status: RunStatus, unreachable: list[str], head: str, why: str, run_id: str = "RUN") -> str:
    """The failure sentence for nodes that stopped answering, with the next step that is possible.

    The head node holds the run's output and checkpoints, so a run that lost it cannot resume without it.
    """
    parts = []
    for name in unreachable:
        role = " (the head node, where the launcher runs and the checkpoints are)" if name == head else ""
        parts.append(f"{name}{role} with {describe_ranks(ranks_of(status, name))}")
    lost = f"{' and '.join(parts)} stopped answering ({why}); the run failed."
    if head in unreachable:
        others = [name for name in dict.fromkeys(status.rank_nodes) if name not in unreachable]
        fresh = f", or `corral train --nodes {' '.join(others)}` starts afresh without it" if others else ""
        return (f"{lost} Its checkpoints are on {head}, so it cannot be resumed without {head}: when {head} is "
                f"back, `corral stop {run_id}` clears what is left of the run there and `corral train --resume "
                f"{run_id}` continues from the last checkpoint{fresh}.")
    return (f"{lost} When the node is back, `corral stop {run_id}` clears what is left of the run there, and "
            f"`corral train --resume {run_id} --without {unreachable[0]}` continues from the last checkpoint without it.")


__all__ = ["FollowedLine", "OnFollowedLine", "RunMonitor", "RunState", "unreachable_failure"]
