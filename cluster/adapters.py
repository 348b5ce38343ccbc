"""A LoRA run's adapters: copied from the head node (rank 0 writes them there) to this computer when the run ends.

The copy lands in ``<corral home>/runs/<id>/adapters`` atomically: rsync fills a temporary folder beside it,
which then replaces the old copy in one rename, so a reader sees the previous copy or the new one, never half.
``mlx_lm.load(model, adapter_path=...)`` takes the folder as it is (adapters.safetensors, adapter_config.json).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from pathlib import Path

from cluster.errors import ClusterError
from cluster.home import CorralHome
from cluster.runs import RunRecord, load_record, run_dir, update_record

ADAPTERS_DIR = "adapters"  # under the run's record folder in corral's home
COPY_TIMEOUT_S = 600
log = logging.getLogger(__name__)


def local_adapters_dir(home: CorralHome, run_id: str) -> Path:
    return run_dir(home, run_id) / ADAPTERS_DIR


def remote_adapters_dir(record: RunRecord) -> str:
    """Where rank 0 wrote the adapters, relative to the head's home (or the local base dir)."""
    adapter_dir = record.adapter_dir or ADAPTERS_DIR
    return adapter_dir if adapter_dir.startswith("/") else f"{record.remote_run_dir}/{adapter_dir}"


async def fetch_adapters(home: CorralHome, run_id: str) -> Path:
    """Copy the run's adapters folder from its head node here (replacing an earlier copy); returns the local path."""
    record = load_record(home, run_id)
    if record.kind != "lora":
        raise ClusterError(f"Run {record.id} is not a LoRA run (kind = \"lora\"); it has no adapters.")
    target = local_adapters_dir(home, record.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".adapters-", dir=target.parent))
    try:
        if record.local:
            await asyncio.to_thread(_copy_local, home, record, partial)
        else:
            await _copy_remote(home, record, partial)
        if not (partial / "adapters.safetensors").is_file():
            raise ClusterError(f"Run {record.id} has no adapters.safetensors in {remote_adapters_dir(record)} on "
                               f"{record.head} yet (rank 0 writes it every save_every steps and at the end).")
        _replace_dir(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    update_record(home, record.id, adapters_path=str(target))
    return target


def _copy_local(home: CorralHome, record: RunRecord, dest: Path) -> None:
    from cluster.local_host import local_base_dir

    source = local_base_dir(home) / remote_adapters_dir(record)
    if not source.is_dir():
        raise ClusterError(f"Run {record.id} has no adapters folder ({source}) yet.")
    shutil.copytree(source, dest, dirs_exist_ok=True)


async def _copy_remote(home: CorralHome, record: RunRecord, dest: Path) -> None:
    from cluster.sync import remote_shell
    from cluster.wheels import run_local

    remote = remote_adapters_dir(record)
    argv = ["rsync", "--recursive", "--times", "--perms", "-e", remote_shell(home.ssh_config_path),
            f"{record.head}:{remote}/", f"{dest}/"]
    status, _, stderr = await run_local(argv, timeout_s=COPY_TIMEOUT_S)
    if status != 0:
        tail = " / ".join(stderr.strip().splitlines()[-2:]) or f"rsync exit status {status}"
        if "No such file or directory" in stderr:
            raise ClusterError(f"Run {record.id} has no adapters folder ~/{remote} on {record.head} yet ({tail}).")
        raise ClusterError(f"Could not copy run {record.id}'s adapters from {record.head} ({tail}); check the node, "
                           f"then `corral adapters {record.id}` copies them.")


def _replace_dir(new: Path, target: Path) -> None:
    """``new`` becomes ``target``; an existing ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


async def fetch_adapters_when_over(home: CorralHome, run_id: str, over: bool) -> Path | None:
    """After a follow or status: copy a finished LoRA run's adapters once; a failure is logged, not raised."""
    try:
        record = load_record(home, run_id)
    except ClusterError:
        return None
    if record.kind != "lora" or not over:
        return None
    if record.adapters_path and Path(record.adapters_path).is_dir():
        return Path(record.adapters_path)
    try:
        return await fetch_adapters(home, run_id)
    except ClusterError as exc:
        log.warning("run %s: adapters not copied: %s", run_id, exc)
        return None


__all__ = ["ADAPTERS_DIR", "fetch_adapters", "fetch_adapters_when_over", "local_adapters_dir", "remote_adapters_dir"]
