"""What corral writes into a run's record and failure while following it: the next step offered, the first reason kept."""

from __future__ import annotations

import pytest

from cluster.home import CorralHome
from cluster.run_follow import _finish_from_record, _ProgressNote
from cluster.run_monitor import unreachable_failure
from cluster.run_status import RunState, RunStatus
from cluster.runs import RunRecord, load_record, save_record, update_record
from trainer.events import StepEvent

RANK_NODES = ["n1", "n2", "n2", "n3"]


@pytest.mark.parametrize(
    ("unreachable", "present", "absent"),
    [
        (["n2"], ["n2 with ranks 1, 2 stopped answering", "`corral train --resume RUN1 --without n2`",
                  "`corral stop RUN1`"], ["head node"]),
        (["n1"], ["n1 (the head node", "with rank 0 stopped answering", "cannot be resumed without n1",
                  "`corral stop RUN1`", "`corral train --resume RUN1` continues", "`corral train --nodes n2 n3`"],
         ["--without"]),
        (["n1", "n3"], ["n1 (the head node", "and n3 with rank 3", "`corral train --nodes n2`"], ["--without"]),
    ],
)
def test_the_failure_offers_the_next_step_that_is_possible(unreachable, present, absent):
    text = unreachable_failure(RunStatus(rank_nodes=RANK_NODES), unreachable, "n1", "no rank spoke for 5 s", "RUN1")
    for words in present:
        assert words in text, text
    for words in absent:
        assert words not in text, text


def record(**changes) -> RunRecord:
    base = RunRecord(id="r1", created=1.0, nodes=("n1", "n2"), head="n1", world_size=2, backend="mpi",
                     program=("-X", "corral-run=r1", "-m", "trainer"), remote_run_dir="corral/runs/r1",
                     rank_nodes=("n1", "n2"))
    return base.updated(**changes)


def failed(reason: str) -> RunStatus:
    status = RunStatus(rank_nodes=["n1", "n2"])
    status.fail(reason)
    return status


def test_the_first_recorded_failure_stands_over_a_later_consequence():
    status = _finish_from_record(failed("the launcher ended before rank 0 finished"),
                                 record(state="failed", failure="n1 (the head node …) stopped answering"))
    assert status.state is RunState.FAILED and status.failure == "n1 (the head node …) stopped answering"


def test_a_stop_stands_over_failures_and_a_failure_without_words_keeps_the_events():
    assert _finish_from_record(failed("rank 1 died"), record(stop_requested=True)).state is RunState.STOPPED
    assert _finish_from_record(failed("rank 1 died"), record(state="failed")).failure == "rank 1 died"


def running(step: int) -> RunStatus:
    status = RunStatus(rank_nodes=["n1", "n2"], total_steps=100)
    for rank in (0, 1):
        status.apply(StepEvent(rank=rank, time=10.0 + step, step=step, loss=2.0))
    return status


def test_a_follow_writes_running_at_the_first_step_then_the_step_now_and_then(tmp_path):
    home = CorralHome(tmp_path)
    save_record(home, record())
    note = _ProgressNote(home, "r1")
    note.note(RunStatus(rank_nodes=["n1", "n2"]))  # still starting: nothing to write
    assert load_record(home, "r1").state == "starting"
    note.note(running(1))
    assert (load_record(home, "r1").state, load_record(home, "r1").step) == ("running", 1)
    note.note(running(2))  # within PROGRESS_EVERY_S of the last write: the step waits
    assert load_record(home, "r1").step == 1
    note._written -= 60
    note.note(running(3))
    assert load_record(home, "r1").step == 3


def test_a_follow_does_not_overwrite_a_stop_or_failure_recorded_meanwhile(tmp_path):
    home = CorralHome(tmp_path)
    save_record(home, record())
    update_record(home, "r1", stop_requested=True)
    _ProgressNote(home, "r1").note(running(1))
    assert load_record(home, "r1").state == "starting"
    update_record(home, "r1", stop_requested=False, state="failed", failure="n2 stopped answering")
    _ProgressNote(home, "r1").note(running(2))
    assert load_record(home, "r1").state == "failed"
