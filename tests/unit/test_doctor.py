"""The doctor's pure parts: probe parsers, verdicts and their sentences, fabric judging, the report's table."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli_doctor import format_report
from cluster.doctor.fabric import FabricOutput, FabricRun, hostfile_text, judge_fabric, rank_owners
from cluster.doctor.model import CLUSTER, CheckResult, DoctorReport, Status, sort_results
from cluster.doctor.node_checks import (
    DISK_FAIL_BYTES,
    DISK_WARN_BYTES,
    GB,
    MEMORY_WARN_BYTES,
    agreement_results,
    code_result,
    join_names,
    mpi_address_result,
    mpirun_results,
    resources_result,
    venv_result,
    version_results,
)
from cluster.doctor.node_probe import (
    NodeFacts,
    VenvFacts,
    address_in,
    node_probe_argv,
    parse_addresses,
    parse_df_available,
    parse_memory,
    parse_mpirun_version,
    parse_node_probe,
)
from cluster.doctor.reachability import (
    CONNECTOR_PY,
    LISTENER_PY,
    explain_connect_error,
    parse_connector_output,
)
from cluster.doctor.runner import peer_ssh_sentence
from cluster.inventory import Node
from cluster.layout import RemoteLayout

DATA = Path(__file__).parent / "data" / "doctor"
LAYOUT = RemoteLayout("train-1a2b3c4d")


def nodes(*slots: int) -> list[Node]:
    return [Node(f"node{i}", f"10.0.0.{10 + i}", user=f"lab{i}", slots=s) for i, s in enumerate(slots, start=1)]


# --- probe parsers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("ip_o_linux.txt", [("lo", "127.0.0.1"), ("eth0", "10.77.0.11"), ("enp0s31f6", "192.168.1.20")]),
        ("ifconfig_macos.txt", [("lo0", "127.0.0.1"), ("en0", "192.168.1.31"), ("bridge0", "169.254.12.7")]),
    ],
)
def test_addresses_are_read_from_ip_and_ifconfig(file, expected):
    found = parse_addresses((DATA / file).read_text())
    assert [(a.interface, a.ip) for a in found] == expected


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [("169.254.0.0/16", "169.254.12.7"), ("192.168.1.0/24", "192.168.1.31"), ("10.0.0.0/8", None),
     ("127.0.0.0/8", None)],  # loopback never counts: other nodes cannot reach it
)
def test_the_address_inside_the_mpi_network_is_chosen(cidr, expected):
    found = address_in(parse_addresses((DATA / "ifconfig_macos.txt").read_text()), cidr)
    assert (found.ip if found else None) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mpirun (Open MPI) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/", ("Open MPI", "4.1.4")),
        ("mpirun (Open MPI) 5.0.3\n\nReport bugs to https://www.open-mpi.org/community/help/", ("Open MPI", "5.0.3")),
        ("HYDRA build details:\n    Version:                                 4.0\n", ("MPICH", "4.0")),
        ("Intel(R) MPI Library for Linux* OS, Version 2021.6 Build 20220227", ("Intel MPI", "2021.6")),
        ("sh: mpirun: not found", (None, None)),
    ],
)
def test_mpirun_version_output(text, expected):
    assert parse_mpirun_version(text) == expected


def test_df_and_memory_on_linux_and_macos():
    assert parse_df_available(["Filesystem 1024-blocks Used Available Capacity Mounted on",
                               "/dev/vda 264212084 24373148 82017764 23% /"]) == 82017764 * 1024
    assert parse_df_available(["/dev/disk3s5 971350180 900000000 3000000 97% /Volumes/My Disk"]) == 3000000 * 1024
    assert parse_memory(["MemTotal: 1000 kB", "MemAvailable: 600 kB"]) == (1000 * 1024, 600 * 1024)
    mac = ["hw.memsize: 68719476736", "Mach Virtual Memory Statistics: (page size of 16384 bytes)",
           "Pages free: 100.", "Pages active: 5.", "Pages inactive: 20.", "Pages speculative: 3."]
    assert parse_memory(mac) == (68719476736, (100 + 20 + 3) * 16384)


def test_a_healthy_linux_probe_passes_every_node_check():
    facts = parse_node_probe((DATA / "probe_linux_healthy.txt").read_text())
    assert facts.complete and facts.hostname == "node1-crl0abc00"
    results = [code_result("node1", facts, LAYOUT), venv_result("node1", facts, LAYOUT),
               resources_result("node1", facts), mpi_address_result("node1", facts, "10.77.0.0/24")]
    assert [r.status for r in results] == [Status.PASS] * 4
    assert results[1].detail == "Python 3.11.2, mlx 0.32.4, mpi4py 4.1.2, OpenBLAS"
    assert results[3].detail == "10.77.0.11 on eth0"
    assert mpirun_results({"node1": facts}, ["node1"])[0].detail == "Open MPI 4.1.4"


def test_a_mac_with_problems_gets_a_sentence_per_problem():
    facts = parse_node_probe((DATA / "probe_macos_problems.txt").read_text())
    code = code_result("studio", facts, LAYOUT)
    assert code.status is Status.FAIL
    assert code.fix == "studio: no project code at ~/corral/projects/train-1a2b3c4d; run `corral sync --to studio` to copy it."
    venv = venv_result("studio", facts, LAYOUT)
    assert venv.fix == "studio: there is no venv at ~/corral/venvs/train-1a2b3c4d; run `corral env --to studio` to create it."
    resources = resources_result("studio", facts)
    assert resources.status is Status.WARN and "only 2.9 GB free" in resources.fix and "only 938 MB of memory" in resources.fix
    mpirun = mpirun_results({"studio": facts}, ["studio"])[0]
    assert mpirun.status is Status.FAIL
    assert mpirun.fix.startswith("studio: mpirun is in /opt/homebrew/bin but not on the PATH of non-interactive SSH sessions")
    assert "~/.zshenv" in mpirun.fix
    address = mpi_address_result("studio", facts, "169.254.0.0/16")
    assert address.fix == ("studio has no address in 169.254.0.0/16 (it has 192.168.1.31 (en0)): connect its cable "
                           "(e.g. Thunderbolt) to that network, or choose another network with `corral network`.")


def test_the_probe_script_runs_in_a_posix_shell(tmp_path):
    home = tmp_path / "home"
    (home / LAYOUT.code_dir).mkdir(parents=True)
    (home / LAYOUT.code_dir / "train.py").write_text("")
    venv_python = home / LAYOUT.venv_python
    venv_python.parent.mkdir(parents=True)
    # This project's Python stands in for the node's venv: it has mlx and mpi4py.
    venv_python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    venv_python.chmod(0o755)
    argv = node_probe_argv(LAYOUT.code_dir, LAYOUT.venv_python)
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "HOME": str(home)}, timeout=60)
    facts = parse_node_probe(out.stdout)
    assert facts.complete and facts.code == "nonempty", out.stdout + out.stderr
    assert facts.disk_free_bytes and facts.memory_available_bytes
    assert any(a.ip == "127.0.0.1" for a in facts.addresses)
    assert facts.venv is not None and facts.venv.mlx and facts.venv.mpi4py, facts.venv
    # Paths travel as arguments, so a path with quotes or spaces cannot change the script.
    assert LAYOUT.code_dir not in argv[2]


def test_the_probe_reports_a_missing_code_dir_and_venv(tmp_path):
    argv = node_probe_argv("corral/projects/x y 'z'", "corral/venvs/x/bin/python")
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=60)
    facts = parse_node_probe(out.stdout)
    assert (facts.code, facts.venv.missing) == ("missing", True)


# --- verdicts -------------------------------------------------------------------------------------


def venv_facts(**venvs: VenvFacts) -> dict[str, NodeFacts]:
    return {name: NodeFacts(venv=venv, complete=True) for name, venv in venvs.items()}


def test_the_odd_mlx_is_named_by_majority():
    facts = venv_facts(node1=VenvFacts(python="3.11.2", mlx="0.32.4"), node2=VenvFacts(python="3.11.2", mlx="0.31.0"),
                       node3=VenvFacts(python="3.11.2", mlx="0.32.4"))
    results = version_results(facts, ["node1", "node2", "node3"], ["node1", "node2", "node3"], {})
    failures = [r for r in results if r.status is Status.FAIL]
    assert [(r.node, r.check) for r in failures] == [("node2", "mlx-version")]
    assert failures[0].fix == ("node2: mlx 0.31.0 in the venv but 0.32.4 on node1 and node3; "
                               "run `corral env --to node2` to reinstall it.")


def test_a_tie_goes_to_the_head_node_and_nodes_without_a_venv_are_skipped():
    facts = venv_facts(node1=VenvFacts(python="3.12.1", mlx="0.32.4"), node2=VenvFacts(python="3.11.2", mlx="0.32.4"),
                       node3=VenvFacts(missing=True))
    results = version_results(facts, ["node1", "node2"], ["node1", "node2", "node3"], {"node3": "venv failed"})
    by_cell = {(r.node, r.check): r for r in results}
    assert by_cell[("node2", "python-version")].fix == (
        "node2: Python 3.11.2 in the venv but 3.12.1 on node1; rebuild its venv from Python 3.12 with "
        "`corral env --to node2 --python PATH`.")
    assert by_cell[("node3", "mlx-version")].detail == "skipped: venv failed"


@pytest.mark.parametrize(
    ("disk", "memory", "status"),
    [
        (100 * GB, 16 * GB, Status.PASS),
        (DISK_WARN_BYTES - 1, 16 * GB, Status.WARN),
        (100 * GB, MEMORY_WARN_BYTES - 1, Status.WARN),
        (DISK_FAIL_BYTES - 1, 16 * GB, Status.FAIL),
        (None, 16 * GB, Status.WARN),
    ],
)
def test_resource_thresholds(disk, memory, status):
    result = resources_result("node1", NodeFacts(disk_free_bytes=disk, memory_available_bytes=memory))
    assert result.status is status
    assert (result.fix is None) == (status is Status.PASS)
    if result.fix:
        assert result.fix.startswith("node1")


def test_venv_import_errors_and_a_missing_libmpi():
    broken = venv_result("node2", NodeFacts(venv=VenvFacts(python="3.11.2", mlx_error="ImportError: libmpi")), LAYOUT)
    assert broken.fix.startswith("node2: mlx.core (ImportError: libmpi) cannot be imported in the venv")
    assert broken.fix.endswith("run `corral env --to node2` to rebuild it.")
    no_libmpi = venv_result("node2", NodeFacts(venv=VenvFacts(python="3.11.2", mlx="0.32.4", mpi4py="4.1.2",
                                                                mlx_mpi=False)), LAYOUT)
    assert no_libmpi.status is Status.WARN and "libopenmpi-dev" in no_libmpi.fix and "MLX_MPI_LIBNAME" in no_libmpi.fix


def test_a_linux_node_without_openblas_is_warned_a_mac_is_not():
    healthy = dict(python="3.11.2", mlx="0.32.4", mpi4py="4.1.2", mlx_mpi=True)
    linux = venv_result("node3", NodeFacts(venv=VenvFacts(**healthy, platform="linux", blas=None)), LAYOUT)
    assert linux.status is Status.WARN and linux.detail.endswith("no OpenBLAS")
    assert linux.fix.startswith("node3 has no OpenBLAS") and "sudo apt install libopenblas0" in linux.fix
    mac = venv_result("mac", NodeFacts(venv=VenvFacts(**healthy, platform="darwin", blas=None)), LAYOUT)
    assert mac.status is Status.PASS and mac.detail == "Python 3.11.2, mlx 0.32.4, mpi4py 4.1.2"


def test_different_open_mpi_versions_name_the_odd_node():
    def with_mpirun(version: str) -> NodeFacts:
        return NodeFacts(mpirun_path="/usr/bin/mpirun", mpirun_version_text=f"mpirun (Open MPI) {version}")

    facts = {"node1": with_mpirun("4.1.4"), "node2": with_mpirun("4.1.4"), "node3": with_mpirun("5.0.3")}
    results = mpirun_results(facts, ["node1", "node2", "node3"])
    assert [r.status for r in results] == [Status.PASS, Status.PASS, Status.FAIL]
    assert results[2].fix.startswith("node3: Open MPI 5.0.3 but 4.1.4 on node1 and node2;")


def test_join_names_and_agreement_with_nothing_to_compare():
    assert [join_names(n) for n in ([], ["a"], ["a", "b"], ["a", "b", "c"])] == ["", "a", "a and b", "a, b and c"]
    assert agreement_results("mlx-version", {}, ["node1"], lambda *a: "") == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ECONNREFUSED", "refused, although corral's test listener was running there, so a firewall on node3"),
        ("EHOSTUNREACH", "no route to the host (EHOSTUNREACH)"),
        ("ENETUNREACH", "network unreachable (ENETUNREACH)"),
        ("TIMEOUT", "timed out after 3 s, so packets are silently dropped"),
        ("EACCES", "forbidden (EACCES) by a firewall rule"),
    ],
)
def test_each_connect_errno_is_explained(code, expected):
    sentence = explain_connect_error("node1", "node3", "10.0.0.13", code, "10.0.0.0/24")
    assert sentence.startswith("node1 cannot open a TCP connection to node3 at 10.0.0.13")
    assert expected in sentence


def test_the_listener_and_connector_scripts_really_connect_and_refuse():
    listener = subprocess.Popen([sys.executable, "-I", "-c", LISTENER_PY, "127.0.0.1", "1", "10"],
                                stdout=subprocess.PIPE, text=True)
    try:
        port = int(listener.stdout.readline().split()[1])
        with socket.socket() as spare:  # a port nobody listens on
            spare.bind(("127.0.0.1", 0))
            closed = spare.getsockname()[1]
        out = subprocess.run([sys.executable, "-I", "-c", CONNECTOR_PY, "3", "up", "127.0.0.1", str(port),
                              "down", "127.0.0.1", str(closed)], capture_output=True, text=True, timeout=30)
        assert parse_connector_output(out.stdout) == {"up": "ok", "down": "ECONNREFUSED"}
        assert listener.wait(10) == 0
        assert listener.stdout.read().strip() == "CORRAL-ACCEPTED 1"
    finally:
        listener.kill()


@pytest.mark.parametrize(
    ("stderr", "fix"),
    [
        ("lab2@10.0.0.12: Permission denied (publickey,password).", "run `corral keys`"),
        ("Host key verification failed.", "run `corral keys`"),
        ("ssh: connect to host 10.0.0.12 port 22: No route to host", "check that sshd runs on node2"),
        ("ssh: connect to host 10.0.0.12 port 22: Connection refused", "check that sshd runs on node2"),
    ],
)
def test_node_to_node_ssh_failures_point_at_keys_or_network(stderr, fix):
    sentence = peer_ssh_sentence("node1", nodes(1, 1)[1], stderr, 255)
    assert sentence.startswith(f"node1 cannot log in to node2 (10.0.0.12) by key without a prompt ({stderr})")
    assert fix in sentence


# --- fabric ---------------------------------------------------------------------------------------


def record(rank: int, world: int, *, mlx_size: int | None = None, host: str = "", summed: bool = True) -> dict:
    mlx_size = world if mlx_size is None else mlx_size
    data = {"host": host, "mlx_rank": rank if mlx_size > 1 else 0, "mlx_size": mlx_size, "mpi4py_rank": rank,
            "mpi4py_size": world, "mpi4py_sum": world}
    if summed:
        data["mlx_sum"] = float(world)
    else:
        data["mlx_sum_skipped"] = [world] * world
    return data


def test_ranks_fill_each_nodes_slots_in_order_and_the_hostfile_lists_them():
    assert rank_owners(nodes(2, 1)) == {0: "node1", 1: "node1", 2: "node2"}
    assert hostfile_text(nodes(2, 1)) == "10.0.0.11 slots=2\n10.0.0.12 slots=1\n"


def test_a_healthy_fabric_passes_every_node():
    cluster = nodes(1, 1, 1)
    run = FabricRun(records={r: record(r, 3) for r in range(3)}, exit_status=0)
    results = judge_fabric(run, cluster, "node1", {})
    assert [(r.node, r.status) for r in results] == [(n.name, Status.PASS) for n in cluster]
    assert results[0].detail == "rank 0: mpi4py 3/3, MLX 3/3, all_sum 3"


def test_mlx_alone_while_mpi4py_sees_everyone_is_the_missing_libmpi():
    cluster = nodes(1, 1, 1)
    hosts = {"node1": "h1", "node2": "h2", "node3": "h3"}
    # Rank 1 ran on h3 here: where each rank ran comes from its hostname, not from the order.
    run = FabricRun(records={0: record(0, 3, host="h1", summed=False), 1: record(1, 3, host="h3", mlx_size=1, summed=False),
                             2: record(2, 3, host="h2", summed=False)}, exit_status=0)
    results = {r.node: r for r in judge_fabric(run, cluster, "node1", hosts)}
    assert results["node3"].status is Status.FAIL
    assert results["node3"].fix.startswith(
        "node3: MLX ran as rank 0 of 1 under mpirun while mpi4py saw all 3 ranks, so MLX could not load libmpi.so "
        "there; install the Open MPI development library on node3 (`sudo apt install libopenmpi-dev`")
    assert "MLX_MPI_LIBNAME" in results["node3"].fix
    assert results["node1"].status is results["node2"].status is Status.SKIP


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (FabricRun(timed_out=True, error="node1: `sh` did not finish within 75 s"), "did not finish within 60 s and was stopped"),
        (FabricRun(exit_status=1, other_lines=["bash: orted: command not found"]), "could not start Open MPI's orted"),
        (FabricRun(exit_status=1, other_lines=["ORTE was unable to reliably start one or more daemons."]),
         "could not start its helpers on the other nodes"),
        (FabricRun(exit_status=1, other_lines=["something else"]), "exited with status 1 before any rank reported (something else)"),
    ],
)
def test_no_rank_output_is_one_cluster_wide_failure(run, expected):
    results = judge_fabric(run, nodes(1, 1), "node1", {})
    assert [(r.node, r.status) for r in results] == [(CLUSTER, Status.FAIL)]
    assert results[0].fix.startswith("mpirun on node1") and expected in results[0].fix


def test_a_node_whose_ranks_printed_nothing_fails_when_nothing_else_broke():
    run = FabricRun(records={0: record(0, 2)}, exit_status=1, other_lines=["rank 1 died"])
    results = {r.node: r for r in judge_fabric(run, nodes(1, 1), "node1", {})}
    assert results["node2"].status is Status.FAIL and "1 of its 1 rank(s) printed nothing" in results["node2"].fix


def test_fabric_output_is_reassembled_per_rank_even_when_chunks_interleave():
    output = FabricOutput()
    line0 = "CORRAL-DOCTOR " + json.dumps(record(0, 2))
    line1 = "CORRAL-DOCTOR " + json.dumps(record(1, 2))
    # Rank 0's line is cut in two by a chunk of rank 1 on the same physical line.
    output.on_line("stdout", "CORRAL-MPIRUN-PID 4242")
    output.on_line("stdout", f"[1,0]<stdout>:{line0[:30]}[1,1]<stdout>:{line1}")
    output.on_line("stdout", f"[1,0]<stdout>:{line0[30:]}")
    output.on_line("stderr", "a warning from mpirun")
    output.on_line("stdout", "CORRAL-MPIRUN-EXIT 0")
    run = output.finish()
    assert (run.mpirun_pid, run.exit_status) == (4242, 0)
    assert run.records == {0: record(0, 2), 1: record(1, 2)}
    assert run.other_lines == ["a warning from mpirun"]


# --- report ---------------------------------------------------------------------------------------


def test_warnings_pass_and_skips_fail_the_report():
    ok = DoctorReport(("node1",), (CheckResult("node1", "ssh", Status.PASS), CheckResult("node1", "resources", Status.WARN, fix="low")))
    assert ok.ok
    assert not DoctorReport(("node1",), (CheckResult("node1", "fabric", Status.SKIP),)).ok


def test_the_table_has_a_column_per_node_and_the_sentences_follow():
    results = sort_results([
        CheckResult(CLUSTER, "fabric", Status.SKIP, "skipped: needs SSH on node2"),
        CheckResult("node2", "ssh", Status.FAIL, fix="node2 (lab2@10.0.0.12:22) refused the connection on port 22."),
        CheckResult("node1", "ssh", Status.PASS),
        CheckResult("node2", "resources", Status.WARN, fix="node2 has only 1.0 GB of memory available."),
    ], ["node1", "node2"])
    report = DoctorReport(("node1", "node2"), tuple(results))
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "node1", "node2", "cluster"]
    assert lines[1].split() == ["SSH", "login", "by", "key", "✓", "✗"]
    assert "  node2 (lab2@10.0.0.12:22) refused the connection on port 22." in lines
    assert "  node2 has only 1.0 GB of memory available." in lines
    assert "1 failed:" in lines and "1 warning(s):" in lines
    assert "✓ passed" in text and "does not fail the doctor" in text
    assert "✓" not in format_report(report, unicode=False)
    assert report.to_json()[0] == {"node": "node1", "check": "ssh", "title": "SSH login by key", "status": "pass",
                                   "detail": "", "fix": None}
