"""RunMonitor: mpirun's tagged output to per-rank lines and status, launcher messages, and the silence rule."""

from __future__ import annotations

from cluster.run_monitor import RunMonitor, unreachable_failure
from cluster.run_status import RunState, RunStatus
from trainer.events import RawLine, StepEvent, to_line


def step(rank: int, number: int, step_time_s: float = 0.1) -> str:
    return to_line(StepEvent(rank=rank, time=100.0 + number, step=number, loss=2.0, step_time_s=step_time_s))


def monitor(clock: list[float], backend: str = "mpi") -> RunMonitor:
    return RunMonitor(RunStatus(rank_nodes=["n1", "n2"]), backend=backend, clock=lambda: clock[0])


def test_tagged_chunks_become_whole_lines_with_events():
    now = [0.0]
    mon = monitor(now)
    line = step(1, 1)
    out = mon.feed(f"[1,1]<stdout>:{line[:20]}[1,0]<stdout>:hello") + mon.feed(f"[1,1]<stdout>:{line[20:]}")
    # Rank 0's piece ended the physical line; rank 1's line continued under its next tag.
    assert [(l.rank, l.text, type(l.event)) for l in out] == [(0, "hello", RawLine), (1, line, StepEvent)]
    assert mon.status.state is RunState.RUNNING and mon.status.ranks[1].node == "n2"
    assert mon.flush() == []


def test_mpirun_naming_a_killed_rank_fails_the_run_with_its_node():
    mon = monitor([0.0])
    mon.feed("mpirun noticed that process rank 1 with PID 4242 on node 10.0.0.12 exited on signal 9 (Killed).")
    assert mon.status.state is RunState.FAILED
    assert mon.status.failure == "rank 1 on n2 was killed (signal 9)"


def test_ring_lines_take_their_rank_from_the_event():
    mon = monitor([0.0], backend="ring")
    lines = mon.feed(step(1, 1)) + mon.feed("a plain print")
    assert [line.rank for line in lines] == [1, None]


def test_silence_is_judged_against_the_step_time_and_only_live_output_counts():
    now = [1000.0]
    mon = monitor(now)
    mon.feed(f"[1,0]<stdout>:{step(0, 1, 2.0)}", replayed=True)
    mon.started_watching = now[0]
    assert mon.silence_threshold_s() == 8.0  # 4 × the median step of 2 s
    now[0] += 7.0
    assert not mon.is_silent()
    mon.feed(f"[1,0]<stdout>:{step(0, 2, 2.0)}")
    now[0] += 8.5
    assert mon.is_silent()
    mon.heard_now()
    assert not mon.is_silent()


def test_an_unreachable_node_is_named_with_its_ranks():
    status = RunStatus(rank_nodes=["n1", "n2", "n2"])
    text = unreachable_failure(status, ["n2"], "n1", "no rank spoke for 5 s")
    assert text.startswith("n2 with ranks 1, 2 stopped answering (no rank spoke for 5 s); the run failed.")
    assert "--without n2" in text
