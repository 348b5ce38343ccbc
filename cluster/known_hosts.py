"""The host keys corral has accepted, one OpenSSH known_hosts file in corral's home."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from cluster.atomic import write_atomic
from cluster.errors import ConfigError
from cluster.inventory import Node

HEADER = "# Host keys accepted by corral (OpenSSH known_hosts format).\n"


def fingerprint(key: asyncssh.SSHKey) -> str:
    """``SHA256:…`` exactly as ``ssh-keygen -lf`` prints it."""
    return key.get_fingerprint("sha256")


def key_line(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA…``: the public key as OpenSSH writes it, without a comment."""
    return f"{key.get_algorithm()} {key.export_public_key('openssh').split()[1].decode()}"


class KnownHosts:
    """Accepted host keys, read once; every change rewrites the file atomically (mode 600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._text = path.read_text() if path.exists() else ""
            self._parsed = asyncssh.import_known_hosts(self._text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigError(
                path,
                [f"cannot be used as a known_hosts file ({exc}); fix that line or move the file aside, "
                 "then run `corral keys NODE --accept-new` to accept the nodes' host keys again"],
            ) from exc

    def for_asyncssh(self) -> asyncssh.SSHKnownHosts:
        return self._parsed

    def keys_for(self, node: Node) -> list[asyncssh.SSHKey]:
        host_keys = asyncssh.match_known_hosts(self._parsed, node.address, node.address, node.port)[0]
        return list(host_keys)

    def add(self, node: Node, key: asyncssh.SSHKey) -> None:
        """Trust ``key`` for the node's address and port (no-op if already trusted)."""
        if any(key_line(known) == key_line(key) for known in self.keys_for(node)):
            return
        text = self._text or HEADER
        if not text.endswith("\n"):
            text += "\n"
        self._replace(text + f"{node.known_hosts_pattern} {key_line(key)}\n")

    def forget(self, node: Node) -> int:
        """Drop every key accepted for the node's address and port; the number of lines removed."""
        kept, removed = [], 0
        for line in self._text.splitlines(keepends=True):
            fields = line.split()
            if fields and not line.startswith("#") and node.known_hosts_pattern in fields[0].split(","):
                removed += 1
            else:
                kept.append(line)
        if removed:
            self._replace("".join(kept))
        return removed

    def _replace(self, text: str) -> None:
        write_atomic(self.path, text, mode=0o600)
        self._text = text
        self._parsed = asyncssh.import_known_hosts(text)
