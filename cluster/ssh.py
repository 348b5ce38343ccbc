"""NodeSession over asyncssh: connect to a node by key or password, run argv, and map every error to ours.

This is the only module that catches asyncssh and socket errors; each becomes a ``ClusterError`` whose
message names the node and says what to do next.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import functools
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from cluster.errors import (
    AuthFailed,
    ClusterError,
    HostKeyChanged,
    HostKeyUnknown,
    NodeUnreachable,
    RemoteCommandFailed,
)
from cluster.inventory import Node
from cluster.known_hosts import KnownHosts, fingerprint, key_line

DEFAULT_CONNECT_TIMEOUT_S = 5.0
# A silent link is noticed within keepalive interval × count, like ServerAliveInterval in OpenSSH.
KEEPALIVE_INTERVAL_S = 5.0
KEEPALIVE_COUNT_MAX = 2

OnLine = Callable[[str, str], None]  # (stream name "stdout"/"stderr", line without newline)


@dataclass(frozen=True)
class Credentials:
    """How to log in: corral's private key, or a password for the first contact only."""

    private_key_path: Path | None = None
    password: str | None = None

    def __repr__(self) -> str:
        # Never let a password reach a log line or a traceback through repr().
        shown = "***" if self.password is not None else None
        return f"Credentials(private_key_path={self.private_key_path!r}, password={shown})"


@dataclass(frozen=True)
class CommandResult:
    """What a command did on one node: like ``subprocess.CompletedProcess``, plus the node."""

    node: str
    argv: tuple[str, ...]
    exit_status: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def quote_argument(argument: str) -> str:
    """One argument in single quotes, for sh, bash and zsh alike.

    Always quoted: ``shlex.quote`` leaves words like ``=ls`` bare, and zsh (the macOS login shell)
    expands a leading ``=`` into a command's path.
    """
    return "'" + argument.replace("'", "'\"'\"'") + "'"


def remote_command(argv: Sequence[str]) -> str:
    """The command line for the node's login shell: every argument quoted, so none is run as shell."""
    if not argv:
        raise ValueError("an empty command cannot be run")
    return " ".join(quote_argument(argument) for argument in argv)


class NodeSession:
    """One open SSH connection to a node; many commands can run over it at once."""

    def __init__(self, node: Node, connection: asyncssh.SSHClientConnection) -> None:
        self.node = node
        self._connection = connection

    async def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | None = None,
        timeout_s: float | None = None,
        on_line: OnLine | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the node and wait for it; ``on_line`` sees each output line as it arrives.

        With ``on_line`` the result's stdout and stderr are the last megabyte or so of each (STREAMED_TAIL_CHARS).
        On a timeout or cancellation the remote command is sent SIGTERM, so nothing is left running.
        """
        try:
            process = await self._connection.create_process(remote_command(argv))
        except (asyncssh.Error, OSError) as exc:
            raise map_connection_error(self.node, exc, using_password=False) from exc
        try:
            stdout, stderr = await asyncio.wait_for(self._communicate(process, input, on_line), timeout_s)
        except asyncio.TimeoutError as exc:
            _terminate(process)
            raise NodeUnreachable(
                self.node.name,
                f"{self.node.name}: `{argv[0]}` did not finish within {timeout_s:g} s and was stopped; "
                "check the node's load, or run it again with a longer timeout.",
            ) from exc
        except asyncio.CancelledError:
            _terminate(process)
            raise
        except (asyncssh.Error, OSError) as exc:
            raise map_connection_error(self.node, exc, using_password=False) from exc
        finally:
            process.close()
        result = CommandResult(self.node.name, tuple(argv), process.exit_status, stdout, stderr)
        if check and not result.ok:
            raise RemoteCommandFailed(self.node.name, argv, result.exit_status, stderr)
        return result

    @staticmethod
    async def _communicate(
        process: asyncssh.SSHClientProcess[str], input: str | None, on_line: OnLine | None
    ) -> tuple[str, str]:
        if input is not None:
            process.stdin.write(input)
        process.stdin.write_eof()
        stdout, stderr = await asyncio.gather(
            _collect(process.stdout, "stdout", on_line), _collect(process.stderr, "stderr", on_line)
        )
        await process.wait_closed()
        return stdout, stderr

    @property
    def is_open(self) -> bool:
        return not self._connection.is_closed()

    async def close(self) -> None:
        self._connection.close()
        await self._connection.wait_closed()


def _terminate(process: asyncssh.SSHClientProcess[str]) -> None:
    # OpenSSH's sshd delivers the signal to the command; an old server may not, then close() still hangs up.
    try:
        process.send_signal("TERM")
    except (asyncssh.Error, OSError):
        pass


# A streamed command's result keeps only the end of its output: the lines went to on_line as they came, and
# a follow of a days-long run would otherwise hold every line the run ever printed. Enough for the error
# messages (they quote the last lines) and for the small outputs parsed whole (the doctor's probes).
STREAMED_TAIL_CHARS = 1 << 20


async def _collect(reader: asyncssh.SSHReader[str], stream_name: str, on_line: OnLine | None) -> str:
    if on_line is None:
        return await reader.read()
    return await _pump_lines(reader, stream_name, on_line)


async def _pump_lines(reader: asyncssh.SSHReader, stream_name: str, on_line: OnLine,
                      keep_chars: int = STREAMED_TAIL_CHARS) -> str:
    """Each line to ``on_line``; returns the stream's last ``keep_chars`` characters or so (whole lines)."""
    tail: collections.deque[str] = collections.deque()
    kept = 0
    async for line in reader:
        if not line:  # the reader ends with an empty read at EOF; a real empty line is "\n"
            continue
        tail.append(line)
        kept += len(line)
        while kept > keep_chars and len(tail) > 1:
            kept -= len(tail.popleft())
        on_line(stream_name, line.rstrip("\r\n"))
    return "".join(tail)


def load_client_key(path: Path) -> asyncssh.SSHKey:
    """corral's private key, read once per change of the file; a missing or broken key says what to do."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ClusterError(
            f"corral has no SSH key yet ({path}); run `corral keys` to make it and install it on the nodes."
        ) from None
    return _read_key(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_key(path: str, mtime_ns: int, size: int) -> asyncssh.SSHKey:
    try:
        return asyncssh.read_private_key(path)
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ClusterError(
            f"{path} is not a usable private key ({exc}); move it aside and run `corral keys` to make a new one "
            "and install it on the nodes."
        ) from exc


async def open_session(
    node: Node,
    credentials: Credentials,
    known_hosts: KnownHosts,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> NodeSession:
    """Log in to ``node``; the host key must match the accepted one, whatever the credentials."""
    using_password = credentials.password is not None
    options = dict(
        username=node.user,
        known_hosts=known_hosts.for_asyncssh(),
        # Only what corral chose: not the user's ~/.ssh/config, agent or default keys, so what works
        # here works identically in the GUI, the CLI and the exported files.
        config=[],
        agent_path=None,
        client_keys=[load_client_key(credentials.private_key_path)] if credentials.private_key_path else None,
        password=credentials.password,
        preferred_auth="password,keyboard-interactive" if using_password else "publickey",
        connect_timeout=connect_timeout_s,
        login_timeout=connect_timeout_s * 3,
        keepalive_interval=KEEPALIVE_INTERVAL_S,
        keepalive_count_max=KEEPALIVE_COUNT_MAX,
    )
    try:
        connection = await asyncssh.connect(node.address, node.port, **options)  # type: ignore[arg-type]  # options typed per keyword upstream
    except asyncssh.HostKeyNotVerifiable as exc:
        raise await diagnose_host_key(node, known_hosts, connect_timeout_s) from exc
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        raise map_connection_error(node, exc, using_password=using_password) from exc
    return NodeSession(node, connection)


async def fetch_host_key(node: Node, *, algorithms: Sequence[str] = (), timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> asyncssh.SSHKey:
    """The host key the node presents now, before any trust decision (for a fingerprint to confirm)."""
    try:
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(
                node.address, node.port, config=[], server_host_key_algs=list(algorithms) or ()
            ),
            timeout_s,
        )
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        raise map_connection_error(node, exc, using_password=False) from exc
    if key is None:
        raise ClusterError(f"{node.describe()} did not present a host key, so it cannot be verified.")
    return key


async def presented_host_key(
    node: Node, known_hosts: KnownHosts, timeout_s: float
) -> tuple[list[asyncssh.SSHKey], asyncssh.SSHKey]:
    """The keys accepted for the node, and the key it presents now (of the same type, if any is accepted)."""
    accepted = known_hosts.keys_for(node)
    algorithms = sorted({key.get_algorithm() for key in accepted})
    return accepted, await fetch_host_key(node, algorithms=algorithms, timeout_s=timeout_s)


async def diagnose_host_key(node: Node, known_hosts: KnownHosts, timeout_s: float) -> ClusterError:
    """Explain a host key that failed verification: never seen before, or changed since accepted."""
    accepted, presented = await presented_host_key(node, known_hosts, timeout_s)
    if not accepted:
        return host_key_unknown_error(node, presented)
    return host_key_changed_error(node, accepted[0], presented)


def host_key_unknown_error(node: Node, presented: asyncssh.SSHKey) -> HostKeyUnknown:
    shown = fingerprint(presented)
    return HostKeyUnknown(
        node.name,
        f"{node.describe()} presented host key {shown}, which corral has not accepted yet. "
        f"Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_{_key_kind(presented)}_key.pub` on the node, "
        f"then run `corral keys {node.name} --accept-new` to trust it.",
        fingerprint=shown,
        key_line=key_line(presented),
    )


def host_key_changed_error(node: Node, accepted: asyncssh.SSHKey, presented: asyncssh.SSHKey) -> HostKeyChanged:
    known_fp, presented_fp = fingerprint(accepted), fingerprint(presented)
    return HostKeyChanged(
        node.name,
        f"{node.describe()} presented host key {presented_fp}, but corral accepted {known_fp} for it: "
        "the node was reinstalled, or someone is impersonating it. Nothing was changed. If you reinstalled "
        f"it, run `corral node forget-host-key {node.name}` and then `corral keys {node.name} --accept-new`.",
        known_fingerprint=known_fp,
        presented_fingerprint=presented_fp,
    )


def _key_kind(key: asyncssh.SSHKey) -> str:
    algorithm = key.get_algorithm()
    return {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(algorithm, "ecdsa" if "ecdsa" in algorithm else "*")


def map_connection_error(node: Node, exc: BaseException, *, using_password: bool) -> ClusterError:
    """Turn a socket or asyncssh error into a sentence naming the node and the next step."""
    where = node.describe()
    if isinstance(exc, asyncssh.PermissionDenied):
        if using_password:
            return AuthFailed(
                node.name,
                f"{where} rejected the password for {node.user!r}; check the user name and password "
                "(and that the node allows password login), then try again.",
            )
        return AuthFailed(
            node.name,
            f"{where} did not accept corral's key; run `corral keys {node.name}` to install it "
            "(you will be asked for the password once).",
        )
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return NodeUnreachable(
            node.name,
            f"{where} did not answer within the time limit; check it is powered on, awake and on this "
            "network, and that the address is right (`corral node list`).",
        )
    if isinstance(exc, socket.gaierror):
        return NodeUnreachable(
            node.name, f"{where}: the name {node.address!r} could not be resolved; use its IP address instead."
        )
    if isinstance(exc, ConnectionRefusedError):
        return NodeUnreachable(
            node.name,
            f"{where} refused the connection on port {node.port}: sshd is not running there or listens on "
            "another port. On a Mac, turn on System Settings › General › Sharing › Remote Login; on Linux, "
            "start sshd (`sudo systemctl start ssh`).",
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        # asyncio puts "Connect call failed (...)" in strerror; the errno's own text reads better.
        return NodeUnreachable(
            node.name,
            f"{where} is unreachable ({os.strerror(exc.errno).lower()}): check the node is powered on and on "
            "the same network as this computer.",
        )
    if isinstance(exc, (asyncssh.ConnectionLost, asyncssh.DisconnectError)):
        reason = getattr(exc, "reason", "") or str(exc) or "connection lost"
        return NodeUnreachable(
            node.name, f"{where} closed the connection ({reason}); check the node, then try again."
        )
    if isinstance(exc, OSError):
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return NodeUnreachable(node.name, f"{where} could not be reached ({reason}); check the node and try again.")
    return ClusterError(f"{where}: SSH failed: {exc}")


class SessionPool:
    """Open connections by node name, reused across commands (as the app keeps them) and closed together."""

    def __init__(
        self, credentials: Credentials, known_hosts: KnownHosts, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ) -> None:
        self._credentials = credentials
        self._known_hosts = known_hosts
        self._connect_timeout_s = connect_timeout_s
        self._sessions: dict[str, NodeSession] = {}
        self._opening: dict[str, asyncio.Task[NodeSession]] = {}
        self._closed = False

    async def session(self, node: Node) -> NodeSession:
        """The open session to ``node``, connecting on first use; concurrent callers share one connect."""
        if self._closed:
            raise ClusterError("corral's connections were already closed; start the command again.")
        existing = self._sessions.get(node.name)
        if existing is not None and existing.node == node and existing.is_open:
            return existing
        opening = self._opening.get(node.name)
        if opening is None:
            opening = self._opening[node.name] = asyncio.create_task(self._open(node))
            # If every caller was cancelled, nobody awaits a failure: retrieve it so none goes unreported.
            opening.add_done_callback(lambda task: task.cancelled() or task.exception())
        # A cancelled caller must not cancel the connect others wait on; the task owns the bookkeeping.
        return await asyncio.shield(opening)

    async def _open(self, node: Node) -> NodeSession:
        try:
            session = await open_session(
                node, self._credentials, self._known_hosts, connect_timeout_s=self._connect_timeout_s
            )
        finally:
            self._opening.pop(node.name, None)
        if self._closed:
            await session.close()
            raise ClusterError("corral's connections were closed while connecting; start the command again.")
        replaced = self._sessions.pop(node.name, None)
        if replaced is not None:  # the node's address or user changed, or the connection dropped
            await replaced.close()
        self._sessions[node.name] = session
        return session

    async def close(self) -> None:
        self._closed = True
        opening = list(self._opening.values())
        for task in opening:
            task.cancel()
        # Gathering also retrieves their exceptions, so none is reported as "never retrieved".
        await asyncio.gather(*opening, return_exceptions=True)
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)

    async def __aenter__(self) -> SessionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@asynccontextmanager
async def connect(node: Node, credentials: Credentials, known_hosts: KnownHosts, **kwargs: float) -> AsyncIterator[NodeSession]:
    """``async with connect(node, ...) as session``: one session, closed on exit."""
    session = await open_session(node, credentials, known_hosts, **kwargs)
    try:
        yield session
    finally:
        await session.close()
