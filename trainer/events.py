"""The log-line protocol: one JSON object per line per rank, written by the trainer, read by the core and the GUI.

Standard library only: the GUI and the core import this module without MLX, the nodes run it with MLX and
nothing else, and users' own training scripts can copy the few lines in docs/log-protocol.md to emit the
same events. Where orjson is installed (the controller: the core and the GUI depend on it) it decodes.

Every line has ``event``, ``rank`` and ``time`` (Unix seconds). Steps count from 1 in every event.
Values are plain JSON numbers with their unit in the field name (``step_time_s``, ``rss_bytes``).
Fields are only ever added, never renamed; a reader ignores fields it does not know, and any line
that is not an event (MPI banners, tracebacks, a user's prints) parses to a ``RawLine``, never an error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TextIO, Union

try:  # orjson decodes a step line ~6× faster than json: the dashboard parses every rank's stream.
    from orjson import loads as _strict_loads
except ImportError:  # a node has the standard library only
    _strict_loads = json.loads

SCHEMA_VERSION = 1


@dataclass(slots=True)
class StartEvent:
    """The rank started: who it is and what it will train."""

    event: ClassVar[str] = "start"
    rank: int
    time: float
    world_size: int
    host: str = ""
    schema: int = SCHEMA_VERSION
    pid: int | None = None
    parameters: int | None = None  # number of model parameters
    mlx_version: str | None = None
    config: dict[str, Any] | None = None
    blas: str | None = None  # what MLX's CPU matmuls call: "bundled" or the path of the library (trainer/blas.py)


@dataclass(slots=True)
class StepEvent:
    """One optimizer step finished on this rank."""

    event: ClassVar[str] = "step"
    rank: int
    time: float
    step: int
    loss: float  # this rank's local loss on its own batch
    loss_mean: float | None = None  # mean of every rank's loss (all_sum / world size)
    learning_rate: float | None = None
    step_time_s: float | None = None
    tokens_per_s: float | None = None  # this rank's tokens per second
    tokens: int | None = None  # tokens this rank has trained on so far
    epoch: int | None = None  # counts from 0
    mlx_active_bytes: int | None = None
    mlx_peak_bytes: int | None = None
    mlx_cache_bytes: int | None = None
    rss_bytes: int | None = None  # resident memory of this process


@dataclass(slots=True)
class EvalEvent:
    """Loss on the held-out split after a step (mean over every rank's share)."""

    event: ClassVar[str] = "eval"
    rank: int
    time: float
    step: int
    val_loss: float
    eval_time_s: float | None = None


@dataclass(slots=True)
class CheckpointEvent:
    """A checkpoint was written (rank 0 writes; other ranks do not emit this)."""

    event: ClassVar[str] = "checkpoint"
    rank: int
    time: float
    step: int
    path: str
    size_bytes: int | None = None
    save_time_s: float | None = None


@dataclass(slots=True)
class NodeEvent:
    """Memory and load of the machine this rank runs on."""

    event: ClassVar[str] = "node"
    rank: int
    time: float
    host: str = ""
    ram_used_bytes: int | None = None
    ram_total_bytes: int | None = None
    load_1m: float | None = None


@dataclass(slots=True)
class DoneEvent:
    """The run finished normally."""

    event: ClassVar[str] = "done"
    rank: int
    time: float
    step: int | None = None  # the last step trained
    elapsed_s: float | None = None
    params_sha256: str | None = None  # hash of the final weights: equal on every rank of a data-parallel run


@dataclass(slots=True)
class ErrorEvent:
    """The run failed on this rank; it exits non-zero after this line."""

    event: ClassVar[str] = "error"
    rank: int
    time: float
    message: str
    traceback: str = ""


@dataclass(slots=True)
class RawLine:
    """Any line that is not an event: shown in the log pane as it is."""

    text: str


Event = Union[StartEvent, StepEvent, EvalEvent, CheckpointEvent, NodeEvent, DoneEvent, ErrorEvent]
EVENT_TYPES: dict[str, type] = {
    cls.event: cls for cls in (StartEvent, StepEvent, EvalEvent, CheckpointEvent, NodeEvent, DoneEvent, ErrorEvent)
}
_FIELD_ORDER: dict[str, tuple[str, ...]] = {name: tuple(f.name for f in fields(cls)) for name, cls in EVENT_TYPES.items()}
_FIELD_NAMES: dict[str, frozenset[str]] = {name: frozenset(order) for name, order in _FIELD_ORDER.items()}


def to_line(event: Event) -> str:
    """The JSON line (without the newline) for an event; ``event`` comes first, then the fields in order."""
    # Not dataclasses.asdict: it deep-copies every value, several times slower on the per-step path.
    data = {"event": event.event}
    for name in _FIELD_ORDER[event.event]:
        data[name] = getattr(event, name)
    return json.dumps(data, separators=(",", ":"))


def _decode(text: str) -> Any:
    try:
        return _strict_loads(text)
    except ValueError:
        # Python's json writes a diverged loss as NaN or Infinity, which strict JSON (orjson) refuses;
        # json.loads takes them, and still raises ValueError for a line that is not JSON at all.
        return json.loads(text)


def parse_line(line: str) -> Event | RawLine:
    """An event for a protocol line, a ``RawLine`` for anything else; never raises."""
    text = line.rstrip("\r\n")
    # Most non-event lines are rejected here without paying for json.loads.
    if not text.startswith('{"event"') and not text.lstrip().startswith("{"):
        return RawLine(text)
    try:
        data = _decode(text)
        cls = EVENT_TYPES[data.pop("event")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return RawLine(text)
    try:
        return cls(**data)
    except TypeError:
        pass
    # Fields from a newer writer are dropped; a line missing a required field is not an event.
    known = _FIELD_NAMES[cls.event]
    try:
        return cls(**{key: value for key, value in data.items() if key in known})
    except TypeError:
        return RawLine(text)


class EventWriter:
    """Writes this rank's events to a text stream, one flushed line each."""

    def __init__(self, rank: int, stream: TextIO | None, clock: Any = time.time) -> None:
        self.rank = rank
        self._stream = stream
        self._clock = clock

    def emit(self, cls: type, **values: Any) -> None:
        """Build an event of ``cls`` for this rank, stamped now, and write it (nothing when disabled)."""
        if self._stream is None:
            return
        self._stream.write(to_line(cls(rank=self.rank, time=self._clock(), **values)) + "\n")
        self._stream.flush()


__all__ = [
    "SCHEMA_VERSION",
    "CheckpointEvent",
    "DoneEvent",
    "ErrorEvent",
    "EvalEvent",
    "Event",
    "EventWriter",
    "NodeEvent",
    "RawLine",
    "StartEvent",
    "StepEvent",
    "parse_line",
    "to_line",
    "EVENT_TYPES",
]
