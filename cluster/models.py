"""Bring a LoRA run's base model to every node: copy a local model folder once per content, or fetch a hub id.

A local folder goes to ``~/corral/models/<name>-<fingerprint>`` on each node (rsync, like ``corral sync``),
skipped when a completed copy with the same fingerprint is there: the fingerprint covers the files' names,
sizes and modification times (hashing gigabytes of weights before every launch would cost seconds), so a
changed file gives a new copy. The trainer is given the path relative to the run's directory
(``../../models/<key>``), valid on every node whatever its home. A hub id (``org/name``) is fetched by each
node with huggingface_hub from its own venv; a node that cannot reach the hub gets a copy downloaded here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import ClusterError, LaunchFailed, NodeError
from cluster.inventory import Node
from cluster.layout import REMOTE_ROOT

MODELS_DIR = f"{REMOTE_ROOT}/models"
# From a run's directory (corral/runs/<id>) to the models (corral/models).
MODELS_FROM_RUN_DIR = "../../models"
HUB_FETCH_TIMEOUT_S = 1800
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# $1 the model dir (relative to the home): a completed copy has its marker beside it.
COPY_DONE_SCRIPT = r"""
cd || exit 97
[ -f "$1.complete" ] && [ -d "$1" ] && echo CORRAL-MODEL-PRESENT
exit 0
"""
MARK_DONE_SCRIPT = r"""
cd || exit 97
: > "$1.complete"
"""
# Each node fetches a hub model itself: $1 repo id, $2 target dir (relative to the home). Prints where it is.
HUB_FETCH_CODE = r"""
import os, sys
from huggingface_hub import snapshot_download
os.chdir(os.path.expanduser("~"))
path = snapshot_download(repo_id=sys.argv[1], local_dir=sys.argv[2],
                         allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"])
print("CORRAL-HUB-OK", path)
"""


@dataclass(frozen=True)
class ModelSource:
    """What the config's ``model`` names: a local folder (``local``) or a hub id (``hub_id``)."""

    text: str
    local: Path | None = None
    hub_id: str | None = None

    @property
    def key(self) -> str:
        """The node-side folder name: readable name plus a content fingerprint (or the hub id, made safe)."""
        if self.local is not None:
            readable = re.sub(r"[^A-Za-z0-9._-]+", "-", self.local.name).strip("-.") or "model"
            return f"{readable[:40]}-{fingerprint(self.local)}"
        assert self.hub_id is not None
        return "hub-" + self.hub_id.replace("/", "--")

    @property
    def remote_dir(self) -> str:
        return f"{MODELS_DIR}/{self.key}"

    @property
    def path_from_run_dir(self) -> str:
        return f"{MODELS_FROM_RUN_DIR}/{self.key}"


def resolve_model(text: str, config_dir: Path | None) -> ModelSource:
    """The config's ``model`` as a local folder (relative to the config file, then the current directory) or a hub id."""
    if not text:
        raise LaunchFailed("The LoRA config has no model; set model = \"path/to/model\" (a local folder) or a hub "
                           "id such as \"mlx-community/Llama-3.2-1B-Instruct-4bit\".")
    path = Path(text).expanduser()
    candidates = [path] if path.is_absolute() else [*([config_dir / path] if config_dir else []), Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_dir():
            if not (candidate / "config.json").is_file():
                raise LaunchFailed(f"The model folder {candidate.resolve()} has no config.json; give the folder of a "
                                   "model mlx-lm can load (config.json, *.safetensors, tokenizer files).")
            return ModelSource(text, local=candidate.resolve())
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return ModelSource(text, hub_id=text)
    where = " or ".join(str(c.absolute()) for c in candidates)
    raise LaunchFailed(f"The model path {text} does not exist on this computer (looked for {where}); fix model in "
                       "the config (a local model folder, or a hub id like org/name).")


def fingerprint(folder: Path) -> str:
    """12 hex digits over every file's relative name, size and modification time."""
    entries = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            info = path.stat()
            entries.append([path.relative_to(folder).as_posix(), info.st_size, info.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ModelProgress:
    """One node's model transfer: ``checking``, ``copying`` (with percent when known), ``present``, ``fetching``,
    ``copied``, ``fetched``."""

    node: str
    phase: str
    percent: int | None = None


OnModelProgress = Callable[[ModelProgress], None]


async def place_model(node: Node, source: ModelSource, *, host, python: str, sync_plan_for,  # noqa: ANN001
                      on_progress: OnModelProgress,
                      download_here: Callable[[], Awaitable[Path]] | None = None) -> str:
    """Make ``source`` present on ``node``; returns the path the trainer gets (relative to the run's directory).

    ``host`` runs commands on the node (a NodeSession); ``python`` is the node venv's (for huggingface_hub);
    ``sync_plan_for(folder, remote_dir)`` gives the rsync plan; ``download_here`` downloads a hub model to this
    computer once (shared by the nodes that need it).
    """
    from cluster.sync import SyncPhase, sync_node

    remote = source.remote_dir
    on_progress(ModelProgress(node.name, "checking"))
    present = await host.run(["sh", "-c", COPY_DONE_SCRIPT, "corral-model", remote], check=False, timeout_s=30)
    if "CORRAL-MODEL-PRESENT" in present.stdout:
        on_progress(ModelProgress(node.name, "present"))
        return source.path_from_run_dir

    folder = source.local
    if folder is None:
        on_progress(ModelProgress(node.name, "fetching"))
        fetched = await host.run([python, "-c", HUB_FETCH_CODE, source.hub_id, remote], check=False,
                                 timeout_s=HUB_FETCH_TIMEOUT_S)
        if fetched.ok and "CORRAL-HUB-OK" in fetched.stdout:
            await host.run(["sh", "-c", MARK_DONE_SCRIPT, "corral-model", remote], timeout_s=30)
            on_progress(ModelProgress(node.name, "fetched"))
            return source.path_from_run_dir
        if download_here is None:
            raise NodeError(node.name, f"{node.name} could not download {source.hub_id} from the hub "
                                       f"({_tail(fetched.stderr)}); check the id and the node's network.")
        folder = await download_here()  # the node is offline: copy what this computer downloaded

    last = [-10]

    def copied(progress) -> None:  # noqa: ANN001 - a SyncProgress
        if progress.phase is SyncPhase.TRANSFERRING and progress.percent is not None and progress.percent >= last[0] + 10:
            last[0] = progress.percent
            on_progress(ModelProgress(node.name, "copying", progress.percent))

    on_progress(ModelProgress(node.name, "copying", 0))
    await sync_node(sync_plan_for(folder, remote), node, on_progress=copied,
                    retry="corral train")  # the next launch finishes the copy (rsync sends only what is missing)
    await host.run(["sh", "-c", MARK_DONE_SCRIPT, "corral-model", remote], timeout_s=30)
    on_progress(ModelProgress(node.name, "copied", 100))
    return source.path_from_run_dir


def _tail(text: str) -> str:
    return " / ".join(text.strip().splitlines()[-2:]) or "no output"


async def download_hub_model(hub_id: str, dest_root: Path) -> Path:
    """Download a hub model to this computer (for nodes without internet); needs huggingface_hub here."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ClusterError(f"The nodes cannot download {hub_id} themselves, and this computer has no huggingface_hub "
                           "to download it for them; `pip install mlx-lm` here, or give a local model folder.") from None
    target = dest_root / ("hub-" + hub_id.replace("/", "--"))
    try:
        path = await asyncio.to_thread(snapshot_download, repo_id=hub_id, local_dir=str(target))
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many kinds; all mean "not downloaded"
        raise ClusterError(f"Could not download {hub_id} on this computer ({exc}); check the id and the network, "
                           "or give a local model folder.") from exc
    return Path(path)


__all__ = ["MODELS_DIR", "ModelProgress", "ModelSource", "fingerprint", "place_model", "resolve_model"]
