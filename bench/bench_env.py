"""Benchmark: `corral env` on 8 nodes — the unchanged re-run, and a first install with pushed wheels against a pip loop.

(a) Unchanged: `corral env --wheels push` when every node's stamp matches — goal ≤ 0.5 s in total as a fresh
    process (in-process numbers, with a new pool and with connections already open, are shown too).
(b) First install (no venv, no uv cache on the nodes; wheels already downloaded on this computer, so the
    package index is out of the measurement): `corral env --wheels push` (copies wheels and uv, then installs
    on all nodes at once) against a sequential loop of `python3 -m venv` + `pip install --no-index
    --find-links` over the nodes with the same wheels already copied there. Goal ≤ 0.5× the loop. The same
    install with corral forced to pip shows what uv buys.
Run as root (it builds a test cluster):  .venv/bin/python -m bench.bench_env [--nodes 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.home import CorralHome
from cluster.known_hosts import KnownHosts
from cluster.layout import RemoteLayout
from cluster.remote_env import EnvRequest, build_environments, run_env
from cluster.ssh import Credentials, SessionPool
from cluster.state import load_cluster
from cluster.wheels import WHEELHOUSE_ENV, wheelhouse_root
from tests.integration.corral_cli import CorralCli
from tests.testbed.cluster import TestCluster, can_build_clusters

CORRAL = str(Path(sys.executable).with_name("corral"))
WHEEL_CACHE = "/var/tmp/corral-test-wheel-cache"
UNCHANGED_GOAL_S = 0.5
FIRST_INSTALL_GOAL_RATIO = 0.5


def timed(argv: list[str], **kwargs: object) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, **kwargs)  # type: ignore[call-overload]  # kwargs are subprocess options
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return elapsed


def forget_installs(cluster: TestCluster) -> None:
    """Back to a node that never had corral: no venvs, no wheelhouse, no uv or pip caches."""
    for node in cluster.nodes:
        node.run(["rm", "-rf", "corral", "bench-venv", ".cache/uv", ".cache/pip"], as_user=True, timeout=120)


async def in_process_unchanged(home: CorralHome, request: EnvRequest, rounds: int) -> tuple[list[float], list[float]]:
    nodes = list(load_cluster(home).nodes)
    cold = []
    for _ in range(rounds):
        started = time.perf_counter()
        outcomes = await run_env(home, nodes, request)
        cold.append(time.perf_counter() - started)
        assert all(o.ok and o.value is not None and o.value.action == "unchanged" for o in outcomes)
    warm = []
    async with SessionPool(Credentials(private_key_path=home.private_key_path), KnownHosts(home.known_hosts_path)) as pool:
        await build_environments(pool, nodes, request, home=home)
        for _ in range(rounds):
            started = time.perf_counter()
            outcomes = await build_environments(pool, nodes, request, home=home)
            warm.append(time.perf_counter() - started)
            assert all(o.ok and o.value is not None and o.value.action == "unchanged" for o in outcomes)
    return cold, warm


async def corral_pip_install(home: CorralHome, request: EnvRequest) -> float:
    nodes = list(load_cluster(home).nodes)
    started = time.perf_counter()
    outcomes = await run_env(home, nodes, request)
    elapsed = time.perf_counter() - started
    assert all(o.ok and o.value is not None and o.value.installer == "pip" for o in outcomes), [o.message for o in outcomes]
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="first-install rounds (each builds every venv)")
    parser.add_argument("--unchanged-rounds", type=int, default=15)
    args = parser.parse_args()
    can, why = can_build_clusters()
    if not can:
        raise SystemExit(f"cannot build a test cluster: {why}")
    os.environ.setdefault(WHEELHOUSE_ENV, WHEEL_CACHE)

    with TestCluster(n=args.nodes) as cluster, tempfile.TemporaryDirectory() as scratch:
        corral = CorralCli(Path(scratch) / "home")
        corral.add_nodes(cluster.nodes)
        corral.install_keys(cluster.nodes)
        home = corral.paths
        project = Path(scratch) / "project"
        project.mkdir()
        env_argv = [CORRAL, "--home", str(home.root), "env", "--wheels", "push"]
        request = EnvRequest(layout=RemoteLayout.for_project(project), wheels="push")

        # Fill the local wheelhouse once (and learn the group's directory for the loop's pre-copy).
        timed(env_argv, cwd=project)
        group_dirs = [p for p in wheelhouse_root(home).iterdir() if (p / "wheels").is_dir()]
        wheels = max(group_dirs, key=lambda p: p.stat().st_mtime) / "wheels"
        packages = "'mlx[cpu]' mpi4py"
        loop_command = ("python3 -m venv bench-venv && bench-venv/bin/pip install -q --disable-pip-version-check "
                        f"--no-index --find-links bench-wheels {packages}")

        corral_times, loop_times, pip_times = [], [], []
        for _ in range(args.rounds):  # alternate so all three see the same machine conditions
            forget_installs(cluster)
            corral_times.append(timed(env_argv, cwd=project))
            forget_installs(cluster)
            for node in cluster.nodes:  # pre-copied: the loop pays for no transfer at all
                timed(["rsync", "-a", "-e", f"ssh -F {home.ssh_config_path}", f"{wheels}/", f"{node.name}:bench-wheels/"])
            started = time.perf_counter()
            for node in cluster.nodes:
                timed(["ssh", "-F", str(home.ssh_config_path), node.name, loop_command])
            loop_times.append(time.perf_counter() - started)
            forget_installs(cluster)
            pip_times.append(asyncio.run(corral_pip_install(home, EnvRequest(
                layout=request.layout, wheels="push", installer="pip"))))

        timed(env_argv, cwd=project)  # a settled cluster for the unchanged runs
        unchanged_cli = [timed(env_argv, cwd=project) for _ in range(args.unchanged_rounds)]
        in_cold, in_warm = asyncio.run(in_process_unchanged(home, request, args.unchanged_rounds))

    loop = statistics.median(loop_times)
    first = statistics.median(corral_times)
    unchanged = statistics.median(unchanged_cli)
    print(f"\n`corral env` on {args.nodes} nodes; first install: median of {args.rounds} rounds, unchanged: median of "
          f"{args.unchanged_rounds}\n")
    print("| what | runner | median wall time | ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| first install | sequential loop: `python3 -m venv` + `pip install --no-index` (wheels pre-copied) "
          f"| {loop:.2f} s | 1.00× | |")
    print(f"| first install | `corral env --wheels push` (fresh process; copies wheels + uv, uv installs) "
          f"| {first:.2f} s | {first / loop:.2f}× | ≤ {FIRST_INSTALL_GOAL_RATIO} |")
    pip_median = statistics.median(pip_times)
    print(f"| first install | corral forced to pip (in process; copies wheels) | {pip_median:.2f} s "
          f"| {pip_median / loop:.2f}× | |")
    print(f"| unchanged | `corral env --wheels push` (fresh process) | {unchanged * 1000:.0f} ms | | "
          f"≤ {UNCHANGED_GOAL_S * 1000:.0f} ms |")
    print(f"| unchanged | in process, new connections | {statistics.median(in_cold) * 1000:.0f} ms | | |")
    print(f"| unchanged | in process, connections open (the app) | {statistics.median(in_warm) * 1000:.0f} ms | | |")
    failed = unchanged > UNCHANGED_GOAL_S or first / loop > FIRST_INSTALL_GOAL_RATIO
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
