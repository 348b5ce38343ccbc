"""Adapters on disk in mlx-lm's layout, written atomically by rank 0, and read back to resume on every rank.

Layout (what ``mlx_lm.load(model, adapter_path=adapter_dir)`` reads): ``adapters.safetensors`` (the newest),
``adapter_config.json``, and ``<step:07d>_adapters.safetensors`` per save. Each file is written under a
temporary name beside it and renamed into place, so a crash never leaves a half-written file under the final
name. Every adapters file carries its step in the safetensors metadata, so a resume knows where it continues.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from trainer.lora.config import ADAPTER_CONFIG_FILE, ADAPTERS_FILE, LoraConfig

STEP_METADATA_KEY = "corral_step"
_NUMBERED = re.compile(r"^(\d+)_adapters\.safetensors$")


class AdapterError(ValueError):
    """A resume file is missing or does not fit the model; the message names the file and the fix."""


def numbered_name(step: int) -> str:
    return f"{step:07d}_adapters.safetensors"


def adapter_config(config: LoraConfig, model: str) -> dict[str, Any]:
    """adapter_config.json: the keys mlx-lm's load_adapters reads, plus the run's settings under mlx-lm's names."""
    return {
        "fine_tune_type": config.fine_tune_type,
        "num_layers": config.num_layers,
        "lora_parameters": {"rank": config.lora_rank, "scale": config.lora_scale, "dropout": config.lora_dropout},
        "model": model,
        "data": config.data,
        "iters": config.iters,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "max_seq_length": config.max_seq_length,
        "mask_prompt": config.mask_prompt,
        "grad_checkpoint": config.grad_checkpoint,
        "seed": config.seed,
        "optimizer": "adam",
    }


def _replace_atomically(scratch: Path, final: Path) -> None:
    with open(scratch, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(scratch, final)


def write_adapter_config(adapter_dir: Path, config: dict[str, Any]) -> Path:
    adapter_dir.mkdir(parents=True, exist_ok=True)
    final = adapter_dir / ADAPTER_CONFIG_FILE
    scratch = adapter_dir / f".{ADAPTER_CONFIG_FILE}.tmp-{os.getpid()}"
    scratch.write_text(json.dumps(config, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    _replace_atomically(scratch, final)
    return final


def _save_safetensors(final: Path, weights: dict[str, Any], metadata: dict[str, str]) -> int:
    import mlx.core as mx

    # mx.save_safetensors appends ".safetensors" to any other name, so the temporary name ends with it too.
    scratch = final.with_name(f".{final.stem}.tmp-{os.getpid()}.safetensors")
    mx.save_safetensors(str(scratch), weights, metadata=metadata)
    size = scratch.stat().st_size
    _replace_atomically(scratch, final)
    return size


def save_adapters(adapter_dir: Path, weights: dict[str, Any], step: int) -> tuple[Path, int]:
    """Write ``<step:07d>_adapters.safetensors`` and ``adapters.safetensors``; returns the latter's path and size."""
    adapter_dir.mkdir(parents=True, exist_ok=True)
    metadata = {STEP_METADATA_KEY: str(step)}
    _save_safetensors(adapter_dir / numbered_name(step), weights, metadata)
    final = adapter_dir / ADAPTERS_FILE
    return final, _save_safetensors(final, weights, metadata)


def step_of(path: Path, metadata: dict[str, str]) -> int:
    """The step an adapters file was saved at: our metadata, else mlx-lm's numbered file name, else 0."""
    if metadata.get(STEP_METADATA_KEY, "").isdigit():
        return int(metadata[STEP_METADATA_KEY])
    match = _NUMBERED.match(path.name)
    return int(match.group(1)) if match else 0


def _read_on_rank_zero(path: Path, expected: dict[str, Any]) -> tuple[dict[str, Any], int]:
    import mlx.core as mx

    if not path.is_file():
        raise AdapterError(f"resume_adapter_file {path} does not exist; give the adapters.safetensors of an earlier run")
    try:
        weights, metadata = mx.load(str(path), return_metadata=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise AdapterError(f"cannot read resume_adapter_file {path}: {exc}") from None
    differ = sorted(set(weights) ^ set(expected))
    differ += sorted(n for n in set(weights) & set(expected) if tuple(weights[n].shape) != tuple(expected[n].shape))
    if differ:
        name = differ[0]
        found = tuple(weights[name].shape) if name in weights else "absent"
        wanted = tuple(expected[name].shape) if name in expected else "absent"
        raise AdapterError(
            f"resume_adapter_file {path} does not fit this model and LoRA settings ({len(differ)} tensors differ, e.g. "
            f"{name}: file {found}, model {wanted}); use the model, fine_tune_type, num_layers and lora_rank of the run "
            "that wrote it"
        )
    return weights, step_of(path, metadata)


def load_resume(path: Path, model: Any, group: Any) -> int:
    """Load the adapters file into the model on every rank and return its step; only rank 0 reads the file.

    The other ranks may run on nodes without the file (it lives in the earlier run's directory on the head
    node): rank 0 sends a status, the step and every tensor with all_sum, to which the others add zeros.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten

    expected = dict(tree_flatten(model.trainable_parameters()))
    weights: dict[str, Any] = {}
    step, problem = 0, None
    if group.rank() == 0:
        try:
            weights, step = _read_on_rank_zero(path, expected)
        except AdapterError as exc:
            problem = exc
    read_ok = 1 if group.rank() == 0 and problem is None else 0  # the other ranks add zeros
    status = mx.distributed.all_sum(mx.array([read_ok, step]), group=group, stream=mx.cpu).tolist()
    if problem is not None:
        raise problem
    if status[0] != 1:
        raise AdapterError(f"rank 0 could not read resume_adapter_file {path}; its error event says why")
    names = sorted(expected)
    received = [
        mx.distributed.all_sum(weights[name] if group.rank() == 0 else mx.zeros_like(expected[name]), group=group,
                               stream=mx.cpu).astype(expected[name].dtype)
        for name in names
    ]
    model.load_weights(list(zip(names, received)), strict=False)
    mx.eval(model.trainable_parameters())
    return int(status[1])
