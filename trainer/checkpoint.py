"""Checkpoints: weights, optimizer state, step, RNG and data position, written atomically by rank 0.

Layout: ``<checkpoint_dir>/step_000100/{model.safetensors, optimizer.safetensors, state.json}``. A
checkpoint is written to a hidden temporary directory beside it and renamed into place, so a crash
never leaves a half-written ``step_*`` directory. On resume only rank 0 reads the files and every
value is sent to the other ranks (an all_sum where they add zeros), so other nodes need no copy.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

STATE_FILE = "state.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or from a different model; the message names the path."""


@dataclass(frozen=True)
class TrainingState:
    """Everything besides arrays that an exact resume needs."""

    step: int
    epoch: int
    batch: int
    tokens: int
    rng_key: list[int]
    config: dict[str, Any]


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def save_checkpoint(root: Path, model: Any, optimizer: Any, state: TrainingState, keep: int) -> tuple[Path, int]:
    """Write a checkpoint for ``state.step`` under ``root``; returns its path and size in bytes."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(state.step)
    scratch = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    mx.save_safetensors(str(scratch / "model.safetensors"), dict(tree_flatten(model.parameters())))
    mx.save_safetensors(str(scratch / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    meta = {"format": FORMAT_VERSION, **state.__dict__}
    with open(scratch / STATE_FILE, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    if final.exists():  # the same step again (a re-run): replace it whole
        shutil.rmtree(final)
    os.replace(scratch, final)
    size = sum(f.stat().st_size for f in final.iterdir())
    if keep > 0:
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final, size


def find_checkpoint(path: Path) -> Path:
    """The checkpoint at ``path``, or the newest ``step_*`` checkpoint inside it."""
    if (path / STATE_FILE).is_file():
        return path
    candidates = sorted(p for p in path.glob("step_*") if (p / STATE_FILE).is_file()) if path.is_dir() else []
    if not candidates:
        raise CheckpointError(f"no checkpoint at {path}: expected a step_* directory with {STATE_FILE}; check --resume")
    return candidates[-1]


def _load_arrays(path: Path, template: Any, what: str) -> dict[str, mx.array]:
    loaded = mx.load(str(path))
    expected = dict(tree_flatten(template))
    if set(loaded) != set(expected):
        missing = sorted(set(expected) - set(loaded))[:3]
        raise CheckpointError(f"{path}: the {what} does not match this model (missing {missing}); resume with the config it was saved with")
    for key, value in expected.items():
        if loaded[key].shape != value.shape:
            raise CheckpointError(f"{path}: {key} has shape {loaded[key].shape}, the model needs {value.shape}; check the model settings")
    return loaded


def _share_from_rank0(arrays: dict[str, mx.array], rank: int, world_size: int) -> dict[str, mx.array]:
    """Rank 0's arrays on every rank: the others contribute zeros to an all_sum."""
    if world_size == 1:
        return arrays
    shared = {}
    # Every rank must pair the same arrays in the same order: rank 0's come from the file (sorted by name),
    # the others' from the model, so walk them all by name.
    for key in sorted(arrays):
        value = arrays[key]
        wide = value.astype(mx.float32) if value.dtype == mx.bfloat16 else value  # exact: a sum of one value and zeros
        summed = mx.distributed.all_sum(wide if rank == 0 else mx.zeros_like(wide))
        shared[key] = summed.astype(value.dtype)
    mx.eval(shared)
    return shared


def load_checkpoint(path: Path, model: Any, optimizer: Any, rank: int, world_size: int) -> TrainingState:
    """Restore weights, optimizer state and RNG from the checkpoint at ``path`` (read on rank 0, shared with all)."""
    params_template = dict(tree_flatten(model.parameters()))
    optimizer_template = dict(tree_flatten(optimizer.state))
    if rank == 0:
        directory = find_checkpoint(path)
        meta = json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))
        params = _load_arrays(directory / "model.safetensors", model.parameters(), "weights")
        opt = _load_arrays(directory / "optimizer.safetensors", optimizer.state, "optimizer state")
        tokens = int(meta["tokens"])
        header = [meta["step"], meta["epoch"], meta["batch"], tokens % 2**32, tokens // 2**32, *meta["rng_key"]]
        config = meta["config"]
    else:
        params = {k: mx.zeros_like(v) for k, v in params_template.items()}
        opt = {k: mx.zeros_like(v) for k, v in optimizer_template.items()}
        header = [0] * 7
        config = {}
    params = _share_from_rank0(params, rank, world_size)
    opt = _share_from_rank0(opt, rank, world_size)
    numbers = _share_from_rank0({"header": mx.array(header, dtype=mx.uint32)}, rank, world_size)
    step, epoch, batch, tokens_low, tokens_high, key0, key1 = (int(x) for x in numbers["header"].tolist())
    tokens = tokens_high * 2**32 + tokens_low
    model.update(tree_unflatten(list(params.items())))
    # In place: the compiled step holds a reference to this very dict.
    optimizer.state.update(tree_unflatten(list(opt.items())))
    # MLX has no setter for its key, but seed(s) makes the key [s >> 32, s & 0xffffffff]: exactly the saved one.
    mx.random.seed((key0 << 32) | key1)
    mx.eval(model.parameters(), optimizer.state, mx.random.state)
    return TrainingState(step, epoch, batch, tokens, [key0, key1], config)
