"""Faults of the head node (where the detached launcher runs and output.log and the checkpoints are), on fresh 3-node clusters."""

from __future__ import annotations

import time

import pytest

from tests.integration.train_helpers import (
    events,
    failed_within,
    leftover_processes,
    long_watched_run,
    no_leftovers_within,
    run_id_of,
    status,
)

pytestmark = pytest.mark.integration

DETECT_WITHIN_S = 10.0
ANSWER_WITHIN_S = 15.0  # `corral status` / `corral stop` while the head is away: one connect timeout, not a hang


@pytest.fixture
def running(cluster_factory, tmp_path):
    """A prepared cluster with a long run going and `corral logs --follow` watching it: (cluster, corral, run id, follower)."""
    cluster = cluster_factory(3)
    corral, run_id, follower = long_watched_run(cluster, tmp_path / "home", tmp_path / "project")
    yield cluster, corral, run_id, follower
    if follower.poll() is None:
        follower.kill()
    follower.wait()


def timed(call):  # noqa: ANN001, ANN201 - any callable
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def assert_names_the_head(failure: str, run_id: str) -> None:
    assert "node1 (the head node" in failure and "rank 0" in failure, failure
    # The checkpoints are on the head: resuming without it is impossible, so the message offers what is possible.
    assert "cannot be resumed without node1" in failure, failure
    assert f"`corral train --resume {run_id}`" in failure and "--without node1" not in failure, failure
    assert "`corral train --nodes node2 node3`" in failure, failure


def test_a_crashed_head_fails_the_run_naming_it_and_the_run_resumes_once_it_is_back(running):
    cluster, corral, run_id, follower = running
    head = cluster.nodes[0]
    crashed_at = time.monotonic()
    head.crash()
    state, elapsed = failed_within(corral, run_id, follower, crashed_at)
    assert elapsed < DETECT_WITHIN_S, state
    assert_names_the_head(state["failure"], run_id)
    assert state["unreachable"] == ["node1"]
    assert leftover_processes(cluster) == {}  # node2 and node3 (node1 is down)

    state, took = timed(lambda: status(corral, run_id))
    assert took < ANSWER_WITHIN_S and state["state"] == "failed", (took, state)
    stopped, took = timed(lambda: corral.run("stop", run_id, timeout=60))
    assert took < ANSWER_WITHIN_S and stopped.returncode == 1, (took, stopped.stdout, stopped.stderr)
    assert "node1 could not be reached" in stopped.stdout, stopped.stdout
    refused = corral.run("train", "--resume", run_id, "--without", "node1")
    assert refused.returncode != 0 and "checkpoints are on its head node node1" in refused.stderr, refused.stderr

    head.boot()
    assert status(corral, run_id)["unreachable"] == []  # the pending sweep of node1 ran
    assert no_leftovers_within(cluster) == {}
    # What the failure promised: once the head is back, the run goes on from its last checkpoint there.
    on_head = head.home_on_host / "corral" / "runs" / run_id / "checkpoints"
    last_checkpoint = max(int(path.name.removeprefix("step_")) for path in on_head.glob("step_*"))
    resumed = corral.run("train", "--resume", run_id, "--set", f"steps={last_checkpoint + 3}", timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    steps = {line["event"]["step"] for line in events(corral, run_id_of(resumed.stdout))
             if line["event"] and line["event"]["event"] == "step"}
    assert steps == {last_checkpoint + 1, last_checkpoint + 2, last_checkpoint + 3}
    assert no_leftovers_within(cluster) == {}


def test_a_cut_head_link_fails_the_run_quickly_and_the_head_is_swept_when_it_returns(running):
    cluster, corral, run_id, follower = running
    head = cluster.nodes[0]
    cut_at = time.monotonic()
    head.link_down()
    try:
        state, elapsed = failed_within(corral, run_id, follower, cut_at)
        assert elapsed < DETECT_WITHIN_S, state
        assert_names_the_head(state["failure"], run_id)
        assert state["unreachable"] == ["node1"]
        assert set(leftover_processes(cluster)) <= {"node1"}  # node2 and node3 were swept when the run failed
        stopped, took = timed(lambda: corral.run("stop", run_id, timeout=60))
        assert took < ANSWER_WITHIN_S and stopped.returncode == 1, (took, stopped.stdout, stopped.stderr)
        state, took = timed(lambda: status(corral, run_id))
        assert took < ANSWER_WITHIN_S and state["state"] == "failed" and state["unreachable"] == ["node1"], (took, state)
    finally:
        head.link_up()
    state = status(corral, run_id)  # the head answers again: the pending sweep clears the launcher and rank 0
    assert state["unreachable"] == [] and state["state"] == "failed", state
    assert no_leftovers_within(cluster) == {}
