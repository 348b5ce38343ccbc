"""corral train / logs / attach / status / stop / runs on a prepared 3-node test cluster (nodes left intact)."""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prepared(test_cluster, tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    corral = prepare_cluster(test_cluster, base / "home", base / "project")
    return test_cluster, corral, base / "project"


def test_train_streams_every_rank_to_finished(prepared):
    cluster, corral, _ = prepared
    result = corral.run("train", *TINY, "--set", "steps=6", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    assert f"Run {run_id}: finished, step 6/6" in result.stdout
    lines = events(corral, run_id)
    for rank in range(3):
        mine = [line["event"] for line in lines if line["rank"] == rank and line["event"]]
        assert [e["step"] for e in mine if e["event"] == "step"] == [1, 2, 3, 4, 5, 6], rank
        assert mine[0]["event"] == "start" and mine[0]["world_size"] == 3
        assert mine[-1]["event"] == "done"
    hosts = {line["rank"]: line["event"]["host"] for line in lines if line["event"] and line["event"]["event"] == "start"}
    assert hosts == {i: node.hostname for i, node in enumerate(cluster.nodes)}  # rank i on node i, head first
    state = status(corral, run_id)
    assert state["state"] == "finished" and state["step"] == 6 and state["total_steps"] == 6
    assert [(r["rank"], r["node"], r["step"]) for r in state["ranks"]] == [(0, "node1", 6), (1, "node2", 6), (2, "node3", 6)]
    assert all(r["loss"] > 0 for r in state["ranks"]) and state["elapsed_s"] > 0
    runs = json.loads(corral.ok("runs", "--json").stdout)
    assert runs[0]["id"] == run_id and runs[0]["state"] == "finished" and runs[0]["nodes"] == ["node1", "node2", "node3"]
    # Each rank ran in its own node's home with its own venv, and checkpoints landed in the run dir on the head.
    head = cluster.nodes[0]
    assert list((head.home_on_host / "corral" / "runs" / run_id / "checkpoints").glob("step_*"))
    assert not leftover_processes(cluster)


def test_detached_run_survives_and_attach_replays_history(prepared):
    cluster, corral, _ = prepared
    started = corral.ok("train", *TINY, "--set", "steps=40", "--detach")
    run_id = run_id_of(started.stdout)
    assert "Detached" in started.stdout  # this corral process has exited; the run goes on on the head node
    wait_for(corral, run_id, lambda s: s["step"] >= 5)
    attached = corral.run("attach", run_id, timeout=180)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    assert f"Run {run_id}: finished, step 40/40" in attached.stdout
    lines = events(corral, run_id)
    steps = {rank: [l["event"]["step"] for l in lines if l["rank"] == rank and l["event"] and l["event"]["event"] == "step"]
             for rank in range(3)}
    assert steps == {rank: list(range(1, 41)) for rank in range(3)}  # history from before attaching included


def test_a_burst_of_2000_lines_per_rank_arrives_whole(prepared):
    _, corral, _ = prepared
    started = corral.ok("train", "--detach", "--script", "burst.py", "2000")
    run_id = run_id_of(started.stdout)
    followed = corral.run("logs", run_id, "--follow", "--json", timeout=180)
    assert followed.returncode == 0, followed.stderr
    lines = [json.loads(line) for line in followed.stdout.splitlines()]
    for rank in range(3):
        mine = [l["text"] for l in lines if l["rank"] == rank]
        expected = [f"burst {rank} {i} " + "x" * ((i * 7919) % 300) for i in range(2000)]
        assert mine == expected, f"rank {rank}: {len(mine)} lines, first bad: " + next(
            (f"{a!r} != {b!r}" for a, b in zip(mine, expected) if a != b), "count differs")
    # The mirror on this computer holds the same bytes: a replay without the head gives the same lines.
    replayed = [json.loads(line)["text"] for line in corral.ok("logs", run_id, "--json").stdout.splitlines()]
    assert replayed == [l["text"] for l in lines]


def test_stop_ends_every_process_on_every_node(prepared):
    cluster, corral, _ = prepared
    run_id = run_id_of(corral.ok("train", *TINY, "--set", "steps=100000", "--detach").stdout)
    # Nobody follows this detached run, yet `corral runs` shows it running: it asks the head of each live run.
    # (The run is long so that it cannot finish between two polls.)
    deadline = time.monotonic() + 120
    while (listed := json.loads(corral.ok("runs", "--json").stdout)[0])["state"] != "running":
        assert listed["id"] == run_id and listed["state"] == "starting" and time.monotonic() < deadline, listed
        time.sleep(1)
    wait_for(corral, run_id, lambda s: s["state"] == "running" and s["step"] >= 2)
    assert all(leftover_processes(cluster).get(node.name) for node in cluster.nodes)  # ranks (and orted) run
    started = time.monotonic()
    stopped = corral.run("stop", run_id)
    elapsed = time.monotonic() - started
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert elapsed < 5.0, stopped.stdout
    assert leftover_processes(cluster) == {}
    assert status(corral, run_id)["state"] == "stopped"
    assert json.loads(corral.ok("runs", "--json").stdout)[0]["state"] == "stopped"
