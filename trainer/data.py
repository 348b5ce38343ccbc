"""Training data: read text and JSONL datasets, turn them into byte tokens, and give each rank its own share.

Standard library only; the training loop turns the sample ids chosen here into MLX arrays.

Tokens are the UTF-8 bytes of the text (0-255) plus ``EOS`` (256) after every document, so nothing is
downloaded. Samples are consecutive, non-overlapping windows of ``seq_len + 1`` tokens. Each epoch the
samples are shuffled with a seed that depends only on (seed, epoch); one optimizer step consumes
``batch_size * grad_accum_steps * world_size`` of them and rank r takes the r-th contiguous slice, so
no sample is seen twice in an epoch across ranks, and one process with ``world_size`` times the batch
sees exactly the union of the ranks' batches.
"""

from __future__ import annotations

import json
import random
from array import array
from dataclasses import dataclass
from pathlib import Path

EOS = 256
VOCAB_SIZE = 257
BUNDLED_CORPUS = Path(__file__).resolve().parent.parent / "resources" / "stories.txt"
TEXT_SUFFIXES = (".txt", ".md", ".text")


class DataError(ValueError):
    """The dataset cannot be read or used; the message names the file (and line) and what to change."""


def document_from_record(record: object, where: str) -> str:
    """The text of one JSONL record in any of the usual shapes: text, prompt/completion, or chat messages."""
    if isinstance(record, dict):
        if isinstance(record.get("text"), str):
            return record["text"]
        if isinstance(record.get("prompt"), str) and isinstance(record.get("completion"), str):
            return record["prompt"] + record["completion"]
        messages = record.get("messages")
        if isinstance(messages, list) and messages:
            lines = []
            for index, message in enumerate(messages):
                if not (isinstance(message, dict) and isinstance(message.get("content"), str)):
                    raise DataError(f"{where}: messages[{index}] needs a string \"content\" (and a \"role\")")
                lines.append(f"{message.get('role', 'user')}: {message['content']}")
            return "\n".join(lines)
        keys = ", ".join(sorted(map(str, record))) or "none"
    else:
        keys = f"a JSON {type(record).__name__}, not an object"
    raise DataError(
        f'{where}: expected {{"text": ...}}, {{"prompt": ..., "completion": ...}} or {{"messages": [...]}}, got keys: {keys}'
    )


def read_documents(path: Path) -> list[str]:
    """The documents in a .jsonl file (one per line; blank lines skipped) or a text file (one document)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: no such file; set data to a .jsonl or .txt file or a directory") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); convert it or choose another file") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    if path.suffix != ".jsonl":
        return [text]
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove this line") from exc
        documents.append(document_from_record(record, where))
    return documents


def tokenize(documents: list[str]) -> array:
    """Byte tokens of the documents, each followed by EOS, as an int32 array."""
    tokens = array("i")
    for document in documents:
        tokens.extend(document.encode("utf-8"))
        tokens.append(EOS)
    return tokens


def decode(tokens: list[int]) -> str:
    """Text for byte tokens; EOS becomes a blank line."""
    return b"".join(b"\n\n" if t == EOS else bytes([t]) for t in tokens).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Splits:
    """The train and held-out token streams and where they came from."""

    train: array
    val: array
    source: str


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".jsonl", *TEXT_SUFFIXES):
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_splits(data: str, val_fraction: float) -> Splits:
    """Train and held-out tokens for the ``data`` setting (empty: the bundled corpus)."""
    path = Path(data) if data else BUNDLED_CORPUS
    if not data and not path.is_file():
        raise DataError(f"the bundled corpus {path} is missing; copy resources/ next to trainer/ or set data")
    if path.is_dir():
        train_path = _find(path, "train")
        if train_path is None:
            raise DataError(f"{path}: no train.jsonl or train.txt in this directory; add one or point data at a file")
        val_path = _find(path, "valid") or _find(path, "val")
        train = tokenize(read_documents(train_path))
        if val_path is not None:
            return Splits(train, tokenize(read_documents(val_path)), str(path))
    else:
        train = tokenize(read_documents(path))
    cut = len(train) - int(len(train) * val_fraction)
    return Splits(train[:cut], train[cut:], str(path))


@dataclass(frozen=True)
class Position:
    """Where the data stream is: the epoch (from 0) and the next optimizer step's batch within it."""

    epoch: int = 0
    batch: int = 0


class ShardedSamples:
    """Chooses the sample ids of each rank's micro batches, step after step, epoch after epoch."""

    def __init__(
        self, n_tokens: int, seq_len: int, batch_size: int, grad_accum_steps: int, rank: int, world_size: int, seed: int
    ) -> None:
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.grad_accum_steps = grad_accum_steps
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.n_samples = max(0, (n_tokens - 1) // seq_len)
        self.samples_per_step = batch_size * grad_accum_steps * world_size
        self.steps_per_epoch = self.n_samples // self.samples_per_step
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the training split has {self.n_samples} samples of {seq_len + 1} tokens, fewer than one step needs "
                f"({batch_size} × {grad_accum_steps} accumulation × {world_size} ranks); use more data or lower "
                "batch_size, grad_accum_steps or seq_len"
            )
        self._order_epoch = -1
        self._order: list[int] = []

    def order(self, epoch: int) -> list[int]:
        """Every sample id once, shuffled by (seed, epoch) alone, so every rank computes the same order."""
        if epoch != self._order_epoch:
            self._order = list(range(self.n_samples))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(self._order)
            self._order_epoch = epoch
        return self._order

    def micro_batches(self, position: Position) -> list[list[int]]:
        """This rank's ``grad_accum_steps`` micro batches of ``batch_size`` sample ids for the step at ``position``."""
        per_rank = self.batch_size * self.grad_accum_steps
        start = position.batch * self.samples_per_step + self.rank * per_rank
        ids = self.order(position.epoch)[start : start + per_rank]
        return [ids[i : i + self.batch_size] for i in range(0, per_rank, self.batch_size)]

    def advance(self, position: Position) -> Position:
        if position.batch + 1 < self.steps_per_epoch:
            return Position(position.epoch, position.batch + 1)
        return Position(position.epoch + 1, 0)

    def token_starts(self, ids: list[int]) -> list[int]:
        return [i * self.seq_len for i in ids]


def eval_micro_batches(n_tokens: int, seq_len: int, batch_size: int, n_batches: int, rank: int, world_size: int) -> list[list[int]]:
    """This rank's held-out micro batches: the first samples in order, dealt out round-robin to the ranks."""
    n_samples = max(0, (n_tokens - 1) // seq_len)
    usable = min(n_samples // (batch_size * world_size), n_batches) * batch_size * world_size
    mine = list(range(rank, usable, world_size))
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
