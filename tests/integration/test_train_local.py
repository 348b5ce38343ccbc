"""Local mode: with no nodes, `corral train` and `corral demo` run 2 ranks under mpirun on this computer."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.integration.corral_cli import CorralCli
from tests.integration.train_helpers import TINY, run_id_of, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not installed (apt-get install openmpi-bin)"),
]


def test_demo_trains_the_bundled_model_to_the_end(tmp_path):
    corral = CorralCli(tmp_path / "home")
    result = corral.run("demo", "--steps", "20", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stdout.splitlines()[-1])
    assert f"Run {run_id}: finished, step 20/20" in result.stdout
    assert "step 20/20" in result.stderr and "loss" in result.stderr and "ETA" in result.stderr  # the progress bar
    state = json.loads(corral.ok("status", run_id, "--json").stdout)
    assert state["state"] == "finished"
    assert [(r["rank"], r["node"], r["step"]) for r in state["ranks"]] == [(0, "local", 20), (1, "local", 20)]
    first, last = (json.loads(l)["event"]["loss"] for l in corral.ok("logs", run_id, "--json").stdout.splitlines()
                   if json.loads(l)["event"] and json.loads(l)["event"]["event"] == "step"
                   and json.loads(l)["event"]["step"] in (1, 20) and json.loads(l)["rank"] == 0)
    assert last < first  # it learned something


def test_train_without_nodes_runs_here_and_stop_leaves_nothing(tmp_path):
    corral = CorralCli(tmp_path / "home")
    run_id = run_id_of(corral.ok("train", *TINY, "--set", "steps=100000", "--detach").stdout)
    record = json.loads(corral.ok("runs", "--json").stdout)[0]
    assert record["local"] and record["world_size"] == 2 and record["nodes"] == ["local"]
    wait_for(corral, run_id, lambda s: s["step"] >= 3)
    assert subprocess.run(["pgrep", "-f", f"corral-run={run_id}"], capture_output=True).stdout.split()
    corral.ok("stop", run_id)
    assert not subprocess.run(["pgrep", "-f", f"corral-run={run_id}"], capture_output=True).stdout.split()
    assert json.loads(corral.ok("status", run_id, "--json").stdout)["state"] == "stopped"
