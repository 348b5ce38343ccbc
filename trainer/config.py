"""TrainConfig: every setting of the trainer with its help text, read from a config file and `--field value` flags.

The config file is flat TOML (``key = value`` lines, ``#`` comments), read with the standard library on
Python 3.10 too: each value is a JSON literal (``128``, ``3e-4``, ``"bfloat16"``, ``true``) or a
'single-quoted' literal string. Later sources win: the dataclass defaults, then ``--config FILE``,
then flags.
"""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence


class ConfigError(ValueError):
    """A setting is unknown, malformed or inconsistent; the message names the file, line or flag."""


# Read by trainer/__main__.py before MLX is imported (trainer/blas.py); a field of every kind of config.
BLAS_KEY = "blas"
BLAS_DEFAULT = "auto"
BLAS_HELP = ("CPU matmul library on Linux: auto (the machine's OpenBLAS if installed, else MLX's bundled reference "
             "BLAS, ~15x slower), bundled, or the path of a CBLAS library")


def _setting(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": tuple(choices) if choices else None})


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; one field per setting, each with the help text its flag shows."""

    # Model: a decoder-only transformer over bytes.
    n_layers: int = _setting(4, "transformer blocks")
    d_model: int = _setting(128, "width of the residual stream")
    n_heads: int = _setting(4, "attention heads (must divide d_model)")
    mlp_multiplier: int = _setting(4, "hidden width of each MLP as a multiple of d_model")
    seq_len: int = _setting(128, "tokens (bytes) per training sequence")

    # Data.
    data: str = _setting(
        "",
        "a .jsonl or text file, or a directory with train.jsonl/train.txt (and optionally valid.jsonl/valid.txt); "
        "empty: the bundled stories corpus; relative paths are relative to the config file",
    )
    val_fraction: float = _setting(0.05, "share of the tokens held out for eval when there is no valid file")

    # Optimisation.
    steps: int = _setting(300, "optimizer steps to train in total")
    batch_size: int = _setting(16, "sequences per micro batch on each rank")
    grad_accum_steps: int = _setting(1, "micro batches accumulated into one optimizer step")
    learning_rate: float = _setting(3e-3, "peak learning rate, reached at the end of warmup")
    min_learning_rate: float = _setting(3e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _setting(20, "steps of linear warmup from 0 to learning_rate")
    weight_decay: float = _setting(0.1, "AdamW decoupled weight decay")
    beta1: float = _setting(0.9, "AdamW beta1")
    beta2: float = _setting(0.95, "AdamW beta2")
    grad_clip: float = _setting(1.0, "clip the global gradient norm to this value; 0 disables clipping")
    dtype: str = _setting("float32", "parameter and activation dtype", ("float32", "bfloat16"))
    seed: int = _setting(0, "seed for the weights and the data order")
    compile: bool = _setting(True, "compile the training step with mx.compile")

    # Evaluation and checkpoints.
    eval_every: int = _setting(50, "evaluate on the held-out split every this many steps; 0 disables")
    eval_batches: int = _setting(4, "micro batches per rank in each evaluation")
    checkpoint_dir: str = _setting("checkpoints", "where rank 0 writes checkpoints; empty disables them")
    checkpoint_every: int = _setting(100, "write a checkpoint every this many steps (and at the end); 0: only at the end")
    keep_checkpoints: int = _setting(2, "newest checkpoints to keep; 0 keeps all")
    resume: str = _setting("", "continue from this checkpoint (or the newest one in this directory)")

    # Reporting and launch.
    events: str = _setting("stdout", "where events go: one JSON line per event on stdout, or off", ("stdout", "off"))
    node_every_s: float = _setting(5.0, "seconds between node (host memory) events")
    backend: str = _setting("any", "MLX distributed backend", ("any", "mpi", "ring"))
    expect_world_size: int = _setting(
        0, "fail unless MLX finds this many ranks (catches a launch where MLX found no MPI); 0 accepts any"
    )
    blas: str = _setting(BLAS_DEFAULT, BLAS_HELP)


FIELDS = {f.name: f for f in fields(TrainConfig)}
_TYPES = {"int": int, "float": float, "str": str, "bool": bool}

# `kind` picks the trainer: absent or "scratch" is TrainConfig above, "lora" is trainer/lora (mlx-lm). It is read
# before anything else (config_kind), so it is not a field of either config.
KIND_KEY = "kind"
KINDS = ("scratch", "lora")


def _fields_of(config_class: type) -> dict[str, Any]:
    return FIELDS if config_class is TrainConfig else {f.name: f for f in fields(config_class)}


def field_type(name: str, config_class: type = TrainConfig) -> type:
    """The Python type of a field (annotations are strings here)."""
    return _TYPES[str(_fields_of(config_class)[name].type)]


def default_config() -> TrainConfig:
    return TrainConfig()


def _coerce(name: str, value: Any, where: str, config_class: type = TrainConfig) -> Any:
    """The value as the field's type, or a ConfigError naming where it came from."""
    kind = field_type(name, config_class)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {name} expects {kind.__name__}, got {value!r}")
    choices = _fields_of(config_class)[name].metadata["choices"]
    if choices and value not in choices:
        raise ConfigError(f"{where}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _unknown(name: str, where: str, config_class: type = TrainConfig) -> ConfigError:
    close = difflib.get_close_matches(name, _fields_of(config_class), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    if not close and config_class is TrainConfig and name in _lora_field_names():
        hint = ' (a LoRA setting: add kind = "lora" to train with mlx-lm)'
    return ConfigError(f"{where}: unknown setting {name!r}{hint}")


def _lora_field_names() -> set[str]:
    from trainer.lora.config import LoraConfig

    return {f.name for f in fields(LoraConfig)}


def _check_kind(value: Any, where: str) -> str:
    if value not in KINDS:
        raise ConfigError(f"{where}: {KIND_KEY} must be one of {', '.join(KINDS)}, got {value!r}")
    return value


def _parse_value(text: str) -> Any:
    """A JSON literal or a 'literal string', followed by nothing or a # comment."""
    if text.startswith("'"):
        end = text.find("'", 1)
        if end < 0:
            raise ValueError("unterminated 'string'")
        value, rest = text[1:end], text[end + 1 :]
    else:
        value, end = json.JSONDecoder().raw_decode(text)
        rest = text[end:]
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ValueError(f"unexpected {rest!r} after the value")
    return value


def read_config_file(path: Path, config_class: type = TrainConfig) -> dict[str, Any]:
    """The settings in a flat TOML config file; all problems in one ConfigError, each with file and line.

    ``kind`` is checked but not returned (config_kind reads it); ``config_class`` is TrainConfig or LoraConfig.
    """
    known = _fields_of(config_class)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    values: dict[str, Any] = {}
    problems: list[str] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        where = f"{path}:{number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            problems.append(f"{where}: sections are not supported; the trainer config is flat key = value lines")
            continue
        name, sep, rest = line.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(f"{where}: expected key = value, got {line!r}")
            continue
        if name in first_line:
            problems.append(f"{where}: {name} is already set on line {first_line[name]}; keep one of the two")
            continue
        first_line[name] = number
        if name == KIND_KEY and name not in known:
            try:
                _check_kind(_parse_value(rest.strip()), where)
            except ValueError as exc:
                problems.append(str(exc) if isinstance(exc, ConfigError) else f"{where}: {name}: {exc}")
            continue
        if name not in known:
            problems.append(str(_unknown(name, where, config_class)))
            continue
        try:
            value = _parse_value(rest.strip())
            values[name] = _coerce(name, value, where, config_class)
        except ValueError as exc:  # ConfigError is a ValueError too
            problems.append(str(exc) if isinstance(exc, ConfigError) else f"{where}: {name}: {exc}")
    if problems:
        raise ConfigError("; ".join(problems))
    # Relative data paths follow the config file, so `--config resources/trainer.toml` works from anywhere.
    if values.get("data") and not Path(values["data"]).is_absolute():
        values["data"] = str((path.parent / values["data"]).resolve())
    return values


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of exiting, so a bad flag becomes an `error` event.

    No abbreviated flags: settings read before the full parse (peek_setting) must mean the same here.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str) -> Any:
        raise ConfigError(f"command line: {message}")


_DESCRIPTION = "MLX data-parallel training of a small byte-level transformer; one JSON event per line on stdout."


def build_parser(config_class: type = TrainConfig, description: str = _DESCRIPTION,
                 example: str = "resources/trainer.toml") -> argparse.ArgumentParser:
    """Flags: --config, --kind, --plan, --free-memory, and `--field value` for every field of config_class."""
    parser = _Parser(prog="python -m trainer", description=description)
    parser.add_argument("--config", metavar="FILE", help=f"flat TOML config file (see {example})")
    parser.add_argument(
        f"--{KIND_KEY}", choices=KINDS, help="which trainer: scratch (the default) or lora (mlx-lm); overrides the file"
    )
    parser.add_argument("--plan", action="store_true", help="print the memory plan for this config as JSON and exit")
    parser.add_argument(
        "--free-memory",
        metavar="SIZES",
        default="",
        help="with --plan: free memory of each node, comma-separated (bytes or 16G, 512M)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    group = parser.add_argument_group(f"training settings (defaults: {example})")
    for f in fields(config_class):
        kind = field_type(f.name, config_class)
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        group.add_argument(
            *flags,
            dest=f.name,
            default=argparse.SUPPRESS,
            type=_parse_bool if kind is bool else kind,
            choices=f.metadata["choices"],
            metavar=None if f.metadata["choices"] else kind.__name__.upper(),
            help=f"{f.metadata['help']} (default: {f.default!r})",
        )
    return parser


def validate(config: TrainConfig) -> TrainConfig:
    """The config unchanged, or a ConfigError listing every inconsistent setting."""
    problems = []
    positive = ("n_layers", "d_model", "n_heads", "mlp_multiplier", "seq_len", "steps", "batch_size", "grad_accum_steps")
    for name in positive:
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in ("warmup_steps", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints", "expect_world_size"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must be 0 or more, got {getattr(config, name)}")
    if config.n_heads >= 1 and config.d_model % config.n_heads:
        problems.append(f"n_heads ({config.n_heads}) must divide d_model ({config.d_model})")
    if not 0.0 <= config.val_fraction < 1.0:
        problems.append(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    if config.learning_rate <= 0 or config.min_learning_rate < 0:
        problems.append("learning_rate must be positive and min_learning_rate 0 or more")
    if config.grad_clip < 0:
        problems.append(f"grad_clip must be 0 or more, got {config.grad_clip}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return config


@dataclass(frozen=True)
class Invocation:
    """What the command line asks for: a config plus the mode flags."""

    config: TrainConfig
    plan: bool = False
    free_memory: str = ""
    print_config: bool = False


def parse_args(argv: Sequence[str] | None = None) -> Invocation:
    """Defaults, then --config FILE, then flags; raises ConfigError naming the file, line or flag."""
    kind = config_kind(argv)
    if kind != "scratch":
        raise ConfigError(f"this config has {KIND_KEY} = {kind!r}: read it with trainer.config.parse_any_args")
    return parse_config_args(argv, TrainConfig, validate)


def parse_config_args(argv: Sequence[str] | None, config_class: type, check: Callable[[Any], Any],
                      parser: argparse.ArgumentParser | None = None) -> Invocation:
    """parse_args for any config dataclass: its defaults, then --config FILE, then flags, then ``check``."""
    namespace = vars((parser or build_parser(config_class)).parse_args(argv))
    values: dict[str, Any] = {}
    if namespace.get("config"):
        values.update(read_config_file(Path(namespace["config"]), config_class))
    values.update({name: namespace[name] for name in _fields_of(config_class) if name in namespace})
    config = check(replace(config_class(), **values))
    return Invocation(config, bool(namespace["plan"]), namespace["free_memory"], bool(namespace["print_config"]))


def config_kind(argv: Sequence[str] | None = None) -> str:
    """The trainer the command line asks for: ``--kind``, else the config file's ``kind`` line, else "scratch"."""
    found = peek_setting(argv, KIND_KEY)
    return _check_kind(*found) if found else "scratch"


def peek_setting(argv: Sequence[str] | None, name: str) -> tuple[Any, str] | None:
    """``name``'s value and where it was set (flag, else config file line), before the full parse; None if unset.

    For the few settings needed before the trainer is chosen or MLX is imported (``kind``, ``blas``).
    """
    peek = _Parser(add_help=False)
    peek.add_argument("--config")
    peek.add_argument(f"--{name}", dest="value")
    known, _ = peek.parse_known_args(argv)
    if known.value is not None:
        return known.value, "command line"
    if not known.config:
        return None
    path = Path(known.config)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    # The first line that sets it: read_config_file refuses a file that sets a key twice.
    for number, raw in enumerate(lines, start=1):
        key, sep, rest = raw.strip().partition("=")
        if sep and key.strip() == name:
            where = f"{path}:{number}"
            try:
                return _parse_value(rest.strip()), where
            except ValueError as exc:
                raise ConfigError(f"{where}: {name}: {exc}") from None
    return None


def parse_any_args(argv: Sequence[str] | None = None) -> Invocation:
    """parse_args for whichever trainer ``kind`` names: ``.config`` is a TrainConfig or a trainer.lora LoraConfig."""
    if config_kind(argv) == "lora":
        from trainer.lora.config import parse_lora_args

        return parse_lora_args(argv)
    return parse_args(argv)


def config_dict(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)}

