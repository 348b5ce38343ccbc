"""`python -m trainer --config lora.toml`: LoRA fine-tuning with mlx-lm's own trainer, data-parallel, with corral's events.

One process:           python -m trainer --config resources/lora.toml
Data-parallel on N:    mpirun -np 2 python -m trainer --config resources/lora.toml --expect_world_size 2
Continue a run:        python -m trainer --config resources/lora.toml --resume_adapter_file adapters/adapters.safetensors
Memory plan (no MLX):  python -m trainer --plan --config resources/lora.toml --free-memory 8G,16G

Everything that mlx-lm does is left to mlx-lm: loading the model and tokenizer (mlx_lm.load), turning linear
layers into adapters (linear_to_lora_layers), tokenizing (its dataset classes) and the training loop
(mlx_lm.tuner.trainer.train: it shards each batch over the ranks and averages the gradients with
mx.distributed). corral adds the events (trainer/lora/callback.py), line-numbered data errors, atomic adapter
files with their step, and a resume that only needs the file on rank 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Sequence, TextIO

from trainer.blas import describe_blas
from trainer.config import ConfigError
from trainer.events import DoneEvent, ErrorEvent, EventWriter, StartEvent
from trainer.lora.config import LoraConfig, lora_config_dict, parse_lora_args
from trainer.train import LaunchError, check_world, tree_sha256

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PlainStderr(io.TextIOBase):
    """stderr without terminal escape codes: mlx-lm's console forces colour, which a log pane would show raw."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(_TERMINAL_CODES.sub("", text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False


class ModelError(ValueError):
    """The model cannot be found or loaded; the message names the path or hub id and this host."""


def resolve_model(model: str) -> tuple[str, bool]:
    """(what to give mlx_lm.load, whether it is a local directory); a ModelError when it is neither dir nor hub id."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    if _HUB_ID.match(model) and not path.exists():
        return model, False
    raise ModelError(
        f"model {model} is not a directory on {socket.gethostname()}: copy the model there (corral train copies "
        "a local model to every node) or give a Hugging Face hub id such as mlx-community/Llama-3.2-1B-Instruct-4bit"
    )


def load_model(model: str) -> tuple[Any, Any, str]:
    """mlx_lm.load of a local directory or hub id: (model, tokenizer, where it came from)."""
    import mlx_lm

    where, local = resolve_model(model)
    try:
        loaded, tokenizer = mlx_lm.load(where)
    except Exception as exc:  # noqa: BLE001 (mlx-lm and huggingface_hub raise many types; all mean "cannot load")
        if local:
            raise ModelError(f"cannot load the model in {where}: {type(exc).__name__}: {exc}") from exc
        raise ModelError(
            f"model {model} is not a directory on {socket.gethostname()} and fetching it from the Hugging Face hub "
            f"failed ({type(exc).__name__}: {exc}); copy the model to this node or give it network access"
        ) from exc
    return loaded, tokenizer, where


def adapters_sha256(model: Any) -> str:
    """Hash of the trainable (adapter) weights in a fixed order: equal on every rank when training is in step."""
    return tree_sha256(model.trainable_parameters())


def run_lora(config: LoraConfig, writer: EventWriter) -> int:
    """Fine-tune as the config says; returns the last step trained."""
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.datasets import CacheDataset
    from mlx_lm.tuner.trainer import TrainingArgs, iterate_batches, train
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from trainer.lora.adapters import adapter_config, load_resume, write_adapter_config
    from trainer.lora.callback import EventCallback, NodeReporter, attach_probe, detach_probe, probed_loss
    from trainer.lora.data import load_datasets

    started = time.monotonic()
    group = mx.distributed.init(backend=config.backend)
    rank, world_size = group.rank(), group.size()
    writer.rank = rank
    check_world(world_size, config.expect_world_size, os.environ)
    if config.batch_size % world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} must be a multiple of the {world_size} ranks: mlx-lm gives each rank "
            f"batch_size / ranks sequences per step"
        )
    nodes = NodeReporter(writer, config.node_every_s)
    adapter_dir = Path(config.adapter_dir)

    # mlx-lm prints its progress table and notices on stdout; stdout is the event stream, so they go to stderr.
    with contextlib.redirect_stdout(PlainStderr(sys.stderr)):
        model, tokenizer, model_source = load_model(config.model)
        evaluate = config.steps_per_eval > 0
        train_set, valid_set = load_datasets(Path(config.data), tokenizer, config.mask_prompt, config.batch_size, evaluate)

        # As mlx_lm.lora does: the same seeds on every rank give identical adapters and the same batch order.
        mx.random.seed(config.seed)
        np.random.seed(config.seed)
        model.freeze()
        blocks = len(model.layers)
        if config.num_layers > blocks:
            raise ConfigError(f"num_layers is {config.num_layers} but the model has {blocks} blocks; use {blocks} or -1 for all")
        lora_parameters = {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": config.lora_dropout}
        linear_to_lora_layers(model, config.num_layers, lora_parameters, use_dora=config.fine_tune_type == "dora")
        first_step = load_resume(Path(config.resume_adapter_file), model, group) if config.resume_adapter_file else 0
        if first_step >= config.iters:
            raise ConfigError(
                f"resume_adapter_file {config.resume_adapter_file} is at step {first_step} and iters is {config.iters}: "
                f"nothing left to train; raise iters (e.g. --iters {first_step + config.iters})"
            )
        if rank == 0:
            write_adapter_config(adapter_dir, adapter_config(config, model_source))

        trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        total = sum(v.size for _, v in tree_flatten(model.parameters()))
        writer.emit(
            StartEvent,
            world_size=world_size,
            host=nodes.host,
            pid=os.getpid(),
            parameters=total,
            mlx_version=mx.__version__,
            blas=describe_blas().library,
            config={**lora_config_dict(config), "trainable_parameters": trainable, "first_step": first_step},
        )
        nodes.if_due()

        probe = attach_probe(model)
        callback = EventCallback(
            writer, model, probe, first_step=first_step, last_step=config.iters,
            batches_per_epoch=len(train_set) // config.batch_size, save_every=config.save_every,
            adapter_dir=adapter_dir, rank=rank, nodes=nodes,
        )
        remaining = config.iters - first_step

        def continuing_batches(dataset: Any, batch_size: int, max_seq_length: int, loop: bool = False,
                               seed: Any = None, comm_group: Any = None) -> Any:
            # A resumed run skips the batches the earlier run trained on (training loops; evaluation does not).
            batches = iterate_batches(dataset, batch_size, max_seq_length, loop=loop, seed=seed, comm_group=comm_group)
            if loop and first_step:
                for _ in zip(range(first_step), batches):
                    pass
            return batches

        # mlx-lm writes adapter_file itself at the end (not atomically, without the step): point it at scratch
        # space; the callback saves every file the run keeps. steps_per_save past the end: no periodic writes.
        with tempfile.TemporaryDirectory(prefix="corral-mlx-lm-") as scratch:
            args = TrainingArgs(
                batch_size=config.batch_size,
                iters=remaining,
                val_batches=config.val_batches,
                steps_per_report=1,
                steps_per_eval=config.steps_per_eval or remaining + 1,
                steps_per_save=remaining + 1,
                max_seq_length=config.max_seq_length,
                adapter_file=str(Path(scratch) / "adapters.safetensors"),
                grad_checkpoint=config.grad_checkpoint,
            )
            train(
                model=model,
                optimizer=optim.Adam(learning_rate=config.learning_rate),
                train_dataset=CacheDataset(train_set),
                val_dataset=CacheDataset(valid_set) if valid_set is not None else None,
                args=args,
                loss=probed_loss(),
                iterate_batches=continuing_batches,
                training_callback=callback,
            )
        detach_probe(model)
    callback.close()
    writer.emit(DoneEvent, step=callback.step, elapsed_s=time.monotonic() - started, params_sha256=adapters_sha256(model))
    return callback.step


def _rank_from_environment() -> int:
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line for a LoRA config; every failure becomes an `error` event and a non-zero exit status."""
    writer = EventWriter(_rank_from_environment(), sys.stdout)
    try:
        invocation = parse_lora_args(argv)
        config = invocation.config
        if invocation.print_config:
            print(json.dumps(lora_config_dict(config), indent=1))
            return 0
        if invocation.plan:
            from trainer.lora.plan import lora_plan

            print(json.dumps(lora_plan(config, invocation.free_memory), indent=1))
            return 0
        writer = EventWriter(writer.rank, sys.stdout if config.events == "stdout" else None)
        run_lora(config, writer)
        return 0
    except KeyboardInterrupt:
        _report_error(writer, "interrupted", "")
        return 130
    except (ValueError, LaunchError, OSError) as exc:
        # Ours (config, model, data, adapters, launch) carry the sentence to show; others get their type named.
        ours = type(exc).__module__.startswith("trainer.")
        _report_error(writer, str(exc) if ours else f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return 2 if isinstance(exc, ConfigError) else 1
    except Exception as exc:  # noqa: BLE001 (anything else is a bug: report it with the traceback)
        _report_error(writer, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return 1


def _report_error(writer: EventWriter, message: str, trace: str) -> None:
    """The error event goes to stdout even when events are off, so a launcher always learns why."""
    EventWriter(writer.rank, sys.stdout).emit(ErrorEvent, message=message, traceback=trace)
