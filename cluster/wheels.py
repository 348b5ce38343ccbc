"""The wheelhouse on this computer: wheels for each node group's Python and platform, downloaded once, pushed by rsync."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.env_recipe import Requirements
from cluster.errors import ClusterError, NodeError, NodeUnreachable
from cluster.home import CorralHome

log = logging.getLogger(__name__)

WHEELHOUSE_ENV = "CORRAL_WHEELHOUSE"  # another cache directory, e.g. one shared by test runs
DOWNLOAD_TIMEOUT_S = 900.0
PUSH_TIMEOUT_S = 900.0
META_DIR = ".meta"  # lock and completion markers: never pushed


def wheelhouse_root(home: CorralHome) -> Path:
    configured = os.environ.get(WHEELHOUSE_ENV)
    return Path(configured).expanduser().absolute() if configured else home.root / "wheelhouse"


@dataclass(frozen=True)
class WheelGroup:
    """Nodes that take the same wheels: same Python minor version, ABI and accepted platform tags."""

    python_minor: str
    abi: str
    platform_tags: tuple[str, ...]

    @property
    def key(self) -> str:
        """A directory name: readable (``cp311-manylinux_2_36_x86_64``) plus a hash of the full tag list."""
        digest = hashlib.sha256(json.dumps([self.abi, *self.platform_tags]).encode()).hexdigest()[:8]
        return f"{self.abi}-{self.platform_tags[0] if self.platform_tags else 'any'}-{digest}"

    @property
    def label(self) -> str:
        return f"Python {self.python_minor} on {self.platform_tags[0] if self.platform_tags else 'any platform'}"


@dataclass(frozen=True)
class PreparedWheels:
    """A group's wheelhouse, ready to push: ``wheels/`` and, when available, ``bin/uv``."""

    group: WheelGroup
    directory: Path
    uv_included: bool
    downloaded: bool  # False when a completed download for the same packages was reused


class WheelDownloadFailed(ClusterError):
    """pip could not download the wheels for one group; the message names the package when pip did."""


def pip_download_argv(group: WheelGroup, dest: Path, packages: Sequence[str], requirements_file: Path | None,
                      *, python: str = sys.executable) -> list[str]:
    """``pip download`` of binary wheels for another machine's Python and platform."""
    argv = [python, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--only-binary=:all:",
            "--dest", str(dest), "--python-version", group.python_minor, "--implementation", "cp",
            "--abi", group.abi]
    for tag in group.platform_tags:
        argv += ["--platform", tag]
    argv += list(packages)
    if requirements_file is not None:
        argv += ["--requirement", str(requirements_file)]
    return argv


def download_error(stderr: str, group: WheelGroup, requirements: Requirements) -> WheelDownloadFailed:
    """pip's failure as a sentence: the missing package, or the network, and what to do next."""
    missing = re.search(r"No matching distribution found for (\S+)", stderr)
    source = f" in {requirements.source}" if requirements.source else ""
    if missing:
        return WheelDownloadFailed(
            f"the package index has no wheel of {missing.group(1)!r} for {group.label}: check its name and "
            f"version{source}, and that it publishes wheels for this platform (corral installs wheels only, since "
            "nodes may have no compiler or network)."
        )
    if re.search(r"Failed to establish a new connection|Could not fetch URL|Temporary failure in name resolution"
                 r"|Network is unreachable|ConnectTimeout|ReadTimeout", stderr):
        return WheelDownloadFailed(
            f"this computer could not reach the package index to download wheels for {group.label}; check its "
            "internet connection (or pip's index settings), then run `corral env --wheels push` again."
        )
    tail = " / ".join(stderr.strip().splitlines()[-3:]) or "no output"
    return WheelDownloadFailed(f"pip download failed for {group.label}: {tail}")


class LocalWheelhouse:
    """Downloads each group's wheels once per set of packages (shared by concurrent callers) and reuses them."""

    def __init__(self, root: Path, *, python: str = sys.executable) -> None:
        self.root = root
        self._python = python
        self._pending: dict[tuple[str, str], asyncio.Future[PreparedWheels]] = {}

    def group_dir(self, group: WheelGroup) -> Path:
        return self.root / group.key

    async def prepare(self, group: WheelGroup, packages: Sequence[str], requirements: Requirements) -> PreparedWheels:
        """The group's wheelhouse with every wheel the packages need; one download however many nodes ask."""
        wanted = _packages_key(packages, requirements)
        key = (group.key, wanted)
        future = self._pending.get(key)
        if future is None:
            future = asyncio.ensure_future(self._prepare(group, packages, requirements, wanted))
            self._pending[key] = future
        return await asyncio.shield(future)

    async def _prepare(self, group: WheelGroup, packages: Sequence[str], requirements: Requirements,
                       wanted: str) -> PreparedWheels:
        directory = self.group_dir(group)
        meta = directory / META_DIR
        meta.mkdir(parents=True, exist_ok=True)
        lock = await asyncio.to_thread(_lock, meta / "lock")  # another corral process may fill the same cache
        try:
            marker = meta / f"complete-{wanted}"
            uv_binary = directory / "bin" / "uv"
            if marker.exists():
                return PreparedWheels(group, directory, uv_binary.exists(), downloaded=False)
            requirements_file = None
            if requirements.text:
                requirements_file = meta / f"requirements-{wanted}.txt"
                requirements_file.write_text(requirements.text)
            wheels = self._download(group, directory / "wheels", packages, requirements_file, requirements)
            uv = self._download_uv(group, directory) if not uv_binary.exists() else _done()
            await asyncio.gather(wheels, uv)
            marker.write_text(json.dumps({"packages": list(packages), "requirements": requirements.text}))
            return PreparedWheels(group, directory, uv_binary.exists(), downloaded=True)
        finally:
            lock.close()

    async def _download(self, group: WheelGroup, dest: Path, packages: Sequence[str], requirements_file: Path | None,
                        requirements: Requirements) -> None:
        argv = pip_download_argv(group, dest, packages, requirements_file, python=self._python)
        status, _, stderr = await run_local(argv, timeout_s=DOWNLOAD_TIMEOUT_S)
        if status != 0:
            log.warning("pip download failed (%s): %s", status, stderr[-2000:])
            raise download_error(stderr, group, requirements)

    async def _download_uv(self, group: WheelGroup, directory: Path) -> None:
        """The uv binary for the group's platform, from uv's wheel on PyPI; without it nodes use pip."""
        tools = directory / "tools"
        argv = pip_download_argv(group, tools, ["uv"], None, python=self._python)
        status, _, stderr = await run_local(argv, timeout_s=DOWNLOAD_TIMEOUT_S)
        wheels = sorted(tools.glob("uv-*.whl")) if status == 0 else []
        if not wheels:
            log.warning("no uv wheel for %s (pip: %s); nodes of this group will use pip", group.label,
                        stderr.strip()[-500:])
            return
        await asyncio.to_thread(extract_uv, wheels[-1], directory / "bin" / "uv")


async def _done() -> None:
    return None


def _packages_key(packages: Sequence[str], requirements: Requirements) -> str:
    return hashlib.sha256(json.dumps([list(packages), requirements.text]).encode()).hexdigest()[:16]


def _lock(path: Path):  # type: ignore[no-untyped-def]  # returns the open file that holds the lock
    handle = open(path, "a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def extract_uv(wheel: Path, target: Path) -> None:
    """Copy the ``uv`` executable out of its wheel (``uv-X.data/scripts/uv``), atomically."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.data/scripts/uv(\.exe)?", n)]
        if not names:
            raise ClusterError(f"{wheel}: no uv executable inside; delete the file and run `corral env` again.")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with archive.open(names[0]) as source, open(partial, "wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
    partial.chmod(0o755)
    os.replace(partial, target)


def rsync_push_argv(ssh_config: Path, node_name: str, source: Path, remote_dir: str) -> list[str]:
    """rsync a group's wheelhouse to the node (relative to its home), mirroring it; metadata stays here."""
    # --rsync-path creates the target first: rsync < 3.2.3 (macOS ships 2.6.9) has no --mkpath.
    return ["rsync", "-a", "--delete", f"--exclude=/{META_DIR}/", "--exclude=/tools/",
            "-e", shlex.join(["ssh", "-F", str(ssh_config)]),
            f"--rsync-path={shlex.join(['mkdir', '-p', remote_dir])} && rsync",
            f"{source}/", f"{node_name}:{remote_dir}/"]


async def push_wheels(ssh_config: Path, node_name: str, prepared: PreparedWheels, remote_dir: str) -> None:
    """Copy the wheelhouse to one node; a failure names the node and what to check."""
    argv = rsync_push_argv(ssh_config, node_name, prepared.directory, remote_dir)
    status, _, stderr = await run_local(argv, timeout_s=PUSH_TIMEOUT_S)
    if status == 0:
        return
    tail = " / ".join(stderr.strip().splitlines()[-2:]) or f"exit status {status}"
    if status == 255 or "ssh:" in stderr:
        raise NodeUnreachable(node_name, f"{node_name}: copying the wheels failed because ssh could not connect "
                                         f"({tail}); check the node is up and sshd runs, then retry with "
                                         f"`corral env --to {node_name}`.")
    if "command not found" in stderr or status == 127:
        raise NodeError(node_name, f"{node_name}: rsync is not installed there ({tail}); install it (Debian/Ubuntu: "
                                   "`sudo apt install rsync`; macOS has it), then run `corral env` again.")
    raise NodeError(node_name, f"{node_name}: copying the wheels with rsync failed ({tail}).")


async def run_local(argv: Sequence[str], *, timeout_s: float) -> tuple[int, str, str]:
    """Run a program on this computer without a shell; (exit status, stdout, stderr); killed on timeout."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                       stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE, env=env)
    except FileNotFoundError as exc:
        raise ClusterError(f"`{argv[0]}` is not installed on this computer; install it and try again.") from exc
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise ClusterError(f"`{Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''}` took longer than "
                           f"{timeout_s:g} s and was stopped; check this computer's network.") from None
    except asyncio.CancelledError:
        process.kill()
        raise
    status = process.returncode if process.returncode is not None else -1
    return status, stdout.decode(errors="replace"), stderr.decode(errors="replace")
