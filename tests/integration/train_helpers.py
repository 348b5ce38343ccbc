"""Helpers for the run-control tests: a cluster prepared as a user would, and checks on what runs on the nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.corral_cli import CorralCli

# Shared with test_env.py and test_doctor.py, so repeated runs reuse the downloaded wheels.
WHEEL_CACHE = Path(os.environ.get("CORRAL_TEST_WHEEL_CACHE", "/var/tmp/corral-test-wheel-cache"))
# Small enough for the shared 2-core test machine: a step takes tens of milliseconds on 3 ranks.
TINY = ["--set", "n_layers=1", "--set", "d_model=32", "--set", "n_heads=2", "--set", "seq_len=32",
        "--set", "batch_size=4", "--set", "warmup_steps=2", "--set", "eval_every=0", "--set", "node_every_s=1"]
# For runs whose speed does not matter: mx.compile runs a C++ compiler on every fresh node before the first step,
# which takes a minute on the busy shared test machine.
UNCOMPILED = [*TINY, "--set", "compile=false"]

BURST_SCRIPT = """\
import os, sys
rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
lines = int(sys.argv[1])
for i in range(lines):
    # Varying lengths, some long: chunk boundaries fall anywhere.
    sys.stdout.write(f"burst {rank} {i} " + "x" * ((i * 7919) % 300) + "\\n")
sys.stdout.flush()
"""


def prepare_cluster(cluster, home: Path, project: Path) -> CorralCli:
    """Keys, `corral sync` of a small project, `corral env --wheels push` (the wheels come from the shared cache)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CORRAL_WHEELHOUSE", str(WHEEL_CACHE))
        corral = CorralCli(home)
        corral.add_nodes(cluster.nodes)
        corral.install_keys(cluster.nodes)
        project.mkdir(parents=True, exist_ok=True)
        (project / "burst.py").write_text(BURST_SCRIPT)
        corral.ok("sync", str(project))
        env = corral.run("env", "--wheels", "push", timeout=900)
        assert env.returncode == 0, env.stdout + env.stderr
    return corral


def run_id_of(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("Run "):
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no run id in {output!r}")


def status(corral: CorralCli, run_id: str) -> dict:
    return json.loads(corral.ok("status", run_id, "--json").stdout)


def wait_for(corral: CorralCli, run_id: str, predicate, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    last = {}
    while time.monotonic() < deadline:
        last = status(corral, run_id)
        if predicate(last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never got there: {last}")


def leftover_processes(cluster) -> dict[str, list[str]]:
    """Per node: processes of the node user, seen from inside the node (its own PID namespace), sshd excepted.

    sshd sessions are corral's own SSH connections: rsync's shared connection (ControlPersist) stays a while.
    Zombies are left out: they have exited and only wait for the node's PID 1 (the test bed's init) to reap them.
    """
    found: dict[str, list[str]] = {}
    for node in cluster.nodes:
        if not node.alive:
            continue
        listing = node.run(["ps", "-eo", "uid=,pid=,stat=,args="], timeout=10).stdout
        rows = [row.split(None, 3) for row in listing.splitlines() if row.split() and row.split()[0] == str(node.uid)]
        found[node.name] = [" ".join(row) for row in rows
                            if len(row) == 4 and not row[2].startswith("Z") and "sshd" not in row[3]]
    return {name: rows for name, rows in found.items() if rows}


def events(corral: CorralCli, run_id: str) -> list[dict]:
    """Every line of the run as `corral logs --json` prints it."""
    out = corral.ok("logs", run_id, "--json").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def follow_in_background(corral: CorralCli, run_id: str) -> subprocess.Popen:
    """`corral logs RUN --follow` as a separate process, as a user watching the run would have it."""
    return subprocess.Popen([sys.executable, "-m", "cluster.cli", "--home", str(corral.home), "logs", run_id,
                             "--follow"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def long_watched_run(cluster, home: Path, project: Path) -> tuple[CorralCli, str, subprocess.Popen]:
    """A prepared cluster with a long run past its first checkpoints and a follower: (corral, run id, follower)."""
    corral = prepare_cluster(cluster, home, project)
    run_id = run_id_of(corral.ok("train", *UNCOMPILED, "--set", "steps=100000", "--set", "checkpoint_every=5",
                                 "--set", "grad_accum_steps=2", "--detach").stdout)
    follower = follow_in_background(corral, run_id)
    try:
        wait_for(corral, run_id, lambda s: s["state"] == "running" and s["step"] >= 12, timeout_s=180)
    except BaseException:
        follower.kill()
        follower.wait()
        raise
    return corral, run_id, follower


def recorded_record(corral: CorralCli, run_id: str) -> dict:
    """The run's record as `corral runs --json` lists it (what corral knows now, without asking the nodes)."""
    return next(r for r in json.loads(corral.ok("runs", "--json").stdout) if r["id"] == run_id)


def recorded_state(corral: CorralCli, run_id: str) -> str:
    return recorded_record(corral, run_id)["state"]


def failed_within(corral: CorralCli, run_id: str, follower: subprocess.Popen, since: float) -> tuple[dict, float]:
    """The run's status once the follower has recorded it failed, and how long after ``since`` that was."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and recorded_state(corral, run_id) != "failed":
        time.sleep(0.1)
    elapsed = time.monotonic() - since
    follower.wait(timeout=60)
    state = status(corral, run_id)
    assert state["state"] == "failed", state
    return state, elapsed


def no_leftovers_within(cluster, timeout_s: float = 5.0) -> dict[str, list[str]]:
    """Leftover processes once none is left, or those still there after ``timeout_s`` (exiting takes a moment)."""
    deadline = time.monotonic() + timeout_s
    while (found := leftover_processes(cluster)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found
