"""Benchmark: training throughput under `corral train` against bare mpirun by hand, and print→event latency.

Throughput: the same trainer and config on the same 3 nodes, launched alternately by `corral train` and by
`mpirun` typed on the head node (the command a user would write), tokens/s of the whole run from its step
events (sum over ranks of tokens / time between the first and last step) — goal ≥ 0.98×.
Latency: a `--script` prints an event every 50 ms stamped with its own clock; `corral logs --follow --json`
records when each arrived parsed — goal p95 ≤ 300 ms. (Nodes and this computer share one clock here.)
Run as root (it builds a test cluster):  .venv/bin/python -m bench.bench_launch [--rounds 3] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cluster.layout import LIB_DIR, RemoteLayout
from tests.integration.train_helpers import prepare_cluster, run_id_of
from tests.testbed.cluster import TestCluster, can_build_clusters
from trainer.events import StepEvent, parse_line

SETTINGS = {"n_layers": "2", "d_model": "64", "n_heads": "4", "seq_len": "64", "batch_size": "8",
            "warmup_steps": "2", "eval_every": "0", "checkpoint_every": "0", "node_every_s": "5"}
TICKER = """\
import json, os, sys, time
rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
for i in range(int(sys.argv[1])):
    print(json.dumps({"event": "node", "rank": rank, "time": time.time(), "host": str(i)}), flush=True)
    time.sleep(0.05)
"""


def run_tokens_per_s(steps: list[StepEvent]) -> float:
    """Tokens of all ranks per second between the first and the last step (the first step compiles: skipped)."""
    by_rank: dict[int, list[StepEvent]] = {}
    for event in steps:
        by_rank.setdefault(event.rank, []).append(event)
    total = 0.0
    for events in by_rank.values():
        events.sort(key=lambda e: e.step)
        first, last = events[1], events[-1]
        total += (last.tokens - first.tokens) / (last.time - first.time)
    return total


def corral_round(corral, cluster, steps: int, *, attached: bool) -> float:
    """`corral train` attached (this computer follows live, as a user watching) or detached (nobody follows)."""
    flags = [x for name, value in SETTINGS.items() for x in ("--set", f"{name}={value}")]
    result = corral.run("train", *flags, "--set", f"steps={steps}", *([] if attached else ["--detach"]), timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"corral train failed: {result.stdout}{result.stderr}")
    run_id = run_id_of(result.stdout)
    exit_file = cluster.nodes[0].home_on_host / "corral" / "runs" / run_id / "exit.json"
    deadline = time.monotonic() + 900
    while not exit_file.exists() and time.monotonic() < deadline:
        time.sleep(0.5)  # a file check on the head's disk: costs the nodes nothing
    lines = corral.ok("logs", run_id, "--json").stdout.splitlines()
    events = [parse_line(json.loads(line)["text"]) for line in lines]
    return run_tokens_per_s([e for e in events if isinstance(e, StepEvent)])


def bare_round(cluster, project: Path, steps: int) -> float:
    """mpirun typed on the head node: the same hostfile, network and trainer, output read straight from it."""
    head = cluster.nodes[0]
    layout = RemoteLayout.for_project(project)
    hostfile = "".join(f"{n.user}@{n.address} slots=1\n" for n in cluster.nodes)
    head.run(["sh", "-c", "mkdir -p bench && cat > bench/hostfile"], as_user=True, input=hostfile)
    flags = [x for name, value in SETTINGS.items() for x in (f"--{name}", value)]
    network = head.address.rsplit(".", 1)[0] + ".0/24"
    command = ["mpirun", "--hostfile", "bench/hostfile", "-np", "3", "--mca", "oob_tcp_if_include", network,
               "--mca", "btl_tcp_if_include", network, "--mca", "plm_rsh_no_tree_spawn", "1", "sh", "-c",
               f'cd "$HOME" && PYTHONPATH="$HOME/{LIB_DIR}" exec "$HOME/{layout.venv_python}" -m trainer '
               f'{" ".join(flags)} --steps {steps} --expect_world_size 3 --checkpoint_dir ""']
    result = head.run(command, as_user=True, timeout=900)
    events = [parse_line(line) for line in result.stdout.splitlines()]
    return run_tokens_per_s([e for e in events if isinstance(e, StepEvent)])


def latency_ms(corral, project: Path, ticks: int) -> list[float]:
    (project / "ticker.py").write_text(TICKER)
    corral.ok("sync", str(project))
    run_id = run_id_of(corral.ok("train", "--detach", "--script", "ticker.py", str(ticks)).stdout)
    out = corral.run("logs", run_id, "--follow", "--json", timeout=300).stdout
    delays = []
    for line in out.splitlines():
        data = json.loads(line)
        if data["event"] and data["event"]["event"] == "node":
            delays.append((data["received_time"] - data["event"]["time"]) * 1000)
    return delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    can, why = can_build_clusters()
    if not can:
        raise SystemExit(f"cannot build a test cluster: {why}")
    with TestCluster(n=3) as cluster, tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project"
        os.environ.setdefault("CORRAL_WHEELHOUSE", "/var/tmp/corral-test-wheel-cache")
        corral = prepare_cluster(cluster, Path(scratch) / "home", project)
        corral_tps, attached_tps, bare_tps = [], [], []
        for _ in range(args.rounds):  # alternate: all see the same machine conditions
            corral_tps.append(corral_round(corral, cluster, args.steps, attached=False))  # first: pushes the trainer
            bare_tps.append(bare_round(cluster, project, args.steps))
            attached_tps.append(corral_round(corral, cluster, args.steps, attached=True))
        delays = latency_ms(corral, project, args.ticks)
    bare, ours = statistics.median(bare_tps), statistics.median(corral_tps)
    p95 = statistics.quantiles(delays, n=20)[18]
    print(f"\nThroughput: 3 nodes, {args.steps} steps, median of {args.rounds} alternating rounds; "
          f"latency: {len(delays)} events at 20 per second per rank\n")
    print("| measure | corral | reference | ratio | goal |")
    print("|---|---|---|---|---|")
    attached = statistics.median(attached_tps)
    print(f"| training tokens/s, corral train --detach | {ours:,.0f} | {bare:,.0f} (bare mpirun) | {ours / bare:.3f}× | ≥ 0.98× |")
    print(f"| training tokens/s, corral train following live on the same 2 cores | {attached:,.0f} | {bare:,.0f} | "
          f"{attached / bare:.3f}× | (information) |")
    print(f"| print → parsed event, p95 | {p95:.0f} ms | (median {statistics.median(delays):.0f} ms) | | ≤ 300 ms |")
    return 0 if ours / bare >= 0.98 and p95 <= 300 else 1


if __name__ == "__main__":
    sys.exit(main())
