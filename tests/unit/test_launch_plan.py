"""The launch's pure parts: hostfile, argv builders, the effective batch on resume, run records and ids."""

from __future__ import annotations

import subprocess

import pytest

from cluster.cli_train import trainer_flags
from cluster.errors import ClusterError
from cluster.home import CorralHome
from cluster.inventory import Node
from cluster.launch_plan import (
    RankCommand,
    effective_accumulation,
    hostfile_text,
    mpirun_argv,
    needs_oversubscribe,
    ring_hosts_json,
    trainer_program,
)
from cluster.runs import RunRecord, list_runs, new_run_id, resolve_run, save_record

NODES = [Node("studio", "10.0.0.11", user="ann", slots=2), Node("mini", "10.0.0.12", user="bob")]


def test_hostfile_lists_user_address_and_slots_head_first():
    assert hostfile_text(NODES) == "ann@10.0.0.11 slots=2\nbob@10.0.0.12 slots=1\n"


def test_ring_hosts_have_one_entry_per_rank_by_node_name():
    assert ring_hosts_json(NODES) == ('[{"ssh": "studio", "ips": ["10.0.0.11"]}, {"ssh": "studio", "ips": '
                                      '["10.0.0.11"]}, {"ssh": "mini", "ips": ["10.0.0.12"]}]')


@pytest.mark.parametrize(("cpus", "expected"), [({"studio": 8, "mini": 4}, False), ({"studio": 1, "mini": 4}, True),
                                                ({}, False), ({"studio": 0}, False)])
def test_oversubscribe_only_when_slots_exceed_cpus(cpus, expected):
    assert needs_oversubscribe(NODES, cpus) is expected


def test_mpirun_argv_keeps_mpi_on_the_inventory_network():
    rank = RankCommand("", "corral/runs/r1", "corral/venvs/p/bin/python", "corral/lib", trainer_program("r1", 3))
    argv = mpirun_argv(hostfile="corral/runs/r1/hostfile", world_size=3, network="10.0.0.0/24", oversubscribe=False,
                       allow_root=False, rank=rank)
    assert argv[:10] == ["mpirun", "--hostfile", "corral/runs/r1/hostfile", "-np", "3", "--mca", "oob_tcp_if_include",
                         "10.0.0.0/24", "--mca", "btl_tcp_if_include"]
    assert "--oversubscribe" not in argv and "--tag-output" in argv
    tag = argv.index("--tag-output")
    assert argv[tag + 1:tag + 2] == ["sh"] and argv[tag + 4:tag + 9] == ["corral-rank", "", "corral/runs/r1",
                                                                         "corral/venvs/p/bin/python", "corral/lib"]
    assert argv[tag + 9:] == ["-X", "corral-run=r1", "-m", "trainer", "--config", "config.toml", "--expect_world_size", "3"]


def test_the_rank_script_runs_from_the_base_with_the_library_on_the_path(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "probe_mod.py").write_text("import os, sys; print(os.getcwd(), sys.argv[1:])\n")
    rank = RankCommand(str(tmp_path), "work", "/usr/bin/python3", "lib", ("-m", "probe_mod", "a b", "$HOME"))
    out = subprocess.run(rank.argv(), capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{tmp_path / 'work'} ['a b', '$HOME']"  # arguments arrive verbatim, never as shell


@pytest.mark.parametrize(("effective", "batch", "world", "accum"), [(24, 4, 2, 3), (12, 4, 3, 1), (48, 8, 2, 3)])
def test_resume_keeps_the_effective_batch(effective, batch, world, accum):
    assert effective_accumulation(effective, batch, world) == accum


def test_an_effective_batch_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="not a multiple of batch_size 4 × 2 ranks"):
        effective_accumulation(12, 4, 2)


def test_set_flags_become_trainer_flags():
    assert trainer_flags(["steps=5", "data=a=b"]) == ("--steps", "5", "--data", "a=b")
    with pytest.raises(ClusterError, match="FIELD=VALUE"):
        trainer_flags(["steps"])


def _record(run_id: str, created: float) -> RunRecord:
    return RunRecord(id=run_id, created=created, nodes=("a",), head="a", world_size=1, backend="mpi",
                     program=("-X", f"corral-run={run_id}", "-m", "trainer"), remote_run_dir=f"corral/runs/{run_id}")


def test_runs_are_found_by_unique_prefix_or_latest(tmp_path):
    home = CorralHome(tmp_path)
    for run_id, created in (("20260101-100000-aaaa", 1.0), ("20260101-100000-aabb", 2.0), ("20260102-090000-cccc", 3.0)):
        save_record(home, _record(run_id, created))
    assert [r.id for r in list_runs(home)] == ["20260102-090000-cccc", "20260101-100000-aabb", "20260101-100000-aaaa"]
    assert resolve_run(home, None).id == resolve_run(home, "latest").id == "20260102-090000-cccc"
    assert resolve_run(home, "20260101-100000-aab").id == "20260101-100000-aabb"
    with pytest.raises(ClusterError, match="matches 2 runs"):
        resolve_run(home, "20260101")
    with pytest.raises(ClusterError, match="No run id starts with 'x'"):
        resolve_run(home, "x")


def test_a_record_round_trips_and_ids_sort_by_time(tmp_path):
    home = CorralHome(tmp_path)
    record = _record("r1", 5.0).updated(unreachable=("a",), supervisor=("py", "sup.py"))
    save_record(home, record)
    assert list_runs(home) == [record]
    assert new_run_id(0) < new_run_id(86400 * 365)
