"""Run status from events: state transitions, failures named by rank and node, ETA."""

from cluster.inventory import Node
from cluster.run_status import RunState, RunStatus, ranks_to_nodes
from trainer.events import DoneEvent, ErrorEvent, EvalEvent, StartEvent, StepEvent

NODES = [Node("studio", "10.0.0.1", user="u", slots=2), Node("mini", "10.0.0.2", user="u")]


def started(world_size: int = 3, steps: int = 100) -> RunStatus:
    status = RunStatus(rank_nodes=ranks_to_nodes(NODES))
    for rank in range(world_size):
        status.apply(StartEvent(rank=rank, time=1000.0, world_size=world_size, host=f"h{rank}", config={"steps": steps}))
    return status


def test_ranks_fill_each_nodes_slots_in_order():
    assert ranks_to_nodes(NODES) == ["studio", "studio", "mini"]


def test_starting_then_running_then_finished_only_when_every_rank_is_done():
    status = started()
    assert status.state is RunState.STARTING
    for rank in range(3):
        status.apply(StepEvent(rank=rank, time=1001.0, step=1, loss=5.0 - rank))
    assert status.state is RunState.RUNNING and status.step == 1
    assert status.rank(2).loss == 3.0 and status.rank(2).node == "mini"
    status.apply(EvalEvent(rank=0, time=1001.5, step=1, val_loss=4.2))
    assert status.rank(0).val_loss == 4.2
    status.apply(DoneEvent(rank=0, time=1002.0, step=1))
    status.apply(DoneEvent(rank=1, time=1002.0, step=1))
    assert status.state is RunState.RUNNING
    status.apply(DoneEvent(rank=2, time=1002.0, step=1))
    assert status.state is RunState.FINISHED
    assert status.elapsed_s(now=5000.0) == 2.0  # over: measured to the last event, not to now


def test_an_error_event_fails_the_run_naming_rank_and_node():
    status = started()
    status.apply(ErrorEvent(rank=2, time=1003.0, message="out of memory"))
    assert status.state is RunState.FAILED
    assert status.failure == "rank 2 on mini failed: out of memory"
    status.apply(ErrorEvent(rank=0, time=1004.0, message="peer went away"))
    assert status.failure == "rank 2 on mini failed: out of memory"  # the first cause is kept


def test_a_launcher_that_exits_without_every_done_is_a_failure_whatever_its_code():
    status = started()
    status.apply(DoneEvent(rank=0, time=1002.0, step=10))
    status.launcher_ended(0)  # mlx.launch says 0 even when ranks died
    assert status.state is RunState.FAILED
    assert status.failure == "the launcher ended before rank 1 on studio, rank 2 on mini finished (launcher exit status 0)"


def test_eta_from_the_step_rate():
    status = started(world_size=1, steps=100)
    status.apply(StepEvent(rank=0, time=1000.0, step=1, loss=3.0))
    assert status.eta_s(now=1000.0) is None
    status.apply(StepEvent(rank=0, time=1010.0, step=11, loss=2.0))
    assert status.eta_s(now=1010.0) == 89.0  # 1 step/s, 89 steps to go
