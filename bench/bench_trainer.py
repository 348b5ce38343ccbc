"""Benchmark: the trainer against a plain MLX loop on the same model and batches, and the cost of its events.

The competitor is the loop of MLX's own examples: `nn.value_and_grad`, `optimizer.update`, `mx.eval`, no
compile (plus `nn.average_gradients` under mpirun), in a process that imports MLX the plain way. The trainer
runs as `python -m trainer` does: it first loads the BLAS its `blas` setting picks (trainer/blas.py: on
Linux the machine's OpenBLAS instead of the mlx-cpu wheel's reference BLAS), then steps with as many CPU
streams as the rank has cores (`trainer.step.cpu_streams`: 2 as one process on a 2-core machine, 1 per rank
under `mpirun -np 2`, which pins each rank to a core).

(a) As users run them (the goals): separate processes, trainer and loop, each training the same model from
    the same seed on the same batches; rounds alternate which goes first; the ratio is the median over
    rounds of loop step time / trainer step time, per rank.
(b) The step alone: both in ONE process, so both use the same BLAS and cores, alternating step by step:
    what the trainer's step itself (compile, fused update, streams) is worth. Goal ≥ 1.0× here too, so a
    regression of the step cannot hide behind the BLAS.
(c) Reporting a step event (memory queries, RSS, JSON, write, flush): goal ≤ 1% of the step time.

    .venv/bin/python -m bench.bench_trainer [--rounds 3] [--steps 8] [--warmup 2] [--pair-steps 16] [--field value ...]
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


def worker(kind: str, steps: int, warmup: int, overrides: list[str]) -> dict[str, Any]:
    """Runs on each rank: ``kind`` "trainer" or "loop" alone, or "pairs" (both alternating, then the reporting cost)."""
    from trainer.blas import describe_blas, use_blas
    from trainer.config import parse_args

    config = parse_args(overrides).config
    # Before MLX is imported, as trainer/__main__.py does; the plain loop's process imports MLX as it comes.
    if kind != "loop":
        use_blas(config.blas)

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from trainer.data import VOCAB_SIZE, Position, ShardedSamples, load_splits
    from trainer.events import EventWriter
    from trainer.model import TransformerLM, loss_fn
    from trainer.schedule import mlx_schedule
    from trainer.step import TrainStep, cpu_streams
    from trainer.train import Reporter

    blas = describe_blas().library  # what this process's matmuls call, as the trainer's start event says
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

    streams = cpu_streams(config.batch_size)
    if kind != "loop":
        trainer_model, trainer_optimizer = build()
        train_step = TrainStep(trainer_model, trainer_optimizer, config.grad_clip, world, compile=config.compile, streams=streams)
    if kind != "trainer":
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

    step_tokens = config.batch_size * config.seq_len
    common = {"rank": rank, "world_size": world, "blas": blas, "streams": streams if kind != "loop" else 1}
    position = Position()
    if kind in ("trainer", "loop"):
        times = []
        for _ in range(warmup + steps):
            inputs, targets = batch(position)
            if kind == "trainer":
                times.append(timed(lambda: train_step([(inputs, targets)])))
            else:
                times.append(timed(lambda: loop_step(inputs, targets)))
            position = samples.advance(position)
        return {**common, "step_s": statistics.median(times[warmup:]), "tokens_per_s": step_tokens / statistics.median(times[warmup:])}

    trainer_times, loop_times = [], []
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
    # Each trainer step ran right next to its loop step: the median of those pairs' ratios is the least
    # disturbed by other load on a shared machine; the quartiles show how far the pairs spread.
    ratios = [loop / mine for mine, loop in zip(trainer_times, loop_times)]
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {
        **common,
        "speedup": statistics.median(ratios),
        "ratio_q1": quartiles[0],
        "ratio_q3": quartiles[2],
        "trainer_step_s": statistics.median(trainer_times),
        "loop_step_s": statistics.median(loop_times),
        "trainer_tokens_per_s": step_tokens / statistics.median(trainer_times),
        "loop_tokens_per_s": step_tokens / statistics.median(loop_times),
        "report_s": statistics.median(report_times),
    }


def run_workers(kind: str, ranks: int, steps: int, warmup: int, overrides: list[str]) -> list[dict[str, Any]]:
    argv = [sys.executable, "-m", "bench.bench_trainer", "--worker", kind, "--steps", str(steps), "--warmup", str(warmup),
            *overrides]
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


def as_users_run_them(ranks: int, rounds: int, steps: int, warmup: int, overrides: list[str]) -> list[dict[str, Any]]:
    """Per rank: the median over rounds of loop / trainer step time, each side in its own processes."""
    per_round: list[list[tuple[dict[str, Any], dict[str, Any]]]] = []
    for round_index in range(rounds):
        order = ("trainer", "loop") if round_index % 2 == 0 else ("loop", "trainer")
        results = {kind: run_workers(kind, ranks, steps, warmup, overrides) for kind in order}
        per_round.append(list(zip(results["trainer"], results["loop"])))
    rows = []
    for rank in range(ranks):
        pairs = [round_pairs[rank] for round_pairs in per_round]
        ratios = sorted(loop["step_s"] / mine["step_s"] for mine, loop in pairs)
        rows.append({
            "rank": rank, "ratio": statistics.median(ratios), "low": ratios[0], "high": ratios[-1],
            "trainer_tokens_per_s": statistics.median(mine["tokens_per_s"] for mine, _ in pairs),
            "loop_tokens_per_s": statistics.median(loop["tokens_per_s"] for _, loop in pairs),
            "streams": pairs[0][0]["streams"], "blas": pairs[0][0]["blas"], "loop_blas": pairs[0][1]["blas"],
        })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (trainer process, loop process)")
    parser.add_argument("--steps", type=int, default=8, help="measured steps per process")
    parser.add_argument("--warmup", type=int, default=2, help="steps not measured (compilation)")
    parser.add_argument("--pair-steps", type=int, default=16, help="measured step pairs in the one-process comparison")
    parser.add_argument("--worker", choices=("trainer", "loop", "pairs"), help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, overrides)), flush=True)
        return 0
    if not shutil.which("mpirun"):
        raise SystemExit("mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)")

    rows: list[tuple[str, str, str, str, str, bool]] = []
    for ranks, label in ((1, "1 process"), (2, "mpirun -np 2")):
        for row in as_users_run_them(ranks, args.rounds, args.steps, args.warmup, overrides):
            name = f"{label}, rank {row['rank']}" if ranks > 1 else label
            name += f" ({row['streams']} stream{'s' if row['streams'] > 1 else ''})"
            rows.append((f"tokens/s as users run them: {name}", f"{row['trainer_tokens_per_s']:.0f} ({blas_name(row['blas'])})",
                         f"{row['loop_tokens_per_s']:.0f} ({blas_name(row['loop_blas'])})",
                         f"{row['ratio']:.3f}× ({row['low']:.3f}–{row['high']:.3f})", "≥ 1.0", row["ratio"] >= 1.0))
    pairs = {ranks: run_workers("pairs", ranks, args.pair_steps, args.warmup, overrides) for ranks in (1, 2)}
    for ranks, label in ((1, "1 process"), (2, "mpirun -np 2")):
        for row in pairs[ranks]:
            name = f"{label}, rank {row['rank']}" if ranks > 1 else label
            # Both sides on the same BLAS and cores: what the trainer's step itself is worth; it must not lose.
            rows.append((f"same BLAS, one process (the step alone): {name}",
                         f"{row['trainer_tokens_per_s']:.0f} ({blas_name(row['blas'])})", f"{row['loop_tokens_per_s']:.0f}",
                         f"{row['speedup']:.3f}× ({row['ratio_q1']:.3f}–{row['ratio_q3']:.3f})", "≥ 1.0", row["speedup"] >= 1.0))
    for ranks, label in ((1, "1 process"), (2, "mpirun -np 2")):
        worst = max(pairs[ranks], key=lambda row: row["report_s"] / row["trainer_step_s"])
        share = worst["report_s"] / worst["trainer_step_s"]
        rows.append((f"event cost / step time: {label}", f"{worst['report_s'] * 1e6:.0f} µs",
                     f"{worst['trainer_step_s'] * 1e3:.1f} ms", f"{share * 100:.3f} %", "≤ 1 %", share <= 0.01))

    print(f"\nTrainer vs plain MLX loop, same model and batches. As users run them: {args.rounds} rounds of one trainer "
          f"and one loop process ({args.steps} steps after {args.warmup} warm-up), ratio = median over rounds of loop / "
          f"trainer step time (lowest–highest round). One process: {args.pair_steps} alternating step pairs, median of "
          "the pair ratios (quartiles).\n")
    print("| measure | trainer | plain loop (or step time) | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    for name, mine, theirs, shown, goal, met in rows:
        print(f"| {name} | {mine} | {theirs} | {shown} | {goal} | {'yes' if met else 'NO'} |")
    return 0 if all(row[5] for row in rows) else 1


def blas_name(library: str) -> str:
    return "bundled BLAS" if library == "bundled" else "OpenBLAS" if "openblas" in library.lower() else library


if __name__ == "__main__":
    sys.exit(main())
