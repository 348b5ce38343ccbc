"""Faults during a run on fresh 3-node clusters: a rank killed, a node crashed, a link cut; resume without a node."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.train_helpers import failed_within, leftover_processes, long_watched_run, run_id_of, status

pytestmark = pytest.mark.integration

DETECT_WITHIN_S = 10.0


@pytest.fixture
def running(cluster_factory, tmp_path):
    """A prepared cluster with a long run going and `corral logs --follow` watching it: (cluster, corral, run id, follower)."""
    cluster = cluster_factory(3)
    corral, run_id, follower = long_watched_run(cluster, tmp_path / "home", tmp_path / "project")
    yield cluster, corral, run_id, follower
    if follower.poll() is None:
        follower.kill()
    follower.wait()


def test_a_killed_rank_fails_the_run_naming_rank_and_node(running):
    cluster, corral, run_id, follower = running
    killed_at = time.monotonic()
    cluster.nodes[1].run(["pkill", "-KILL", "-f", f"corral-run={run_id}"])
    state, elapsed = failed_within(corral, run_id, follower, killed_at)
    assert elapsed < DETECT_WITHIN_S, state
    assert "rank 1 on node2" in state["failure"], state["failure"]
    assert leftover_processes(cluster) == {}


def crash_node3(running) -> None:
    cluster, corral, run_id, follower = running
    crashed_at = time.monotonic()
    cluster.nodes[2].crash()
    state, elapsed = failed_within(corral, run_id, follower, crashed_at)
    assert elapsed < DETECT_WITHIN_S, state
    assert "node3" in state["failure"] and "rank 2" in state["failure"], state["failure"]


def test_a_crashed_node_is_named(running):
    crash_node3(running)
    cluster = running[0]
    assert leftover_processes(cluster) == {}  # the live nodes were swept when the run failed


def test_resume_without_the_crashed_node_keeps_the_effective_batch(running):
    crash_node3(running)
    cluster, corral, run_id, follower = running
    old = [json.loads(l) for l in corral.ok("logs", run_id, "--json").stdout.splitlines()]
    old_start = next(l["event"] for l in old if l["event"] and l["event"]["event"] == "start")
    # However far the run got before the crash, train 8 steps past its last checkpoint: the one on the head
    # node's disk, which is what a resume reads (the logs this computer holds may lag behind it).
    on_head = cluster.nodes[0].home_on_host / "corral" / "runs" / run_id / "checkpoints"
    last_checkpoint = max(int(path.name.removeprefix("step_")) for path in on_head.glob("step_*"))
    resumed = corral.run("train", "--resume", run_id, "--without", "node3", "--set", f"steps={last_checkpoint + 8}",
                         timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    new_id = run_id_of(resumed.stdout)
    lines = [json.loads(l) for l in corral.ok("logs", new_id, "--json").stdout.splitlines()]
    starts = {l["rank"]: l["event"] for l in lines if l["event"] and l["event"]["event"] == "start"}

    def effective(start: dict) -> int:
        return start["config"]["batch_size"] * start["config"]["grad_accum_steps"] * start["world_size"]

    assert sorted(starts) == [0, 1] and all(s["world_size"] == 2 for s in starts.values())
    assert effective(starts[0]) == effective(old_start) == 4 * 2 * 3
    assert starts[0]["config"]["grad_accum_steps"] == 3 and starts[0]["config"]["batch_size"] == 4
    steps = sorted({l["event"]["step"] for l in lines if l["event"] and l["event"]["event"] == "step"})
    assert steps == list(range(last_checkpoint + 1, last_checkpoint + 9))  # on from the checkpoint, not from 1
    assert json.loads(corral.ok("runs", "--json").stdout)[0]["resumed_from"] == run_id


def test_a_cut_link_fails_the_run_quickly_and_orphans_are_swept_when_it_returns(running):
    cluster, corral, run_id, follower = running
    node = cluster.nodes[1]
    cut_at = time.monotonic()
    node.link_down()
    try:
        state, elapsed = failed_within(corral, run_id, follower, cut_at)
        assert elapsed < DETECT_WITHIN_S, state
        assert "node2" in state["failure"] and "rank 1" in state["failure"], state["failure"]
        assert state["unreachable"] == ["node2"]
        assert node.name in leftover_processes(cluster)  # the cut node still runs its rank
    finally:
        node.link_up()
    stopped = corral.run("stop", run_id, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert leftover_processes(cluster) == {}
    assert status(corral, run_id)["unreachable"] == []
