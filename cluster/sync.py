"""Copy a project folder to every node with rsync over corral's SSH setup, all nodes at once.

Each node gets the project in ``~/corral/projects/<slug>`` (``RemoteLayout.code_dir``, relative to
that node user's home, so no absolute path is assumed). rsync runs on this computer with
``-e "ssh -F <corral's ssh config>"``: the same user, key, known hosts and strict host-key policy as
every other corral command, so an unknown or changed host key fails the node instead of being
accepted.

What is copied: everything under the folder except what ``.gitignore`` files (in every directory,
via rsync's dir-merge filter) exclude, ``DEFAULT_EXCLUDES`` and the user's ``--exclude`` patterns.
``--delete`` removes files on the node that are gone here, but only inside the project's directory
(rsync scopes it to the destination) and never excluded files: outputs a run wrote into an ignored
directory on the node (checkpoints, logs) survive a sync. Differences from git's reading of
``.gitignore``: negations (``!keep.log``) are not honoured (the file stays excluded), a pattern with
a slash in the middle also matches deeper down, and ``.git/info/exclude`` and the global excludes
file are not read.

rsync versions: corral needs rsync 2.6.9 or newer on this computer (macOS's old /usr/bin/rsync is
2.6.9; live byte progress needs 3.1, before that only per-file lines). openrsync (``rsync`` on macOS
15.4 and later) is a different implementation whose support for filter merge files and
``--out-format`` corral does not rely on: it is refused with the fix (``brew install rsync``). On the
node, corral asks for nothing newer than 2.6.9 (not tested here: this machine has 3.x only): no
``--mkpath`` (3.2.3+; the node makes the parent itself through ``--rsync-path``) and no
``--secluded-args`` (needs 3.0 on the node). The latter is not needed: the only remote path corral
sends is the slug path, made of safe characters no remote shell can misread; the local paths (with
spaces, quotes, ``$(...)``) never pass through a shell.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from cluster.errors import AuthFailed, ClusterError, HostKeyChanged, HostKeyUnknown, NodeError, NodeUnreachable
from cluster.fleet import NodeOutcome, for_each_node
from cluster.home import CorralHome
from cluster.inventory import Inventory, Node
from cluster.layout import RemoteLayout
from cluster.rsync_output import OUT_FORMAT, ItemLine, ProgressLine, RsyncOutputParser, SyncStats

# Never worth copying to a node: git's own database, local virtualenvs (built per platform; corral
# makes one per node with `corral env`), bytecode caches and Finder litter.
DEFAULT_EXCLUDES = (".git/", ".venv/", "__pycache__/", ".DS_Store")
# rsync's own I/O timeout: a node that stops answering mid-transfer fails after this long (ssh's
# keepalive in the generated config usually notices a dead link sooner, after ~10 s).
IO_TIMEOUT_S = 60
MINIMUM_RSYNC = (2, 6, 9)
PROGRESS2_RSYNC = (3, 1, 0)
_SAFE_REMOTE_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_SAFE_HOST_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STDERR_KEEP_CHARS = 16_000
# How long ssh keeps a node's connection open after a sync, for the next one (edit, sync, run, edit…).
CONTROL_PERSIST_S = 300
_MAX_SOCKET_PATH = 108 if sys.platform.startswith("linux") else 104  # sun_path: Linux 108, macOS/BSD 104


# --- the local rsync ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RsyncVersion:
    """Which rsync this computer has, from the first line of ``rsync --version``."""

    version: tuple[int, int, int]
    openrsync: bool = False

    @property
    def text(self) -> str:
        return ("openrsync " if self.openrsync else "rsync ") + ".".join(map(str, self.version))

    @property
    def has_progress2(self) -> bool:
        return not self.openrsync and self.version >= PROGRESS2_RSYNC


def parse_rsync_version(output: str) -> RsyncVersion:
    """``rsync  version 3.2.7  protocol version 31`` → (3, 2, 7); openrsync is recognised by name."""
    openrsync = "openrsync" in output.lower()
    match = re.search(r"version\s+v?(\d+)\.(\d+)(?:\.(\d+))?", output)
    if not match:
        raise ClusterError(
            f"Could not read the rsync version from `rsync --version` ({output.strip()[:80]!r}); "
            "install rsync 3.x (Debian/Ubuntu: `apt install rsync`, macOS: `brew install rsync`)."
        )
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return RsyncVersion((major, minor, patch), openrsync=openrsync)


def check_rsync_version(version: RsyncVersion) -> None:
    """Refuse an rsync that lacks what corral sync uses, saying how to get one that has it."""
    if version.openrsync:
        raise ClusterError(
            f"This computer's rsync is {version.text}, which corral sync does not support (it relies on "
            "rsync's .gitignore filters and per-file output); install rsync with `brew install rsync`."
        )
    if version.version < MINIMUM_RSYNC:
        raise ClusterError(
            f"This computer's rsync is {version.text}; corral sync needs 2.6.9 or newer "
            "(3.1+ for live progress): install rsync 3.x (`apt install rsync`, `brew install rsync`)."
        )


@functools.lru_cache(maxsize=4)
def local_rsync_version(executable: str = "rsync") -> RsyncVersion:
    path = shutil.which(executable)
    if path is None:
        raise ClusterError(
            "rsync is not installed on this computer; install it (Debian/Ubuntu: `apt install rsync`, "
            "macOS: `brew install rsync`) and run corral sync again."
        )
    result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    version = parse_rsync_version(result.stdout + result.stderr)
    check_rsync_version(version)
    return version


# --- argv ----------------------------------------------------------------------------------------


def quote_rsync_shell_word(word: str) -> str:
    """Quote one word of rsync's ``-e`` command: rsync splits it itself, honouring '…' and "…".

    Inside single quotes rsync reads a doubled quote as one literal quote, and nothing else is
    special (no backslashes, no ``$``), so this survives spaces, quotes and ``$(...)`` in the path.
    """
    return "'" + word.replace("'", "''") + "'"


def remote_shell(ssh_config: Path, control_path: Path | None = None) -> str:
    """The ``-e`` value: OpenSSH with corral's generated config (user, key, known hosts, BatchMode).

    With ``control_path``, ssh keeps one master connection per node open for ``CONTROL_PERSIST_S``
    after the sync (OpenSSH's ControlMaster): a re-sync then skips the key exchange and login, which
    cost more than comparing an unchanged tree of thousands of files.
    """
    words = ["ssh", "-F", quote_rsync_shell_word(str(ssh_config))]
    if control_path is not None:
        # ssh_config syntax inside -o: double quotes keep spaces; '%' would start an ssh token.
        value = str(control_path).replace("%", "%%")
        words += ["-o", "ControlMaster=auto",
                  "-o", quote_rsync_shell_word(f'ControlPath="{value}"'),
                  "-o", f"ControlPersist={CONTROL_PERSIST_S}"]
    return " ".join(words)


def control_path_for(control_dir: Path, node: Node, ssh_config: Path) -> Path:
    """A short socket name per node, login and corral home.

    A changed address or user gets a fresh master, and two corral homes sharing the fallback
    directory never ride on each other's connections (each has its own key and accepted host keys).
    """
    identity = f"{node.user}@{node.address}:{node.port} {ssh_config}"
    return control_dir / f"{node.name[:16]}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def usable_control_dir(candidates: Sequence[Path]) -> Path | None:
    """The first directory short enough for ssh's sockets, created private; None: connect without reuse.

    Unix socket paths are limited (104 bytes on macOS, 108 on Linux) and ssh first binds a name 17
    characters longer than the final one; a control path with a double quote cannot be written in
    ssh_config syntax at all.
    """
    for directory in candidates:
        longest = len(os.fsencode(directory)) + 1 + 16 + 1 + 10 + 17
        if longest >= _MAX_SOCKET_PATH or '"' in str(directory):
            continue
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.lstat()
        except OSError:
            continue
        # Whoever can write here could hijack the connections: only a private directory of ours will do.
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
            return directory
    return None


def control_dir_candidates(home: CorralHome) -> list[Path]:
    """corral's home first; the per-user temp dir when the home's path is too long for a socket."""
    return [home.root / "ssh-mux", Path(tempfile.gettempdir()) / f"corral-mux-{os.getuid()}"]


@dataclass(frozen=True)
class SyncPlan:
    """Everything one rsync run needs except the node: what to send, where, and how to connect."""

    project: Path  # absolute local folder
    code_dir: str  # destination relative to the node user's home
    ssh_config: Path
    excludes: tuple[str, ...] = ()
    progress2: bool = True
    control_dir: Path | None = None  # where ssh's shared connections live; None: a new login per sync


def rsync_argv(plan: SyncPlan, node: Node, *, rsync: str = "rsync") -> list[str]:
    """The rsync command that makes ``node``'s copy of the project match this computer's."""
    if not _SAFE_REMOTE_PATH.match(plan.code_dir):
        # The remote path passes through the node's login shell; corral only ever sends slugs.
        raise ValueError(f"unsafe remote path {plan.code_dir!r}")
    if not _SAFE_HOST_ALIAS.match(node.name):
        raise ClusterError(
            f"The node name {node.name!r} cannot be used as an ssh host alias; rename it "
            "(letters, digits, '.', '_', '-')."
        )
    parent = plan.code_dir.rpartition("/")[0]
    argv = [
        rsync,
        # -a without -o/-g/-D: owners and groups of this computer mean nothing on the node.
        "--recursive", "--links", "--perms", "--times",
        "--delete",
        f"--timeout={IO_TIMEOUT_S}",
        "-e", remote_shell(plan.ssh_config,
                           control_path_for(plan.control_dir, node, plan.ssh_config) if plan.control_dir else None),
        # The node makes the parent itself: --mkpath needs rsync 3.2.3 on both ends.
        f"--rsync-path=mkdir -p {parent} && rsync",
        f"--out-format={OUT_FORMAT}",
        "--stats",
    ]
    if plan.progress2:
        argv.append("--info=progress2")
    # First match wins; all rules are excludes, so the order only matters for reading.
    argv += [f"--exclude={pattern}" for pattern in (*plan.excludes, *DEFAULT_EXCLUDES)]
    argv.append("--filter=:- .gitignore")
    # Trailing slashes: copy the folder's contents into code_dir, not a folder inside it.
    argv += [f"{plan.project}/", f"{node.name}:{plan.code_dir}/"]
    return argv


# --- the project folder -------------------------------------------------------------------------


def check_project_folder(path: Path | str, *, user_home: Path | None = None) -> Path:
    """The absolute project folder; refuses a missing path, a file, ``/`` and the home folder itself."""
    folder = Path(path).expanduser().absolute()
    if not folder.exists():
        raise ClusterError(f"{folder} does not exist; give the project folder to sync, e.g. `corral sync ~/code/train`.")
    if not folder.is_dir():
        raise ClusterError(f"{folder} is a file; give the folder that holds it, e.g. `corral sync {folder.parent}`.")
    resolved = folder.resolve()
    home = (user_home or Path.home()).resolve()
    if resolved == Path(resolved.anchor) or resolved == home:
        raise ClusterError(
            f"Refusing to sync {folder}: that is your {'home folder' if resolved == home else 'whole disk'}, "
            "not a project; give the project's own folder, e.g. `corral sync ~/code/train`."
        )
    return folder


# --- progress and results ------------------------------------------------------------------------


class SyncPhase(Enum):
    STARTING = "starting"  # rsync started: connecting and comparing file lists
    TRANSFERRING = "transferring"  # numbers are moving
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class SyncProgress:
    """Where one node's sync is; ``files_total``/``bytes_total`` are None until rsync knows them."""

    node: str
    phase: SyncPhase
    files_sent: int = 0  # files whose content went to the node so far
    files_done: int = 0  # files and directories compared so far
    files_total: int | None = None
    bytes_done: int = 0
    bytes_total: int | None = None
    percent: int | None = None
    message: str = ""  # the failure sentence, for FAILED


OnProgress = Callable[[SyncProgress], None]


@dataclass(frozen=True)
class SyncResult:
    """What one node's sync did."""

    node: str
    code_dir: str
    stats: SyncStats
    sent_paths: tuple[str, ...] = ()  # files whose content was sent, relative to the project
    deleted_paths: tuple[str, ...] = ()


class SyncFailed(NodeError):
    """rsync to a node failed for a reason other than SSH (which raises NodeUnreachable & co.)."""

    def __init__(self, node: str, message: str, *, exit_status: int | None, stderr: str) -> None:
        self.exit_status = exit_status
        self.stderr = stderr
        super().__init__(node, message)


# --- errors --------------------------------------------------------------------------------------


def _tail(stderr: str, lines: int = 2) -> str:
    kept = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return " / ".join(kept[-lines:])


def _rsync_lines(stderr: str) -> str:
    """rsync's own complaints (``rsync: …``), the part of stderr that names files."""
    lines = [line.strip() for line in stderr.splitlines() if line.startswith("rsync:") and "error" not in line[:12]]
    return " / ".join(lines[:3]) or _tail(stderr)


def _presented_fingerprint(stderr: str) -> str:
    match = re.search(r"(SHA256:[A-Za-z0-9+/=]+)", stderr)
    return match.group(1) if match else ""


def _explain_ssh_failure(node: Node, stderr: str, retry: str) -> NodeError:
    who = node.describe()
    lowered = stderr.lower()
    if "remote host identification has changed" in lowered or "has changed and you have requested" in lowered:
        return HostKeyChanged(
            node.name,
            f"{who}: its SSH host key changed since corral accepted it, so nothing was copied; if the "
            f"machine was reinstalled, run `corral node forget-host-key {node.name}` and `corral keys "
            f"{node.name}`, then `{retry}`.",
            known_fingerprint="",
            presented_fingerprint=_presented_fingerprint(stderr),
        )
    if "host key is known" in lowered or "host key verification failed" in lowered:
        return HostKeyUnknown(
            node.name,
            f"{who}: corral has not accepted this node's SSH host key, so nothing was copied; run "
            f"`corral keys {node.name}` to check and accept it, then `{retry}`.",
            fingerprint="",
            key_line="",
        )
    if "permission denied" in lowered:
        return AuthFailed(node.name, f"{who} refused corral's SSH key; run `corral keys {node.name}` to install it, "
                                     f"then `{retry}`.")
    if "connection refused" in lowered:
        reason = "refused the SSH connection (is the machine up, and sshd / Remote Login on?), so nothing was copied"
    elif "could not resolve" in lowered or "name or service not known" in lowered:
        reason = "has a host name this computer cannot resolve (check it with `corral node list`), so nothing was copied"
    elif "timed out" in lowered or "no route to host" in lowered or "network is unreachable" in lowered:
        reason = "did not answer on the network (is it on, and on this computer's network?), so nothing was copied"
    else:
        reason = f"dropped the SSH connection ({_tail(stderr)}), so the copy is incomplete"
    return NodeUnreachable(node.name, f"{who} {reason}; retry it with `{retry}`.")


def explain_failure(node: Node, exit_status: int | None, stderr: str, *, retry: str) -> NodeError:
    """One sentence per failure, naming the node and the next step; ``retry`` is the command to rerun."""
    who = node.describe()
    lowered = stderr.lower()
    # The login worked but the node's shell found no rsync (rsync then only says "connection closed").
    if "command not found" in lowered or "rsync: not found" in lowered or exit_status == 127:
        message = f"{who}: rsync is not installed on the node; install it there (`sudo apt install rsync`), then `{retry}`."
        return SyncFailed(node.name, message, exit_status=exit_status, stderr=stderr)
    if "mkdir:" in lowered:  # the node could not make ~/corral/projects (a file in the way, permissions)
        complaint = next(line.strip() for line in stderr.splitlines() if "mkdir:" in line.lower())
        message = f"{who}: could not create the project's folder on the node ({complaint}); fix that, then `{retry}`."
        return SyncFailed(node.name, message, exit_status=exit_status, stderr=stderr)
    # ssh exits 255; rsync reports that as 255, or as 12 when the connection closed before any data.
    if exit_status == 255 or "connection unexpectedly closed (0 bytes received" in lowered:
        return _explain_ssh_failure(node, stderr, retry)
    if "no space left on device" in lowered or "disk quota exceeded" in lowered:
        message = f"{who}: the node's disk is full, so the copy is incomplete; free space there, then `{retry}`."
    elif exit_status == 23:
        message = f"{who}: some files could not be copied ({_rsync_lines(stderr)}); fix them, then `{retry}`."
    elif exit_status == 24:
        message = f"{who}: files changed or vanished here while they were copied; run `{retry}` again."
    elif exit_status == 30:
        message = (f"{who} stopped answering for {IO_TIMEOUT_S} s during the copy, which is incomplete; "
                   f"check the node, then `{retry}`.")
    elif exit_status in (12, 10):
        message = f"{who}: the connection broke during the copy, which is incomplete ({_tail(stderr)}); retry with `{retry}`."
    elif exit_status == 20 or (exit_status is not None and exit_status < 0):
        message = f"{who}: the copy was interrupted and is incomplete; run `{retry}` to finish it."
    else:
        message = f"{who}: rsync exited with status {exit_status} ({_tail(stderr)}); fix that, then `{retry}`."
    return SyncFailed(node.name, message, exit_status=exit_status, stderr=stderr)


def retry_command(node_names: Sequence[str], excludes: Sequence[str] = (), *, home_arg: str | None = None) -> str:
    """``corral sync --to node2``: re-runs only the failed nodes (the project folder is remembered)."""
    parts = ["corral", *(["--home", home_arg] if home_arg else []), "sync"]
    for name in node_names:
        parts += ["--to", name]
    for pattern in excludes:
        parts += ["--exclude", pattern]
    return shlex.join(parts)


# --- running -------------------------------------------------------------------------------------


@dataclass
class _NodeTracker:
    """Turns one node's parsed rsync lines into progress events."""

    node: str
    on_progress: OnProgress | None
    sent: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    last: SyncProgress | None = None

    def emit(self, progress: SyncProgress) -> None:
        self.last = progress
        if self.on_progress is not None:
            self.on_progress(progress)

    def update(self, parsed: Sequence[ItemLine | ProgressLine]) -> None:
        current = self.last or SyncProgress(self.node, SyncPhase.STARTING)
        changed = False
        for line in parsed:
            if isinstance(line, ItemLine):
                if line.is_file_sent:
                    self.sent.append(line.path)
                    current = replace(current, files_sent=max(current.files_sent, len(self.sent)))
                    if current.percent is None:  # old rsync without progress2: item lines are all we get
                        current = replace(current, bytes_done=current.bytes_done + line.size)
                elif line.is_deletion:
                    self.deleted.append(line.path)
                changed = True
            else:
                total = line.files_total
                current = replace(
                    current,
                    files_sent=line.files_sent if line.files_sent is not None else current.files_sent,
                    files_done=(total - line.files_to_check) if total is not None and line.files_to_check is not None
                    else current.files_done,
                    files_total=total if line.total_is_final else current.files_total,
                    bytes_done=line.bytes_done,
                    percent=line.percent,
                )
                changed = True
        if changed:
            self.emit(replace(current, phase=SyncPhase.TRANSFERRING))


async def _read_stdout(stream: asyncio.StreamReader, parser: RsyncOutputParser, tracker: _NodeTracker) -> None:
    # Incremental: a file name's multi-byte character may be split between two reads.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await stream.read(65536):
        tracker.update(parser.feed(decoder.decode(chunk)))
    tracker.update(parser.feed(decoder.decode(b"", final=True)) + parser.finish())


async def _read_stderr(stream: asyncio.StreamReader) -> str:
    collected = ""
    while chunk := await stream.read(65536):
        # Keep the end: that is where ssh and rsync say what went wrong.
        collected = (collected + chunk.decode(errors="replace"))[-_STDERR_KEEP_CHARS:]
    return collected


async def sync_node(
    plan: SyncPlan,
    node: Node,
    *,
    on_progress: OnProgress | None = None,
    retry: str | None = None,
    rsync: str = "rsync",
) -> SyncResult:
    """Run rsync to one node; raises a NodeError (with the sentence to show) when it fails."""
    tracker = _NodeTracker(node.name, on_progress)
    tracker.emit(SyncProgress(node.name, SyncPhase.STARTING))
    argv = rsync_argv(plan, node, rsync=rsync)
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    parser = RsyncOutputParser()
    try:
        _, stderr = await asyncio.gather(
            _read_stdout(process.stdout, parser, tracker),  # type: ignore[arg-type]  # PIPE was asked for
            _read_stderr(process.stderr),  # type: ignore[arg-type]
        )
        status = await process.wait()
    finally:
        if process.returncode is None:  # cancelled: leave no rsync (and its ssh) behind
            process.kill()
            await process.wait()
    if status != 0:
        error = explain_failure(node, status, stderr, retry=retry or retry_command([node.name]))
        last = tracker.last or SyncProgress(node.name, SyncPhase.STARTING)
        tracker.emit(replace(last, phase=SyncPhase.FAILED, message=str(error)))
        raise error
    stats = parser.stats() or SyncStats()
    last = tracker.last or SyncProgress(node.name, SyncPhase.STARTING)
    tracker.emit(replace(
        last, phase=SyncPhase.DONE, files_sent=stats.files_transferred, files_done=stats.files_total,
        files_total=stats.files_total, bytes_done=stats.bytes_transferred, bytes_total=stats.bytes_transferred,
        percent=100,
    ))
    return SyncResult(node.name, plan.code_dir, stats, tuple(tracker.sent), tuple(tracker.deleted))


def check_ready(
    home: CorralHome, inventory: Inventory, project: Path | str, names: Sequence[str] | None = None
) -> tuple[Path, list[Node]]:
    """The project folder and the nodes to sync, or the ClusterError that stops the sync before it starts."""
    if '"' in str(home.root):
        # ssh_config quotes paths with double quotes and has no escape for one inside them.
        raise ClusterError(
            f"corral's home {home.root} contains a double quote, which OpenSSH's config cannot express; "
            "use a folder without one (--home DIR or $CORRAL_HOME)."
        )
    nodes = inventory.select(names)  # unknown names fail here, with "did you mean"
    if not nodes:
        raise ClusterError("The cluster has no nodes yet; add one with `corral node add ADDRESS`.")
    folder = check_project_folder(project)
    if not home.private_key_path.exists():
        raise ClusterError(f"corral has no SSH key yet ({home.private_key_path}); run `corral keys` first.")
    return folder, nodes


async def sync_project(
    home: CorralHome,
    inventory: Inventory,
    project: Path | str,
    *,
    names: Sequence[str] | None = None,
    excludes: Sequence[str] = (),
    on_progress: OnProgress | None = None,
    remember: bool = True,
    home_arg: str | None = None,
    reuse_connections: bool = True,
) -> list[NodeOutcome[SyncResult]]:
    """Sync ``project`` to the named nodes (all when None) at once; every node gets its own outcome.

    The ssh config is rewritten from the inventory first so it is never stale; with ``remember``
    the folder becomes the inventory's project, so later commands (and a retry) know it.
    ``home_arg`` is the ``--home`` the user gave, repeated in the retry commands the errors suggest.
    ``reuse_connections`` keeps each node's ssh connection open a while for the next sync.
    """
    from cluster.state import load_cluster, save_cluster

    folder, nodes = check_ready(home, inventory, project, names)
    version = local_rsync_version()
    refresh_ssh_config(home, inventory)
    plan = SyncPlan(
        project=folder,
        code_dir=RemoteLayout.for_project(folder).code_dir,
        ssh_config=home.ssh_config_path,
        excludes=tuple(excludes),
        progress2=version.has_progress2,
        control_dir=usable_control_dir(control_dir_candidates(home)) if reuse_connections else None,
    )

    async def one(node: Node) -> SyncResult:
        return await sync_node(plan, node, on_progress=on_progress, retry=retry_command([node.name], excludes, home_arg=home_arg))

    outcomes = await for_each_node(nodes, one)
    if remember and inventory.project != str(folder):
        # Re-read: another command may have changed the inventory while the copy ran.
        current = load_cluster(home)
        save_cluster(home, replace(current, project=str(folder)))
    return outcomes


def refresh_ssh_config(home: CorralHome, inventory: Inventory) -> None:
    """Rewrite the generated ssh config if it differs from the inventory (a no-op re-sync writes nothing)."""
    from cluster.ssh_config import client_ssh_config, write_client_ssh_config

    try:
        if home.ssh_config_path.read_text() == client_ssh_config(inventory.nodes, home):
            return
    except OSError:
        pass
    write_client_ssh_config(inventory.nodes, home)


__all__ = [
    "DEFAULT_EXCLUDES",
    "OnProgress",
    "RsyncVersion",
    "SyncFailed",
    "SyncPhase",
    "SyncPlan",
    "SyncProgress",
    "SyncResult",
    "SyncStats",
    "check_project_folder",
    "check_ready",
    "check_rsync_version",
    "explain_failure",
    "local_rsync_version",
    "parse_rsync_version",
    "quote_rsync_shell_word",
    "remote_shell",
    "retry_command",
    "rsync_argv",
    "sync_node",
    "sync_project",
]
