"""Run records: one ``run.json`` per training run in corral's home, and finding a run by id prefix."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from cluster.atomic import write_atomic
from cluster.errors import ClusterError
from cluster.home import CorralHome

RECORD_FILE = "run.json"
MIRROR_FILE = "output.log"  # this computer's copy of the head node's output.log, byte for byte
LOCAL_NODE = "local"  # the one node of the embedded cluster: this computer


@dataclass(frozen=True)
class RunRecord:
    """What corral knows about a run: how it was launched and the last state it saw."""

    id: str
    created: float
    nodes: tuple[str, ...]  # node names in rank order (each node's slots in a row), head first
    head: str
    world_size: int
    backend: str  # "mpi" or "ring"
    program: tuple[str, ...]  # what each rank runs after the venv's python, e.g. ("-m", "trainer", …)
    remote_run_dir: str  # relative to the head node user's home (local mode: to the local base dir)
    supervisor: tuple[str, ...] = ()  # python and supervise.py on the head, as the head's commands name them
    rank_nodes: tuple[str, ...] = ()  # node name of each rank
    project: str | None = None
    slug: str | None = None
    config_text: str | None = None  # the trainer config the ranks read, verbatim
    local: bool = False  # the embedded cluster: this computer, no SSH
    resumed_from: str | None = None
    state: str = "starting"  # RunState value last seen by corral
    failure: str | None = None
    unreachable: tuple[str, ...] = ()  # nodes that could not be swept yet: retried by the next command
    stop_requested: bool = False
    ended: float | None = None
    step: int | None = None
    total_steps: int | None = None
    batch_size: int | None = None  # the trainer's resolved settings, for a resume on fewer ranks
    grad_accum_steps: int | None = None
    kind: str | None = None  # the trainer config's kind: "lora" for mlx-lm LoRA runs (None: the scratch trainer)
    adapter_dir: str | None = None  # LoRA: where rank 0 writes adapters, relative to the run's directory on the head
    adapters_path: str | None = None  # LoRA: the adapters copied back to this computer, once the run ended

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for name in ("nodes", "program", "rank_nodes", "unreachable", "supervisor"):
            if name in values and values[name] is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def state_is_over(self) -> bool:
        return self.state in ("finished", "failed", "stopped")

    def updated(self, **changes: Any) -> RunRecord:
        return replace(self, **changes)


def new_run_id(now: float | None = None) -> str:
    """``20261121-120512-ab12``: sorts by time, readable, and unique enough for one user's runs."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


def runs_root(home: CorralHome) -> Path:
    return home.root / "runs"


def run_dir(home: CorralHome, run_id: str) -> Path:
    return runs_root(home) / run_id


def mirror_path(home: CorralHome, run_id: str) -> Path:
    return run_dir(home, run_id) / MIRROR_FILE


def save_record(home: CorralHome, record: RunRecord) -> None:
    write_atomic(run_dir(home, record.id) / RECORD_FILE, json.dumps(record.to_json(), indent=1) + "\n")


def load_record(home: CorralHome, run_id: str) -> RunRecord:
    path = run_dir(home, run_id) / RECORD_FILE
    try:
        return RunRecord.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ClusterError(f"There is no run {run_id!r} in {runs_root(home)}; `corral runs` lists them.") from None
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"{path} is not a readable run record ({exc}); move it aside.") from exc


def update_record(home: CorralHome, run_id: str, **changes: Any) -> RunRecord:
    """Re-read, change and write the record (another corral process may have written it meanwhile)."""
    record = load_record(home, run_id).updated(**changes)
    save_record(home, record)
    return record


def list_runs(home: CorralHome) -> list[RunRecord]:
    """Every run with a readable record, newest first."""
    root = runs_root(home)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    records = []
    for name in sorted(names, reverse=True):
        try:
            records.append(load_record(home, name))
        except ClusterError:
            continue
    return sorted(records, key=lambda r: (r.created, r.id), reverse=True)


def resolve_run(home: CorralHome, text: str | None) -> RunRecord:
    """The run named by a unique id prefix, ``latest``, or (None) the newest run."""
    runs = list_runs(home)
    if not runs:
        raise ClusterError("There are no runs yet; start one with `corral train` (or `corral demo`).")
    if not text or text == "latest":
        return runs[0]
    exact = [r for r in runs if r.id == text]
    matches = exact or [r for r in runs if r.id.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ClusterError(f"No run id starts with {text!r}; `corral runs` lists them (newest: {runs[0].id}).")
    shown = ", ".join(r.id for r in matches[:4])
    raise ClusterError(f"{text!r} matches {len(matches)} runs ({shown}…); give more of the id.")


__all__ = [
    "LOCAL_NODE",
    "RunRecord",
    "list_runs",
    "load_record",
    "mirror_path",
    "new_run_id",
    "resolve_run",
    "run_dir",
    "save_record",
    "update_record",
]
