"""Benchmark: no-change re-sync of a 5,000-file tree to 8 nodes, against one plain rsync and a plain loop.

Goal: `corral sync` (a fresh process, as a user runs it) to all nodes ≤ 1.5× a single plain
`rsync -a --delete -e 'ssh -F …'` of the same tree to ONE node; the ratio to a sequential loop of
that rsync over all nodes is printed too. All runners are measured in the same run, alternating.

corral keeps each node's ssh connection open for 5 minutes after a sync (ControlMaster), so the goal
row is a re-sync within that time, the common edit-sync-run loop. The "cold" rows close those
connections before every run (outside the timing): a re-sync after a pause pays 8 logins.
Run as root (it builds a test cluster):  .venv/bin/python -m bench.bench_sync [--nodes 8] [--files 5000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.home import CorralHome
from cluster.state import load_cluster
from cluster.sync import control_dir_candidates, control_path_for, remote_shell, sync_project, usable_control_dir
from tests.integration.corral_cli import CorralCli
from tests.testbed.cluster import TestCluster, can_build_clusters

CORRAL = str(Path(sys.executable).with_name("corral"))
GOAL_SINGLE = 1.5
PLAIN_DIR = "plain-rsync-copy"  # the competitor's destination, beside corral's, relative to the home


def make_tree(root: Path, files: int, seed: int = 7) -> None:
    """``files`` small files (50 B – 4 kB) spread over nested directories, like a code base with data."""
    rng = random.Random(seed)
    per_dir = 50
    for index in range(files):
        group = index // per_dir
        folder = root / f"pkg{group // 10}" / f"mod{group % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{index}.py").write_bytes(rng.randbytes(rng.randint(50, 4000)))


def plain_rsync(home: CorralHome, tree: Path, node_name: str) -> list[str]:
    return ["rsync", "-a", "--delete", "-e", remote_shell(home.ssh_config_path), f"{tree}/", f"{node_name}:{PLAIN_DIR}/"]


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def close_connections(home: CorralHome) -> None:
    """End the ssh master connections corral keeps, so the next sync logs in afresh."""
    control_dir = usable_control_dir(control_dir_candidates(home))
    assert control_dir is not None
    for node in load_cluster(home).nodes:
        socket = control_path_for(control_dir, node, home.ssh_config_path)
        if socket.exists():
            subprocess.run(["ssh", "-F", str(home.ssh_config_path), "-o", f"ControlPath={socket}", "-O", "exit",
                            node.name], capture_output=True, timeout=30)


def timed_in_process(home: CorralHome, tree: Path, *, reuse_connections: bool = True) -> tuple[float, int]:
    started = time.perf_counter()
    outcomes = asyncio.run(sync_project(home, load_cluster(home), tree, reuse_connections=reuse_connections))
    elapsed = time.perf_counter() - started
    failed = [o.message for o in outcomes if not o.ok]
    if failed:
        raise SystemExit("corral sync failed: " + "; ".join(failed))
    return elapsed, sum(o.value.stats.files_transferred for o in outcomes if o.value)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    can, why = can_build_clusters()
    if not can:
        raise SystemExit(f"cannot build a test cluster: {why}")

    with TestCluster(n=args.nodes) as cluster, tempfile.TemporaryDirectory() as scratch:
        corral = CorralCli(Path(scratch) / "home")
        corral.add_nodes(cluster.nodes)
        corral.install_keys(cluster.nodes)
        home = corral.paths
        tree = Path(scratch) / "project"
        make_tree(tree, args.files)
        names = [node.name for node in cluster.nodes]

        # First, full copies for both, so every timed run below is a no-change re-sync.
        started = time.perf_counter()
        corral.ok("sync", str(tree))
        first_full = time.perf_counter() - started
        for name in names:
            timed(plain_rsync(home, tree, name))
        corral_sync = [CORRAL, "--home", str(home.root), "sync", str(tree)]

        fresh, fresh_cold, warm, warm_cold, single, loop = [], [], [], [], [], []
        sent_files = 0
        for _ in range(args.rounds):  # alternate so every runner sees the same machine conditions
            close_connections(home)
            fresh_cold.append(timed(corral_sync))  # logs in and leaves the connections open
            fresh.append(timed(corral_sync))
            elapsed, sent = timed_in_process(home, tree)
            warm.append(elapsed)
            sent_files += sent
            elapsed, sent = timed_in_process(home, tree, reuse_connections=False)
            warm_cold.append(elapsed)
            sent_files += sent
            single.append(timed(plain_rsync(home, tree, names[0])))
            started = time.perf_counter()
            for name in names:
                timed(plain_rsync(home, tree, name))
            loop.append(time.perf_counter() - started)
        copied = sum(1 for _ in (cluster.nodes[-1].home_on_host / PLAIN_DIR).rglob("*.py"))
        if sent_files or copied != args.files:
            raise SystemExit(f"wrong result: no-change syncs sent {sent_files} files; plain copy has {copied}")

    base, base_loop = statistics.median(single), statistics.median(loop)
    def row(name: str, times: list[float], goal: str = "") -> tuple[str, float, float, float, str]:
        median = statistics.median(times)
        return name, median, median / base, median / base_loop, goal

    rows = [
        row("plain rsync to 1 node", single),
        row(f"plain rsync loop over {args.nodes} nodes", loop),
        row(f"corral sync to {args.nodes} nodes (fresh process)", fresh, f"≤ {GOAL_SINGLE}"),
        row(f"corral sync to {args.nodes} nodes (fresh process, cold connections)", fresh_cold),
        row(f"sync_project to {args.nodes} nodes (in process)", warm),
        row(f"sync_project to {args.nodes} nodes (in process, no connection reuse)", warm_cold),
    ]
    print(f"\nNo-change re-sync of {args.files} files, median of {args.rounds} rounds each "
          f"(first full corral sync: {first_full:.2f} s; {os.cpu_count()} CPUs)\n")
    print("| runner | median wall time | ratio to one rsync | ratio to the loop | goal |")
    print("|---|---|---|---|---|")
    for name, seconds, ratio, ratio_loop, goal in rows:
        print(f"| {name} | {seconds * 1000:.0f} ms | {ratio:.2f}× | {ratio_loop:.2f}× | {goal} |")
    return 1 if rows[2][2] > GOAL_SINGLE else 0


if __name__ == "__main__":
    sys.exit(main())
