"""The LoRA data directory: train.jsonl and valid.jsonl read line by line, then handed to mlx-lm's dataset classes.

mlx-lm reads a JSONL file with one ``json.loads`` per line and fails on the first bad line without saying
which; here each line is parsed with its number so a bad line is reported as ``file:line``, and every line is
checked for the fields the first line chose (mlx-lm only looks at the first and fails mid-training on a later
one). The records then go to mlx-lm's own ``create_dataset``, which picks the format and tokenizes.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

TRAIN_FILE = "train.jsonl"
VALID_FILE = "valid.jsonl"

# mlx-lm's formats, in the order its create_dataset tries them, with the fields each needs.
FORMATS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prompt/completion", ("prompt", "completion")),
    ("messages", ("messages",)),
    ("text", ("text",)),
)


class DataError(ValueError):
    """A data file is missing, malformed or too small; the message names the file (and line) and the fix."""


def data_format(record: dict[str, Any]) -> tuple[str, tuple[str, ...]] | None:
    """The (name, fields) of the first format whose fields the record has, as mlx-lm would choose."""
    for name, needed in FORMATS:
        if all(key in record for key in needed):
            return name, needed
    return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (blank lines skipped); a DataError names the file and line of any bad one."""
    records: list[dict[str, Any]] = []
    chosen: tuple[str, tuple[str, ...]] | None = None
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line.rstrip("\r\n"))  # a column past the newline would point nowhere
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); every line must be one JSON object "
                    'such as {"text": "..."}'
                ) from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            if chosen is None:
                chosen = data_format(record)
                if chosen is None:
                    raise DataError(
                        f'{where}: no "text", "prompt" + "completion" or "messages" field, so mlx-lm cannot tell the '
                        "format; see docs/lora.md"
                    )
            missing = [key for key in chosen[1] if key not in record]
            if missing:
                raise DataError(
                    f"{where}: no {' or '.join(repr(key) for key in missing)} field, but the first line is "
                    f"{chosen[0]} data; use one format per file"
                )
            records.append(record)
    return records


def _dataset(path: Path, tokenizer: Any, mask_prompt: bool) -> Any:
    from mlx_lm.tuner.datasets import create_dataset

    records = read_jsonl(path)
    if not records:
        raise DataError(f"{path} has no examples")
    name = data_format(records[0])[0]  # type: ignore[index]  # read_jsonl checked it
    if name != "text" and not getattr(tokenizer, "has_chat_template", False):
        raise DataError(
            f"{path} has {name} data, which mlx-lm formats with the tokenizer's chat template, but this model's "
            'tokenizer has none; use {"text": ...} lines or a model with a chat template'
        )
    try:
        return create_dataset(records, tokenizer, types.SimpleNamespace(mask_prompt=mask_prompt))
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def load_datasets(data_dir: Path, tokenizer: Any, mask_prompt: bool, batch_size: int,
                  need_valid: bool) -> tuple[Any, Any | None]:
    """mlx-lm datasets for train.jsonl and valid.jsonl (None when absent); each must hold at least one batch."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist; it must hold {TRAIN_FILE} and {VALID_FILE}")
    train_path, valid_path = data_dir / TRAIN_FILE, data_dir / VALID_FILE
    if not train_path.is_file():
        raise DataError(f"{train_path} does not exist; the data directory must hold {TRAIN_FILE} and {VALID_FILE}")
    train = _dataset(train_path, tokenizer, mask_prompt)
    valid = _dataset(valid_path, tokenizer, mask_prompt) if need_valid and valid_path.is_file() else None
    # mlx-lm's batch iterator needs one whole batch (over all ranks) and says so without naming the file.
    for path, dataset in ((train_path, train), (valid_path, valid)):
        if dataset is not None and len(dataset) < batch_size:
            raise DataError(
                f"{path} has {len(dataset)} examples but batch_size is {batch_size}; add examples or lower batch_size"
            )
    return train, valid
