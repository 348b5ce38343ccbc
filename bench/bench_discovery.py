"""Benchmark: sweep of a /24 holding 8 SSH hosts, corral against `nmap -sT -p22 --open`, side by side in one run.

Goal: corral's sweep ≤ 0.5× nmap's wall time, and neither misses a host (exit status 1 otherwise).
Run as root (it builds an 8-node test cluster):  .venv/bin/python -m bench.bench_discovery [--nodes 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cluster.discovery import sweep
from tests.testbed.cluster import TestCluster, can_build_clusters

CORRAL = str(Path(sys.executable).with_name("corral"))
GOAL_RATIO = 0.5


def nmap_hosts(subnet: str) -> set[str]:
    """Addresses nmap reports with port 22 open (greppable output: ``Host: A ()  Ports: 22/open/tcp//ssh///``)."""
    argv = ["nmap", "-sT", "-p22", "--open", "-n", "-oG", "-", subnet]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return {line.split()[1] for line in result.stdout.splitlines() if line.startswith("Host:") and "22/open" in line}


def corral_sweep_hosts(subnet: str) -> set[str]:
    return {host.address for host in asyncio.run(sweep([subnet]))}


def corral_cli_hosts(subnet: str) -> set[str]:
    """`corral discover` as a fresh process (interpreter start-up included), sweep only."""
    argv = [CORRAL, "discover", "--subnet", subnet, "--no-mdns", "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return {host["address"] for host in json.loads(result.stdout)}


def timed(find: Callable[[str], set[str]], subnet: str) -> tuple[float, set[str]]:
    started = time.perf_counter()
    found = find(subnet)
    return time.perf_counter() - started, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    can, why = can_build_clusters()
    if not can:
        raise SystemExit(f"cannot build a test cluster: {why}")
    if not shutil.which("nmap"):
        raise SystemExit("nmap is not installed (apt-get install nmap)")

    runners = {
        "nmap -sT -p22 --open -n": nmap_hosts,
        "corral sweep (in process)": corral_sweep_hosts,
        "corral discover --no-mdns (fresh process)": corral_cli_hosts,
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    misses: list[str] = []
    with TestCluster(n=args.nodes) as cluster:
        expected = {node.address for node in cluster.nodes}
        for round_index in range(args.rounds):  # alternate so all see the same machine conditions
            for name, find in runners.items():
                elapsed, found = timed(find, cluster.subnet)
                times[name].append(elapsed)
                if found != expected:
                    missed, extra = sorted(expected - found), sorted(found - expected)
                    misses.append(f"round {round_index + 1}, {name}: missed {missed}, extra {extra}")
        subnet = cluster.subnet

    nmap_median = statistics.median(times["nmap -sT -p22 --open -n"])
    print(f"\nSweep of {subnet} ({args.nodes} SSH hosts among 254 addresses), median of {args.rounds} rounds each\n")
    print("| runner | median wall time | ratio to nmap | goal |")
    print("|---|---|---|---|")
    for name, samples in times.items():
        ratio = statistics.median(samples) / nmap_median
        goal = f"≤ {GOAL_RATIO}" if name == "corral sweep (in process)" else ""
        print(f"| {name} | {statistics.median(samples) * 1000:.0f} ms | {ratio:.2f}× | {goal} |")
    for miss in misses:
        print(f"MISSED: {miss}")
    sweep_ratio = statistics.median(times["corral sweep (in process)"]) / nmap_median
    return 1 if misses or sweep_ratio > GOAL_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
