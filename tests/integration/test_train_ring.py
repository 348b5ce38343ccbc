"""Run control on a prepared 2-node test cluster shared by the module: the ring backend (mlx.launch on the head node) —
a whole run, two ranks per node, a killed rank — and a live run's record."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time

import pytest

from cluster.run_follow import refresh_live_runs
from tests.integration.train_helpers import (
    UNCOMPILED,
    events,
    follow_in_background,
    leftover_processes,
    no_leftovers_within,
    prepare_cluster,
    recorded_record,
    run_id_of,
    status,
    wait_for,
)
from tests.testbed.cluster import TestCluster, can_build_clusters

pytestmark = pytest.mark.integration

RANKS = 2


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two nodes with keys, a synced project and venvs: (cluster, corral); the nodes stay intact between tests."""
    ok, reason = can_build_clusters()
    if not ok:
        pytest.skip(f"cannot build a test cluster: {reason}")
    base = tmp_path_factory.mktemp("train_ring")
    with TestCluster(n=RANKS) as cluster:
        yield cluster, prepare_cluster(cluster, base / "home", base / "project")


def steps_per_rank(lines: list[dict]) -> dict[int, list[int]]:
    steps: dict[int, list[int]] = {}
    for line in lines:
        if line["event"] and line["event"]["event"] == "step":
            steps.setdefault(line["rank"], []).append(line["event"]["step"])
    return steps


def test_ring_run_streams_every_rank_to_finished(prepared):
    cluster, corral = prepared
    result = corral.run("train", "--backend", "ring", *UNCOMPILED, "--set", "steps=6", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    assert f"Run {run_id}: finished, step 6/6" in result.stdout, result.stdout + result.stderr
    lines = events(corral, run_id)
    assert steps_per_rank(lines) == {rank: [1, 2, 3, 4, 5, 6] for rank in range(RANKS)}
    starts = {l["rank"]: l["event"] for l in lines if l["event"] and l["event"]["event"] == "start"}
    assert {rank: start["world_size"] for rank, start in starts.items()} == {rank: RANKS for rank in range(RANKS)}
    assert {rank: start["host"] for rank, start in starts.items()} == {i: n.hostname for i, n in enumerate(cluster.nodes)}
    assert all(any(l["rank"] == rank and l["event"] and l["event"]["event"] == "done" for l in lines) for rank in range(RANKS))
    state = status(corral, run_id)
    assert state["state"] == "finished" and state["step"] == 6, state
    assert [(r["rank"], r["node"], r["step"]) for r in state["ranks"]] == [(0, "node1", 6), (1, "node2", 6)]
    record = json.loads(corral.ok("runs", "--json").stdout)[0]
    assert record["id"] == run_id and record["backend"] == "ring" and record["state"] == "finished"
    assert list((cluster.nodes[0].home_on_host / "corral" / "runs" / run_id / "checkpoints").glob("step_*"))
    assert not leftover_processes(cluster)


def set_slots(corral, cluster, slots: int) -> None:  # noqa: ANN001
    """Give every node ``slots`` ranks (removed and added again in order: node1 stays the head)."""
    for node in cluster.nodes:
        corral.ok("node", "remove", node.name)
    for node in cluster.nodes:
        corral.ok("node", "add", node.address, "--user", node.user, "--name", node.name, "--slots", str(slots))


def test_ring_run_with_two_ranks_per_node_attributes_every_rank_to_its_node(prepared):
    cluster, corral = prepared
    set_slots(corral, cluster, 2)
    try:
        result = corral.run("train", "--backend", "ring", *UNCOMPILED, "--set", "steps=4", timeout=240)
    finally:
        set_slots(corral, cluster, 1)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    lines = events(corral, run_id)
    world = 2 * RANKS
    assert steps_per_rank(lines) == {rank: [1, 2, 3, 4] for rank in range(world)}
    starts = {l["rank"]: l["event"] for l in lines if l["event"] and l["event"]["event"] == "start"}
    assert {rank: start["world_size"] for rank, start in starts.items()} == {rank: world for rank in range(world)}
    # mlx.launch gives ranks to the hosts JSON's entries in order: node1's two slots, then node2's.
    expected_nodes = [node for node in cluster.nodes for _ in range(2)]
    assert {rank: start["host"] for rank, start in starts.items()} == {
        rank: node.hostname for rank, node in enumerate(expected_nodes)}
    state = status(corral, run_id)
    assert state["state"] == "finished" and state["world_size"] == world, state
    assert [(r["rank"], r["node"], r["step"], r["done"]) for r in state["ranks"]] == [
        (rank, node.name, 4, True) for rank, node in enumerate(expected_nodes)]
    assert not leftover_processes(cluster)


def test_ring_run_with_a_killed_rank_fails_though_the_launcher_may_exit_0(prepared):
    cluster, corral = prepared
    run_id = run_id_of(corral.ok("train", "--backend", "ring", *UNCOMPILED, "--set", "steps=100000", "--detach").stdout)
    follower = subprocess.Popen([sys.executable, "-m", "cluster.cli", "--home", str(corral.home), "logs", run_id,
                                 "--follow"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(corral, run_id, lambda s: s["state"] == "running" and s["step"] >= 3)
        cluster.nodes[1].run(["pkill", "-KILL", "-f", f"corral-run={run_id}"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = next(r for r in json.loads(corral.ok("runs", "--json").stdout) if r["id"] == run_id)
            if record["state"] != "running":
                break
            time.sleep(0.2)
        follower.wait(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
        follower.wait()
    state = status(corral, run_id)
    assert state["state"] == "failed", state
    # Named from mlx.launch's report, not from rank 0's "connection to a peer was lost".
    assert state["failure"].startswith("rank 1 on node2 ended with exit code"), state["failure"]
    assert leftover_processes(cluster) == {}


def wait_for_a_step_on_the_head(cluster, run_id: str, timeout_s: float = 120) -> None:  # noqa: ANN001
    """Until the head's output.log has a step event: read on its disk, so corral learns nothing from it."""
    log = cluster.nodes[0].home_on_host / "corral" / "runs" / run_id / "output.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and '"event":"step"' in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} made no step within {timeout_s} s")


def test_the_record_of_a_live_run_says_running_once_a_follow_or_status_has_seen_steps(prepared):
    cluster, corral = prepared
    followed = run_id_of(corral.ok("train", *UNCOMPILED, "--set", "steps=100000", "--detach").stdout)
    asked = run_id_of(corral.ok("train", *UNCOMPILED, "--set", "steps=100000", "--detach").stdout)
    follower = follow_in_background(corral, followed)
    try:
        wait_for_a_step_on_the_head(cluster, followed)
        deadline = time.monotonic() + 10
        while recorded_record(corral, followed)["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        first = recorded_record(corral, followed)
        assert first["state"] == "running", first  # its step is the slowest rank's: maybe still 0
        # The step is written now and then while the follow goes on.
        deadline = time.monotonic() + 15
        while recorded_record(corral, followed)["step"] <= first["step"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert recorded_record(corral, followed)["step"] > first["step"]

        wait_for_a_step_on_the_head(cluster, asked)
        refreshed = {r.id: r for r in asyncio.run(refresh_live_runs(corral.paths))}  # for `corral runs`
        assert refreshed[asked].state == "running" and refreshed[asked].step >= 1, refreshed[asked]
        assert status(corral, asked)["state"] == "running"
        assert recorded_record(corral, asked)["state"] == "running"  # what `corral status` learnt, kept
    finally:
        for run_id in (followed, asked):
            corral.run("stop", run_id, timeout=60)
        with contextlib.suppress(subprocess.TimeoutExpired):
            follower.wait(timeout=60)
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert recorded_record(corral, followed)["state"] == "stopped"
    assert no_leftovers_within(cluster) == {}
