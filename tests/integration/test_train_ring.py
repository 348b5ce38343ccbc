"""corral train --backend ring (mlx.launch on the head node) on a prepared 2-node test cluster: a whole run, a killed rank."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.integration.train_helpers import (
    TINY,
    events,
    leftover_processes,
    prepare_cluster,
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
    result = corral.run("train", "--backend", "ring", *TINY, "--set", "steps=6", timeout=180)
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


def test_ring_run_with_a_killed_rank_fails_though_the_launcher_may_exit_0(prepared):
    cluster, corral = prepared
    run_id = run_id_of(corral.ok("train", "--backend", "ring", *TINY, "--set", "steps=100000", "--detach").stdout)
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
