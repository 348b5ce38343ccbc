"""Benchmark: fan-out of `hostname` to 8 nodes, corral against pdsh, measured side by side in one run.

Warm: connections already open, as inside the app (corral's pool) — goal ≤ 0.1× pdsh.
Cold: `corral exec` as a fresh process, connects included — goal ≤ 1.0× pdsh.
Run as root (it builds an 8-node test cluster):  .venv/bin/python -m bench.bench_exec [--nodes 8] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.fanout import run_on_nodes
from cluster.home import CorralHome
from cluster.known_hosts import KnownHosts
from cluster.ssh import Credentials, SessionPool
from cluster.state import load_cluster
from tests.integration.corral_cli import CorralCli
from tests.testbed.cluster import TestCluster, can_build_clusters

CORRAL = str(Path(sys.executable).with_name("corral"))


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr}")
    return elapsed, result.stdout


def count_hosts(output: str, hostnames: set[str]) -> int:
    return len({line.split()[-1] for line in output.splitlines()} & hostnames)


async def warm_rounds(home: CorralHome, rounds: int) -> list[float]:
    nodes = list(load_cluster(home).nodes)
    credentials = Credentials(private_key_path=home.private_key_path)
    async with SessionPool(credentials, KnownHosts(home.known_hosts_path)) as pool:
        await run_on_nodes(pool, nodes, ["hostname"])  # opens the connections, as the app does once
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            outcomes = await run_on_nodes(pool, nodes, ["hostname"])
            times.append(time.perf_counter() - started)
            assert all(o.ok for o in outcomes), [o.message for o in outcomes if not o.ok]
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    can, why = can_build_clusters()
    if not can:
        raise SystemExit(f"cannot build a test cluster: {why}")
    if not shutil.which("pdsh"):
        raise SystemExit("pdsh is not installed (apt-get install pdsh)")

    with TestCluster(n=args.nodes) as cluster, tempfile.TemporaryDirectory() as scratch:
        corral = CorralCli(Path(scratch) / "home")
        corral.add_nodes(cluster.nodes)
        corral.install_keys(cluster.nodes)
        home = corral.paths
        hostnames = {node.hostname for node in cluster.nodes}
        names = ",".join(node.name for node in cluster.nodes)
        # pdsh's ssh module with the same ssh config corral writes (users, key, known hosts).
        pdsh_env = {**os.environ, "PDSH_SSH_ARGS": f"-F {home.ssh_config_path} -x -a %h"}
        pdsh = ["pdsh", "-R", "ssh", "-w", names, "hostname"]
        corral_exec = [CORRAL, "--home", str(home.root), "exec", "--", "hostname"]

        pdsh_times, cold_times = [], []
        for _ in range(args.rounds):  # alternate so both see the same machine conditions
            elapsed, out = timed(pdsh, pdsh_env)
            assert count_hosts(out, hostnames) == len(hostnames), out
            pdsh_times.append(elapsed)
            elapsed, out = timed(corral_exec)
            assert count_hosts(out, hostnames) == len(hostnames), out
            cold_times.append(elapsed)
        warm_times = asyncio.run(warm_rounds(home, args.rounds))

    pdsh_median = statistics.median(pdsh_times)
    rows = [
        ("pdsh -R ssh (fresh process)", pdsh_median, 1.0, ""),
        ("corral exec (fresh process, cold)", statistics.median(cold_times), statistics.median(cold_times) / pdsh_median, "≤ 1.0"),
        ("corral pool (connections open, warm)", statistics.median(warm_times), statistics.median(warm_times) / pdsh_median, "≤ 0.1"),
    ]
    print(f"\nFan-out of `hostname` to {args.nodes} nodes, median of {args.rounds} rounds each\n")
    print("| runner | median wall time | ratio to pdsh | goal |")
    print("|---|---|---|---|")
    for name, seconds, ratio, goal in rows:
        print(f"| {name} | {seconds * 1000:.1f} ms | {ratio:.3f}× | {goal} |")
    failed = rows[1][2] > 1.0 or rows[2][2] > 0.1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
