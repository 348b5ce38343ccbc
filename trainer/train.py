"""Entry point: start MLX distributed, train, evaluate, checkpoint, and report every event as a JSON line.

One process (distributed calls are no-ops there):
    python -m trainer --config resources/trainer.toml
Data-parallel on N ranks (one line per event per rank on stdout):
    mpirun -np 2 python -m trainer --config resources/trainer.toml --expect_world_size 2
Continue exactly where a run stopped:
    python -m trainer --config resources/trainer.toml --resume checkpoints
Memory plan for nodes with 8 and 16 GiB free (JSON on stdout, no MLX needed):
    python -m trainer --plan --config resources/trainer.toml --free-memory 8G,16G
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

from trainer.blas import describe_blas
from trainer.config import ConfigError, TrainConfig, config_dict, parse_args
from trainer.events import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    EventWriter,
    NodeEvent,
    StartEvent,
    StepEvent,
)
from trainer.schedule import learning_rate_at
from trainer.system import ProcessMemory, host_memory, load_1m

# Set by mpirun (Open MPI, then PMI-style launchers): how many ranks the launcher started.
_LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_LAUNCHER_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK")


class LaunchError(RuntimeError):
    """The ranks MLX found are not the ranks that were launched or expected."""


def _launcher_value(env: Mapping[str, str], names: Sequence[str]) -> int | None:
    for name in names:
        if env.get(name, "").isdigit():
            return int(env[name])
    return None


def check_world(world_size: int, expected: int, env: Mapping[str, str]) -> None:
    """Raise LaunchError when MLX's world differs from what mpirun started or the config expects."""
    launched = _launcher_value(env, _LAUNCHER_SIZE_VARIABLES)
    wanted = expected or launched or 0
    if world_size == 1 and wanted > 1:
        source = f"mpirun started {launched} ranks" if launched and launched > 1 else f"expect_world_size is {expected}"
        raise LaunchError(
            f"MLX found no MPI: this process is rank 0 of 1 but {source}. Start the trainer under "
            f"`mpirun -np {wanted}` (not as a plain process) and make sure MLX can load Open MPI's libmpi.so "
            "(install libopenmpi-dev, or set MLX_MPI_LIBNAME=libmpi.so.40)."
        )
    if expected and world_size != expected:
        raise LaunchError(
            f"MLX found {world_size} ranks but expect_world_size is {expected}; launch with `mpirun -np {expected}` "
            "or change expect_world_size."
        )


class Reporter:
    """Builds and writes this rank's events; the per-step part is kept cheap (measured in bench/bench_trainer.py)."""

    def __init__(self, writer: EventWriter, node_every_s: float) -> None:
        import mlx.core as mx

        self._mx = mx
        self.writer = writer
        self.node_every_s = node_every_s
        self.host = socket.gethostname()
        self.process_memory = ProcessMemory()
        self._next_node_report = 0.0

    def step(self, step: int, loss: float, loss_mean: float, learning_rate: float, step_time_s: float,
             step_tokens: int, tokens: int, epoch: int) -> None:
        mx = self._mx
        self.writer.emit(
            StepEvent,
            step=step,
            loss=loss,
            loss_mean=loss_mean,
            learning_rate=learning_rate,
            step_time_s=step_time_s,
            tokens_per_s=step_tokens / step_time_s if step_time_s > 0 else None,
            tokens=tokens,
            epoch=epoch,
            mlx_active_bytes=mx.get_active_memory(),
            mlx_peak_bytes=mx.get_peak_memory(),
            mlx_cache_bytes=mx.get_cache_memory(),
            rss_bytes=self.process_memory.rss_bytes(),
        )
        self.node_if_due()

    def node_if_due(self) -> None:
        now = time.monotonic()
        if now < self._next_node_report:
            return
        self._next_node_report = now + self.node_every_s
        used, total = host_memory()
        self.writer.emit(NodeEvent, host=self.host, ram_used_bytes=used, ram_total_bytes=total, load_1m=load_1m())


def parameters_sha256(model: Any) -> str:
    """Hash of every weight in a fixed order; equal on every rank when data-parallel training is in step."""
    return tree_sha256(model.parameters())


def tree_sha256(tree: Any) -> str:
    """Hash of a tree of arrays (names and float32 values) in a fixed order, the same on every rank."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    digest = hashlib.sha256()
    for name, value in sorted(tree_flatten(tree), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(bytes(memoryview(value.astype(mx.float32) if value.dtype != mx.float32 else value)))
    return digest.hexdigest()


def train(config: TrainConfig, writer: EventWriter) -> int:
    """Run the training the config describes; returns the last step trained."""
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    from trainer.checkpoint import TrainingState, load_checkpoint, save_checkpoint
    from trainer.data import VOCAB_SIZE, Position, ShardedSamples, eval_micro_batches, load_splits
    from trainer.model import TransformerLM
    from trainer.schedule import mlx_schedule
    from trainer.step import EvalStep, TrainStep, cpu_streams

    started = time.monotonic()
    group = mx.distributed.init(backend=config.backend)
    rank, world_size = group.rank(), group.size()
    writer.rank = rank
    check_world(world_size, config.expect_world_size, os.environ)
    reporter = Reporter(writer, config.node_every_s)

    mx.random.seed(config.seed)
    model = TransformerLM(VOCAB_SIZE, config.seq_len, config.n_layers, config.d_model, config.n_heads, config.mlp_multiplier)
    if config.dtype == "bfloat16":
        model.set_dtype(mx.bfloat16)
    schedule = mlx_schedule(config.learning_rate, config.min_learning_rate, config.warmup_steps, config.steps)
    optimizer = optim.AdamW(
        learning_rate=schedule, betas=[config.beta1, config.beta2], weight_decay=config.weight_decay
    )
    optimizer.init(model.trainable_parameters())
    mx.eval(model.parameters(), optimizer.state)
    parameters = sum(v.size for _, v in tree_flatten(model.parameters()))
    writer.emit(
        StartEvent,
        world_size=world_size,
        host=reporter.host,
        pid=os.getpid(),
        parameters=parameters,
        mlx_version=mx.__version__,
        blas=describe_blas().library,
        config=config_dict(config),
    )
    reporter.node_if_due()

    splits = load_splits(config.data, config.val_fraction)
    train_tokens = mx.array(memoryview(splits.train))
    val_tokens = mx.array(memoryview(splits.val)) if len(splits.val) else None
    samples = ShardedSamples(
        len(splits.train), config.seq_len, config.batch_size, config.grad_accum_steps, rank, world_size, config.seed
    )
    offsets = mx.arange(config.seq_len + 1)

    def batch(tokens: mx.array, ids: list[int]) -> tuple[mx.array, mx.array]:
        windows = tokens[mx.array(ids)[:, None] * config.seq_len + offsets]
        return windows[:, :-1], windows[:, 1:]

    eval_ids = []
    if config.eval_every and val_tokens is not None:
        eval_ids = eval_micro_batches(len(splits.val), config.seq_len, config.batch_size, config.eval_batches, rank, world_size)

    step, position, tokens_seen = 0, Position(), 0
    if config.resume:
        restored = load_checkpoint(Path(config.resume), model, optimizer, rank, world_size)
        step, position, tokens_seen = restored.step, Position(restored.epoch, restored.batch), restored.tokens

    streams = cpu_streams(config.batch_size)
    train_step = TrainStep(model, optimizer, config.grad_clip, world_size, compile=config.compile, streams=streams)
    evaluate = EvalStep(model, world_size, compile=config.compile, streams=streams)
    checkpoints = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    step_tokens = config.batch_size * config.grad_accum_steps * config.seq_len
    last_saved = step

    def save() -> None:
        nonlocal last_saved
        last_saved = step
        if rank != 0 or checkpoints is None:
            return
        save_started = time.perf_counter()
        state = TrainingState(step, position.epoch, position.batch, tokens_seen, mx.random.state[0].tolist(), config_dict(config))
        path, size = save_checkpoint(checkpoints, model, optimizer, state, config.keep_checkpoints)
        writer.emit(CheckpointEvent, step=step, path=str(path), size_bytes=size, save_time_s=time.perf_counter() - save_started)

    def run_eval() -> None:
        if not eval_ids:
            return
        eval_started = time.perf_counter()
        val_loss = evaluate([batch(val_tokens, ids) for ids in eval_ids])
        writer.emit(EvalEvent, step=step, val_loss=val_loss, eval_time_s=time.perf_counter() - eval_started)

    while step < config.steps:
        step_started = time.perf_counter()
        epoch = position.epoch
        micro_batches = [batch(train_tokens, ids) for ids in samples.micro_batches(position)]
        loss, loss_mean = train_step(micro_batches)
        step_time_s = time.perf_counter() - step_started
        step += 1
        position = samples.advance(position)
        tokens_seen += step_tokens
        learning_rate = learning_rate_at(
            step - 1, config.learning_rate, config.min_learning_rate, config.warmup_steps, config.steps
        )
        reporter.step(step, loss, loss_mean, learning_rate, step_time_s, step_tokens, tokens_seen, epoch)
        if config.eval_every and step % config.eval_every == 0:
            run_eval()
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            save()
    if config.eval_every and step % config.eval_every:
        run_eval()
    if last_saved != step:
        save()
    writer.emit(DoneEvent, step=step, elapsed_s=time.monotonic() - started, params_sha256=parameters_sha256(model))
    reporter.process_memory.close()
    return step


def _rank_from_environment() -> int:
    return _launcher_value(os.environ, _LAUNCHER_RANK_VARIABLES) or 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; every failure becomes an `error` event and a non-zero exit status."""
    writer = EventWriter(_rank_from_environment(), sys.stdout)
    try:
        invocation = parse_args(argv)
        if invocation.print_config:
            print(json.dumps(config_dict(invocation.config), indent=1))
            return 0
        if invocation.plan:
            from trainer.plan import plan

            print(json.dumps(plan(invocation.config, invocation.free_memory), indent=1))
            return 0
        writer = EventWriter(writer.rank, sys.stdout if invocation.config.events == "stdout" else None)
        train(invocation.config, writer)
        return 0
    except KeyboardInterrupt:
        _report_error(writer, "interrupted", "")
        return 130
    except (ValueError, LaunchError, OSError) as exc:
        # Ours (bad config, data, checkpoint, launch) carry the sentence to show; others get their type named.
        ours = type(exc).__module__.startswith("trainer.")
        _report_error(writer, str(exc) if ours else f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return 2 if isinstance(exc, ConfigError) else 1
    except Exception as exc:  # noqa: BLE001 (anything else is a bug: report it with the traceback)
        _report_error(writer, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return 1


def _report_error(writer: EventWriter, message: str, trace: str) -> None:
    """The error event goes to stdout even when events are off, so a launcher always learns why."""
    EventWriter(writer.rank, sys.stdout).emit(ErrorEvent, message=message, traceback=trace)
