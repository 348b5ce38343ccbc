"""corral's key pair, and installing it on nodes: the one time a password is used.

The flow for ``corral keys`` (and the wizard's Keys page) per node:
1. trust: the node's host key must be accepted (unknown keys need a yes, a changed key is refused);
2. try corral's key; only if the node refuses it, ask for the password and append the public key to
   ``~/.ssh/authorized_keys`` (idempotently), then prove key login works.
Then ``mesh`` gives every node its own key and lets each reach every other by key (mpirun needs it).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncssh

from cluster.atomic import write_atomic
from cluster.errors import AuthFailed
from cluster.home import CorralHome
from cluster.inventory import Node
from cluster.known_hosts import KnownHosts, fingerprint, key_line
from cluster.ssh import (
    Credentials,
    NodeSession,
    connect,
    load_client_key,
    host_key_changed_error,
    host_key_unknown_error,
    open_session,
    presented_host_key,
)

# Asked once per node whose key is unknown; True accepts it. The CLI asks on the terminal (or
# --accept-new answers yes); the GUI shows a confirmation with the fingerprint.
ConfirmHostKey = Callable[[Node, str], Awaitable[bool]]
# Asked only for a node that refuses corral's key; None means "no password available".
AskPassword = Callable[[Node], Awaitable[str | None]]

# Appends lines to a file under ~/.ssh unless a line with the same key is already there; POSIX sh, so it
# runs unchanged on macOS and Linux. Arguments: FILE, then pairs of (match, line).
APPEND_ONCE_SCRIPT = r"""
set -e
umask 077
mkdir -p "$HOME/.ssh"
chmod 700 "$HOME/.ssh"
f="$HOME/.ssh/$1"
shift
[ -e "$f" ] || : > "$f"
chmod 600 "$f"
# A last line without its newline would get our line glued onto it.
if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then printf '\n' >> "$f"; fi
while [ "$#" -ge 2 ]; do
  grep -qF -- "$1" "$f" || printf '%s\n' "$2" >> "$f"
  shift 2
done
"""


def ensure_key_pair(home: CorralHome) -> str:
    """Make corral's ed25519 key pair once (private part 0600); returns the public key line."""
    private_path, public_path = home.private_key_path, home.public_key_path
    if private_path.exists():
        key = load_client_key(private_path)
        if private_path.stat().st_mode & 0o077:
            private_path.chmod(0o600)  # OpenSSH (used by rsync and mpirun) refuses a key others can read
    else:
        home.ensure()
        private_path.parent.mkdir(mode=0o700, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"corral@{socket.gethostname()}")
        write_atomic(private_path, key.export_private_key("openssh"), mode=0o600)
    public_line = key.export_public_key("openssh").decode().strip()
    if not public_path.exists() or public_path.read_text().strip() != public_line:
        write_atomic(public_path, public_line + "\n", mode=0o644)
    return public_line


def append_once_argv(file_name: str, lines: Sequence[str]) -> list[str]:
    """argv that appends each public key line to ``~/.ssh/FILE`` unless its key is already there."""
    argv = ["sh", "-c", APPEND_ONCE_SCRIPT, "corral-append", file_name]
    for line in lines:
        argv += [_key_body(line), line]
    return argv


def _key_body(public_line: str) -> str:
    # The base64 body identifies a key; comments and options may differ between copies.
    fields = public_line.split()
    bodies = [f for f in fields if f.startswith("AAAA")]
    return bodies[0] if bodies else public_line


@dataclass
class KeySetup:
    """Everything one ``keys`` run needs; shared by the CLI and the GUI."""

    home: CorralHome
    known_hosts: KnownHosts
    confirm_host_key: ConfirmHostKey
    ask_password: AskPassword
    connect_timeout_s: float = 5.0

    async def trust(self, node: Node) -> None:
        """Make sure the node's host key is accepted: ask for an unknown one, refuse a changed one."""
        accepted, presented = await presented_host_key(node, self.known_hosts, self.connect_timeout_s)
        if accepted:
            if not any(key_line(key) == key_line(presented) for key in accepted):
                raise host_key_changed_error(node, accepted[0], presented)
            return
        if not await self.confirm_host_key(node, fingerprint(presented)):
            raise host_key_unknown_error(node, presented)
        self.known_hosts.add(node, presented)

    async def install(self, node: Node) -> NodeSession:
        """Trust the node, make sure corral's key logs in (using the password once if needed)."""
        public_line = ensure_key_pair(self.home)
        await self.trust(node)
        key_credentials = Credentials(private_key_path=self.home.private_key_path)
        try:
            session = await self._open(node, key_credentials)
        except AuthFailed:
            password = await self.ask_password(node)
            if password is None:
                raise AuthFailed(
                    node.name,
                    f"{node.describe()} does not accept corral's key yet and no password was given; "
                    f"run `corral keys {node.name}` and type the password of {node.user!r} when asked.",
                ) from None
            password_login = connect(
                node, Credentials(password=password), self.known_hosts, connect_timeout_s=self.connect_timeout_s
            )
            async with password_login as password_session:
                await password_session.run(append_once_argv("authorized_keys", [public_line]))
            try:
                return await self._open(node, key_credentials)
            except AuthFailed:
                raise AuthFailed(
                    node.name,
                    f"{node.describe()}: corral's key is now in ~/.ssh/authorized_keys but sshd still refuses it; "
                    "check that the home directory and ~/.ssh are not writable by others (sshd's StrictModes) "
                    f"and sshd's AuthorizedKeysFile setting, then run `corral keys {node.name}` again.",
                ) from None
        try:
            # Key login already works; still make sure the line is there exactly once (idempotent).
            await session.run(append_once_argv("authorized_keys", [public_line]))
        except BaseException:
            await session.close()
            raise
        return session

    async def _open(self, node: Node, credentials: Credentials) -> NodeSession:
        return await open_session(node, credentials, self.known_hosts, connect_timeout_s=self.connect_timeout_s)

