"""Benchmark: the trainer's step against a plain MLX loop on the same model and batches, and the cost of its events.

The competitor is the loop of MLX's own examples: `nn.value_and_grad`, `optimizer.update`, `mx.eval`, no
compile (plus `nn.average_gradients` under mpirun). Both train their own copy of the same model (same seed)
on the same batches, alternating step by step in one process so both see the same machine conditions;
the order within a pair alternates too, so neither always runs right after the other. The trainer runs
as `python -m trainer` would: with as many CPU streams as the rank has cores (`trainer.step.cpu_streams`:
2 as one process on a 2-core machine, 1 per rank under `mpirun -np 2`, which pins each rank to a core).
Goals: trainer tokens/s ≥ 1.0× the loop, as one process and per rank under `mpirun -np 2`; reporting a
step event (memory queries, RSS, JSON, write, flush) ≤ 1% of the step time.

    .venv/bin/python -m bench.bench_trainer [--steps 24] [--warmup 3] [--field value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def worker(steps: int, warmup: int, overrides: list[str]) -> dict[str, float]:
    """Runs on each rank: alternate trainer and plain-loop steps, then time the per-step reporting."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from trainer.config import parse_args
    from trainer.data import VOCAB_SIZE, Position, ShardedSamples, load_splits
    from trainer.events import EventWriter
    from trainer.model import TransformerLM, loss_fn
    from trainer.schedule import mlx_schedule
    from trainer.step import TrainStep, cpu_streams
    from trainer.train import Reporter

    config = parse_args(overrides).config
    group = mx.distributed.init(backend="any")
    rank, world = group.rank(), group.size()

    def build() -> tuple[nn.Module, optim.Optimizer]:
        mx.random.seed(config.seed)
        model = TransformerLM(VOCAB_SIZE, config.seq_len, config.n_layers, config.d_model, config.n_heads, config.mlp_multiplier)
        schedule = mlx_schedule(config.learning_rate, config.min_learning_rate, config.warmup_steps, config.steps)
        optimizer = optim.AdamW(learning_rate=schedule, betas=[config.beta1, config.beta2], weight_decay=config.weight_decay)
        optimizer.init(model.trainable_parameters())
        mx.eval(model.parameters(), optimizer.state)
        return model, optimizer

    splits = load_splits(config.data, config.val_fraction)
    tokens = mx.array(memoryview(splits.train))
    offsets = mx.arange(config.seq_len + 1)
    samples = ShardedSamples(len(splits.train), config.seq_len, config.batch_size, 1, rank, world, config.seed)

    def batch(position: Position) -> tuple[mx.array, mx.array]:
        windows = tokens[mx.array(samples.micro_batches(position)[0])[:, None] * config.seq_len + offsets]
        return windows[:, :-1], windows[:, 1:]

    trainer_model, trainer_optimizer = build()
    streams = cpu_streams(config.batch_size)
    train_step = TrainStep(trainer_model, trainer_optimizer, config.grad_clip, world, compile=config.compile, streams=streams)
    loop_model, loop_optimizer = build()
    loss_and_grad = nn.value_and_grad(loop_model, loss_fn)

    def loop_step(inputs: mx.array, targets: mx.array) -> float:
        loss, grads = loss_and_grad(loop_model, inputs, targets)
        grads = nn.average_gradients(grads)
        loop_optimizer.update(loop_model, grads)
        mx.eval(loop_model.parameters(), loop_optimizer.state)
        return loss.item()

    def timed(step: Any) -> float:
        started = time.perf_counter()
        step()
        return time.perf_counter() - started

    trainer_times, loop_times = [], []
    position = Position()
    for index in range(warmup + steps):
        inputs, targets = batch(position)
        run_trainer = lambda: train_step([(inputs, targets)])  # noqa: E731
        run_loop = lambda: loop_step(inputs, targets)  # noqa: E731
        # Every rank uses the same order in a step, so the ranks' collectives still pair up.
        if index % 2 == 0:
            trainer_time, loop_time = timed(run_trainer), timed(run_loop)
        else:
            loop_time, trainer_time = timed(run_loop), timed(run_trainer)
        if index >= warmup:  # the first steps compile
            trainer_times.append(trainer_time)
            loop_times.append(loop_time)
        position = samples.advance(position)

    # Reporting cost: the exact per-step work of the trainer, writing to a pipe drained by `cat`.
    sink = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    reporter = Reporter(EventWriter(rank, sink.stdin), node_every_s=5.0)
    report_times = []
    for step in range(1, 2001):
        started = time.perf_counter()
        reporter.step(step, 2.5, 2.5, 1e-3, 0.1, 2048, 2048 * step, 0)
        report_times.append(time.perf_counter() - started)
    sink.stdin.close()
    sink.wait()
    step_tokens = config.batch_size * config.seq_len
    # Each trainer step ran right next to its loop step: the median of those pairs' ratios is the least
    # disturbed by other load on a shared machine; the quartiles show how far the pairs spread.
    ratios = [loop / mine for mine, loop in zip(trainer_times, loop_times)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {
        "speedup": statistics.median(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[2],
        "streams": streams,
        "rank": rank,
        "world_size": world,
        "trainer_step_s": statistics.median(trainer_times),
        "loop_step_s": statistics.median(loop_times),
        "trainer_tokens_per_s": step_tokens / statistics.median(trainer_times),
        "loop_tokens_per_s": step_tokens / statistics.median(loop_times),
        "report_s": statistics.median(report_times),
    }


def run_workers(ranks: int, steps: int, warmup: int, overrides: list[str]) -> list[dict[str, float]]:
    argv = [sys.executable, "-m", "bench.bench_trainer", "--worker", "--steps", str(steps), "--warmup", str(warmup), *overrides]
    env = dict(os.environ)
    if ranks > 1:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        argv = ["mpirun", "-np", str(ranks), "--oversubscribe", *argv]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(f"benchmark worker failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    if len(rows) != ranks or {row["world_size"] for row in rows} != {ranks}:
        raise SystemExit(f"expected {ranks} ranks to report, got: {result.stdout}")
    return sorted(rows, key=lambda row: row["rank"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="measured steps per competitor")
    parser.add_argument("--warmup", type=int, default=3, help="steps not measured (compilation)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.worker:
        print(json.dumps(worker(args.steps, args.warmup, overrides)), flush=True)
        return 0
    if not shutil.which("mpirun"):
        raise SystemExit("mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)")

    single = run_workers(1, args.steps, args.warmup, overrides)
    pair = run_workers(2, args.steps, args.warmup, overrides)
    rows: list[tuple[str, str, str, float, str, bool, str]] = []
    for label, results in (("1 process", single), ("mpirun -np 2", pair)):
        for row in results:
            ratio = row["speedup"]
            name = f"{label}, rank {row['rank']}" if len(results) > 1 else label
            name += f" ({row['streams']} stream{'s' if row['streams'] > 1 else ''})"
            spread = f"{ratio:.3f}× ({row['ratio_q1']:.3f}–{row['ratio_q3']:.3f})"
            rows.append((f"tokens/s: {name}", f"{row['trainer_tokens_per_s']:.0f}", f"{row['loop_tokens_per_s']:.0f}", ratio, "≥ 1.0", ratio >= 1.0, spread))
    for label, results in (("1 process", single), ("mpirun -np 2", pair)):
        worst = max(results, key=lambda row: row["report_s"] / row["trainer_step_s"])
        share = worst["report_s"] / worst["trainer_step_s"]
        rows.append((f"event cost / step time: {label}", f"{worst['report_s'] * 1e6:.0f} µs", f"{worst['trainer_step_s'] * 1e3:.1f} ms", share, "≤ 1 %", share <= 0.01, f"{share * 100:.3f} %"))

    print(f"\nTrainer vs plain MLX loop, same model and batches: median tokens/s of {args.steps} steps after {args.warmup} "
          "warm-up steps; ratio = median over step pairs of loop time / trainer time (quartiles of the pairs)\n")
    print("| measure | trainer | plain loop (or step time) | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    for name, mine, theirs, _, goal, met, shown in rows:
        print(f"| {name} | {mine} | {theirs} | {shown} | {goal} | {'yes' if met else 'NO'} |")
    return 0 if all(row[5] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
