"""RunMonitor with mlx.launch (ring): the rank the launcher says ended is the cause, not the peers that lost it."""

from __future__ import annotations

import pytest

from cluster.run_monitor import RunMonitor
from cluster.run_status import RunState, RunStatus
from trainer.events import ErrorEvent, StepEvent, to_line

PEER_LOST = "RuntimeError: [ring] connection to a peer was lost"
# As mlx.launch prints it (log_warning colours it).
RANK_1_EXITED = "\x1b[33m[WARN] Node with rank 1 exited with code 255 \x1b[0m"
RANK_0_EXITED = "\x1b[33m[WARN] Node with rank 0 exited with code 1 \x1b[0m"
CAUSE = "rank 1 on n2 ended with exit code 255 (mlx.launch then stopped the other ranks)"


def error(rank: int, message: str) -> str:
    return to_line(ErrorEvent(rank=rank, time=200.0, message=message))


def ring_monitor(backend: str = "ring") -> RunMonitor:
    mon = RunMonitor(RunStatus(rank_nodes=["n1", "n2", "n3"]), backend=backend, clock=lambda: 0.0)
    for rank in range(3):
        mon.feed(to_line(StepEvent(rank=rank, time=100.0, step=1, loss=2.0, step_time_s=0.1)))
    return mon


@pytest.mark.parametrize("lines", [
    [RANK_1_EXITED, error(0, PEER_LOST), error(2, PEER_LOST), RANK_0_EXITED],  # the launcher spoke first
    [error(0, PEER_LOST), RANK_0_EXITED, error(2, PEER_LOST), RANK_1_EXITED],  # the peers' reports came first
], ids=["launcher-first", "peers-first"])
def test_the_rank_that_ended_is_named_whatever_the_order(lines):
    mon = ring_monitor()
    for line in lines:
        mon.feed(line)
    assert mon.status.state is RunState.FAILED
    assert mon.status.failure == CAUSE


def test_a_rank_own_error_stays_the_failure_when_its_exit_follows():
    mon = ring_monitor()
    mon.feed(error(2, "DataError: data.jsonl: line 3 is not JSON"))
    mon.feed("\x1b[33m[WARN] Node with rank 2 exited with code 1 \x1b[0m")
    mon.feed(RANK_1_EXITED)
    assert mon.status.failure == "rank 2 on n3 failed: DataError: data.jsonl: line 3 is not JSON"


def test_the_launcher_stopping_ranks_and_mpi_runs_do_not_name_a_cause():
    mon = ring_monitor()
    mon.feed("\x1b[33m[WARN] Node with rank 2 was killed \x1b[0m")
    assert mon.status.state is RunState.RUNNING
    mpi = ring_monitor(backend="mpi")
    mpi.feed(RANK_1_EXITED)
    assert mpi.status.state is RunState.RUNNING
