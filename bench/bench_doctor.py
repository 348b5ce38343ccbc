"""Benchmark: a full `corral doctor` against the one step it cannot avoid, the MPI fabric probe run by hand.

The competitor is what a person would type to test the fabric alone: `ssh HEAD mpirun …` running the same
mpi4py + MLX probe on every slot. The doctor does that plus all its other checks (SSH, host keys, code,
venv, versions, disk and memory, mpirun, node-to-node SSH, addresses, pairwise TCP); goal ≤ 2.5× the probe.
Run as root (it builds a test cluster and pushes a venv):
  .venv/bin/python -m bench.bench_doctor [--nodes 3] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.doctor.fabric import RANK_PROBE_PY
from cluster.layout import RemoteLayout
from cluster.ssh_config import write_client_ssh_config
from cluster.state import load_cluster
from tests.integration.corral_cli import CorralCli
from tests.testbed.cluster import TestCluster, can_build_clusters

CORRAL = str(Path(sys.executable).with_name("corral"))
GOAL = 2.5
WHEEL_CACHE = os.environ.get("CORRAL_TEST_WHEEL_CACHE", "/var/tmp/corral-test-wheel-cache")


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    can, why = can_build_clusters()
    if not can:
        raise SystemExit(f"cannot build a test cluster: {why}")
    os.environ.setdefault("CORRAL_WHEELHOUSE", WHEEL_CACHE)

    with TestCluster(n=args.nodes) as cluster, tempfile.TemporaryDirectory() as scratch:
        corral = CorralCli(Path(scratch) / "home")
        corral.add_nodes(cluster.nodes)
        corral.install_keys(cluster.nodes)
        project = Path(scratch) / "project"
        project.mkdir()
        (project / "train.py").write_text("print('training')\n")
        corral.ok("sync", str(project))
        env = corral.run("env", "--wheels", "push", timeout=900)
        if env.returncode != 0:
            raise SystemExit(f"corral env failed:\n{env.stdout}\n{env.stderr}")
        inventory = load_cluster(corral.paths)
        config = write_client_ssh_config(inventory.nodes, corral.paths)
        head = inventory.nodes[0]
        venv_python = RemoteLayout.for_project(project).venv_python
        hostfile = "".join(f"{node.address} slots={node.slots}\n" for node in inventory.nodes)
        network = inventory.effective_network()
        world = str(inventory.total_slots())
        by_hand = (f"printf %s {shlex.quote(hostfile)} > hostfile.bench && mpirun --hostfile hostfile.bench -np {world} "
                   f"--mca oob_tcp_if_include {network} --mca btl_tcp_if_include {network} "
                   "--mca plm_rsh_no_tree_spawn 1 --tag-output sh -c " + shlex.quote('cd && exec "$0" -I -c "$1" "$2"')
                   + f" {venv_python} {shlex.quote(RANK_PROBE_PY)} {world}")
        manual = ["ssh", "-F", str(config), head.name, by_hand]
        doctor = [CORRAL, "--home", str(corral.home), "doctor"]

        manual_times, doctor_times = [], []
        for _ in range(args.rounds):  # alternate so both see the same machine conditions
            elapsed, result = timed(manual)
            if result.returncode != 0 or result.stdout.count("CORRAL-DOCTOR ") != int(world):
                raise SystemExit(f"the fabric probe by hand failed:\n{result.stdout}\n{result.stderr}")
            manual_times.append(elapsed)
            elapsed, result = timed(doctor)
            if result.returncode != 0:
                raise SystemExit(f"corral doctor failed on a healthy cluster:\n{result.stdout}\n{result.stderr}")
            doctor_times.append(elapsed)

    manual_median, doctor_median = statistics.median(manual_times), statistics.median(doctor_times)
    ratio = doctor_median / manual_median
    print(f"\nHealthy {args.nodes}-node cluster, median of {args.rounds} rounds each (fresh processes)\n")
    print("| runner | median wall time | ratio to the fabric probe by hand | goal |")
    print("|---|---|---|---|")
    print(f"| ssh HEAD mpirun (fabric probe only) | {manual_median * 1000:.0f} ms | 1.00× | |")
    print(f"| corral doctor (all {12} checks) | {doctor_median * 1000:.0f} ms | {ratio:.2f}× | ≤ {GOAL} |")
    return 1 if ratio > GOAL else 0


if __name__ == "__main__":
    sys.exit(main())
