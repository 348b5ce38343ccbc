"""LoraConfig: the settings of a `kind = "lora"` run, read by the same flat-TOML reader and flags as TrainConfig.

Names follow mlx_lm.lora's own options (lora_rank/lora_scale/lora_dropout are its ``lora_parameters``).
Standard library only: corral reads and checks a LoRA config before anything is launched.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from trainer.config import (
    BLAS_DEFAULT,
    BLAS_HELP,
    ConfigError,
    Invocation,
    _setting,
    build_parser,
    config_dict,
    parse_config_args,
    read_config_file,
)

EXAMPLE_FILE = "resources/lora.toml"
ADAPTERS_FILE = "adapters.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class LoraConfig:
    """What to fine-tune and how; one field per setting, each with the help text its flag shows."""

    # Model and data.
    model: str = _setting(
        "", "a local model directory (relative paths: to the config file if it exists there, else to the working "
        "directory) or a Hugging Face hub id such as mlx-community/Llama-3.2-1B-Instruct-4bit"
    )
    data: str = _setting(
        "", "a directory with train.jsonl and valid.jsonl ({\"text\": ...}, {\"prompt\": ..., \"completion\": ...} "
        "or {\"messages\": [...]} per line); relative paths are relative to the config file"
    )

    # What is trained.
    fine_tune_type: str = _setting("lora", "adapter type", ("lora", "dora"))
    num_layers: int = _setting(16, "transformer blocks that get adapters, counted from the last; -1: all")
    lora_rank: int = _setting(8, "rank of each adapter's low-rank matrices")
    lora_scale: float = _setting(20.0, "scale of the adapters' output (mlx-lm's scale, not alpha)")
    lora_dropout: float = _setting(0.0, "dropout on the adapters' input")

    # Optimisation (Adam, constant learning rate, as mlx_lm.lora does by default).
    learning_rate: float = _setting(1e-5, "Adam learning rate")
    iters: int = _setting(1000, "optimizer steps in total (a resumed run continues up to this step)")
    batch_size: int = _setting(4, "sequences per step over ALL ranks (mlx-lm's meaning); must divide by the ranks")
    max_seq_length: int = _setting(2048, "longer sequences are truncated to this many tokens")
    seed: int = _setting(0, "seed for the adapters' initial weights and the data order")
    grad_checkpoint: bool = _setting(False, "recompute activations in the backward pass: less memory, slower")
    mask_prompt: bool = _setting(False, "train on completions only (prompt/completion or messages data)")

    # Evaluation and adapters.
    steps_per_eval: int = _setting(200, "evaluate on valid.jsonl every this many steps (and at the start and end); 0 disables")
    val_batches: int = _setting(25, "batches in each evaluation; -1: all of valid.jsonl")
    save_every: int = _setting(100, "save adapters every this many steps (always at the end); 0: only at the end")
    adapter_dir: str = _setting(
        "adapters", "where rank 0 writes adapters.safetensors and adapter_config.json; relative to the working directory"
    )
    resume_adapter_file: str = _setting("", "continue from this adapters file (its step count continues)")

    # Reporting and launch.
    events: str = _setting("stdout", "where events go: one JSON line per event on stdout, or off", ("stdout", "off"))
    node_every_s: float = _setting(5.0, "seconds between node (host memory) events")
    backend: str = _setting("any", "MLX distributed backend", ("any", "mpi", "ring"))
    expect_world_size: int = _setting(
        0, "fail unless MLX finds this many ranks (catches a launch where MLX found no MPI); 0 accepts any"
    )
    blas: str = _setting(BLAS_DEFAULT, BLAS_HELP)


def validate_lora(config: LoraConfig) -> LoraConfig:
    """The config unchanged, or a ConfigError listing every inconsistent setting."""
    problems = []
    if not config.model:
        problems.append("model is required: a local model directory or a Hugging Face hub id")
    if not config.data:
        problems.append("data is required: a directory with train.jsonl and valid.jsonl")
    for name in ("lora_rank", "iters", "batch_size"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in ("steps_per_eval", "save_every", "expect_world_size"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must be 0 or more, got {getattr(config, name)}")
    if config.num_layers == 0 or config.num_layers < -1:
        problems.append(f"num_layers must be at least 1, or -1 for all blocks, got {config.num_layers}")
    if config.val_batches == 0 or config.val_batches < -1:
        problems.append(f"val_batches must be at least 1, or -1 for all of valid.jsonl, got {config.val_batches}")
    if config.max_seq_length < 2:
        problems.append(f"max_seq_length must be at least 2, got {config.max_seq_length}")
    if not 0.0 <= config.lora_dropout < 1.0:
        problems.append(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    if config.learning_rate <= 0:
        problems.append(f"learning_rate must be positive, got {config.learning_rate}")
    if not config.adapter_dir:
        problems.append("adapter_dir must not be empty: rank 0 writes the adapters there")
    if problems:
        raise ConfigError("invalid LoRA config: " + "; ".join(problems))
    return config


def build_lora_parser() -> argparse.ArgumentParser:
    return build_parser(
        LoraConfig,
        "LoRA fine-tuning with mlx-lm, data-parallel over MLX's ranks; one JSON event per line on stdout.",
        EXAMPLE_FILE,
    )


def _model_relative_to_config(argv: Sequence[str] | None) -> dict[str, Any]:
    """``model`` from the config file, resolved against the file's folder when that directory exists.

    A relative model is ambiguous (a local folder or a hub id like org/name): a folder next to the config
    file wins, anything else is left as written and resolved at run time (working directory, then the hub).
    """
    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--config")
    known, _ = peek.parse_known_args(argv)
    if not known.config:
        return {}
    path = Path(known.config)
    model = read_config_file(path, LoraConfig).get("model", "")
    if model and not Path(model).is_absolute() and (path.parent / model).is_dir():
        return {"model": str((path.parent / model).resolve())}
    return {}


def parse_lora_args(argv: Sequence[str] | None = None) -> Invocation:
    """Defaults, then --config FILE, then flags; raises ConfigError naming the file, line or flag.

    Returns the same Invocation as trainer.config.parse_args, with a LoraConfig as ``.config``.
    """
    parser = build_lora_parser()
    invocation = parse_config_args(argv, LoraConfig, validate_lora, parser)
    # A --model flag is taken as written; only the file's value follows the file.
    if "model" not in vars(parser.parse_args(argv)):
        resolved = _model_relative_to_config(argv)
        if resolved:
            invocation = replace(invocation, config=replace(invocation.config, **resolved))
    return invocation


def lora_config_dict(config: LoraConfig) -> dict[str, Any]:
    """The settings as JSON-ready values, with ``kind`` so a reader knows which trainer they belong to."""
    return {"kind": "lora", **config_dict(config)}

