"""Benchmark: training throughput under `corral train` against bare mpirun by hand, and print→event latency.

Throughput: the same trainer and config on the same 3 nodes, launched by `corral train --detach` and by
`mpirun` typed on the head node (the command a user would write), tokens/s of the whole run from its step
events (sum over ranks of tokens / time between the second and the last step). The two run in pairs, back to
back, the order swapped every pair (so a machine getting busier or quieter favours neither); each pair gives a
ratio and the result is the median of those ratios — goal ≥ 0.98×. A warm-up run first copies the trainer and
lets MLX compile its kernels, which neither side should pay for. `corral train` followed live (a follower on the
same 2 cores) is measured every few pairs, for information.
Latency: a `--script` prints an event every 50 ms stamped with its own clock; `corral logs --follow --json`
records when each arrived parsed — goal p95 ≤ 300 ms. (Nodes and this computer share one clock here.)
Run as root (it builds a test cluster):  .venv/bin/python -m bench.bench_launch [--pairs 8] [--steps 40]  (about 5 min idle)
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


def median_step_ms(steps: list[StepEvent]) -> float:
    """The ranks' own time inside a training step (their step_time_s), first step (compiling) left out.

    Beside tokens/s it tells a launcher's overhead (time between steps) from a busier machine (slower steps).
    """
    times = [event.step_time_s for event in steps if event.step > 1 and event.step_time_s]
    return statistics.median(times) * 1000 if times else float("nan")


def corral_round(corral, cluster, steps: int, *, attached: bool) -> tuple[float, float]:
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
    steps = [e for e in events if isinstance(e, StepEvent)]
    return run_tokens_per_s(steps), median_step_ms(steps)


def bare_round(cluster, project: Path, steps: int) -> tuple[float, float]:
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
    steps = [e for e in events if isinstance(e, StepEvent)]
    return run_tokens_per_s(steps), median_step_ms(steps)


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


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8, help="corral/bare pairs (the order swaps every pair)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--attached-every", type=int, default=4, help="a followed run after every N-th pair (0: none)")
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    can, why = can_build_clusters()
    if not can:
        raise SystemExit(f"cannot build a test cluster: {why}")
    started = time.monotonic()
    with TestCluster(n=3) as cluster, tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project"
        os.environ.setdefault("CORRAL_WHEELHOUSE", "/var/tmp/corral-test-wheel-cache")
        corral = prepare_cluster(cluster, Path(scratch) / "home", project)
        corral_round(corral, cluster, 5, attached=False)  # warm-up: copies the trainer, compiles MLX's kernels
        corral_tps: list[float] = []
        bare_tps: list[float] = []
        ratios: list[float] = []
        step_ms: dict[str, list[float]] = {"corral": [], "bare": []}
        attached_ratios: list[float] = []
        for pair in range(args.pairs):
            if pair % 2 == 0:
                ours, ours_ms = corral_round(corral, cluster, args.steps, attached=False)
                bare, bare_ms = bare_round(cluster, project, args.steps)
            else:
                bare, bare_ms = bare_round(cluster, project, args.steps)
                ours, ours_ms = corral_round(corral, cluster, args.steps, attached=False)
            corral_tps.append(ours)
            bare_tps.append(bare)
            ratios.append(ours / bare)
            step_ms["corral"].append(ours_ms)
            step_ms["bare"].append(bare_ms)
            print(f"pair {pair + 1}: corral {ours:,.0f} tokens/s ({ours_ms:.1f} ms in a step), bare {bare:,.0f} tokens/s "
                  f"({bare_ms:.1f} ms), ratio {ours / bare:.3f}", file=sys.stderr)
            if args.attached_every and pair % args.attached_every == args.attached_every - 1:
                attached_ratios.append(corral_round(corral, cluster, args.steps, attached=True)[0] / bare)
        delays = latency_ms(corral, project, args.ticks)
    ratio = statistics.median(ratios)
    low, high = quartiles(ratios)
    p95 = statistics.quantiles(delays, n=20)[18]
    print(f"\nThroughput: 3 nodes, {args.steps} steps per run, {args.pairs} back-to-back corral/bare pairs in swapped "
          f"order, median of the pairs' ratios (interquartile range in brackets); latency: {len(delays)} events at "
          f"20 per second per rank; {time.monotonic() - started:.0f} s in all\n")
    print("| measure | corral | reference | ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| training tokens/s, corral train --detach | {statistics.median(corral_tps):,.0f} | "
          f"{statistics.median(bare_tps):,.0f} (bare mpirun) | {ratio:.3f}× [{low:.3f}–{high:.3f}] | ≥ 0.98× |")
    if attached_ratios:
        print(f"| training tokens/s, corral train following live on the same 2 cores | | | "
              f"{statistics.median(attached_ratios):.3f}× ({len(attached_ratios)} runs) | (information) |")
    print(f"| time inside a training step (the ranks' own step_time_s), median | {statistics.median(step_ms['corral']):.1f} ms "
          f"| {statistics.median(step_ms['bare']):.1f} ms | | (information: equal when the machine was equally busy) |")
    print(f"| print → parsed event, p95 | {p95:.0f} ms | (median {statistics.median(delays):.0f} ms) | | ≤ 300 ms |")
    print(f"\nPair ratios: {' '.join(f'{r:.3f}' for r in ratios)}")
    return 0 if ratio >= 0.98 and p95 <= 300 else 1


if __name__ == "__main__":
    sys.exit(main())
