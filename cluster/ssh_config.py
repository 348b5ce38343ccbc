"""The OpenSSH client config for the cluster, and the one ``Include`` line that hooks it into ~/.ssh/config."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cluster.atomic import write_atomic
from cluster.home import CorralHome
from cluster.inventory import Node

INCLUDE_MARKER = "# Added by corral; `corral ssh-config --uninstall` removes these two lines."


def _quote(path: Path) -> str:
    # ssh_config accepts double-quoted arguments, so a home with spaces still works.
    return f'"{path}"'


def ssh_host_block(node: Node, identity_file: str, known_hosts_file: str) -> str:
    """One node's Host block: by name or address, its user, the key and known hosts, strict and non-interactive."""
    return "\n".join(
        [
            f"Host {node.name} {node.address}",
            f"    HostName {node.address}",
            f"    Port {node.port}",
            f"    User {node.user}",
            f"    IdentityFile {identity_file}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {known_hosts_file}",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "    ConnectTimeout 5",
            "    ServerAliveInterval 5",
            "    ServerAliveCountMax 2",
        ]
    )


def client_ssh_config(nodes: Sequence[Node], home: CorralHome) -> str:
    """The cluster's nodes as this computer reaches them with corral's key and known hosts."""
    header = (
        "# Written by corral from the cluster inventory; it is rewritten when the inventory changes.\n"
        "# Use it with `ssh -F THIS_FILE NODE`, or `corral ssh-config --install` so plain `ssh NODE` works."
    )
    identity, known = _quote(home.private_key_path), _quote(home.known_hosts_path)
    return "\n\n".join([header, *(ssh_host_block(node, identity, known) for node in nodes)]) + "\n"


def write_client_ssh_config(nodes: Sequence[Node], home: CorralHome, path: Path | None = None) -> Path:
    target = path or home.ssh_config_path
    write_atomic(target, client_ssh_config(nodes, home), mode=0o600)
    return target


def user_ssh_config_path() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "config"


def include_line(home: CorralHome) -> str:
    return f"Include {_quote(home.ssh_config_path)}"


def _through_symlink(path: Path) -> Path:
    # Dotfile managers symlink ~/.ssh/config; edit the file it points to instead of replacing the link.
    return path.resolve() if path.is_symlink() else path


def install_include(home: CorralHome, user_config: Path | None = None) -> bool:
    """Put the Include first in the user's ssh config (ssh keeps the first value it reads); False if there."""
    target = _through_symlink(user_config or user_ssh_config_path())
    existing = target.read_text() if target.exists() else ""
    if include_line(home) in existing.splitlines():
        return False
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o600
    write_atomic(target, f"{INCLUDE_MARKER}\n{include_line(home)}\n\n{existing}", mode=mode)
    return True


def uninstall_include(home: CorralHome, user_config: Path | None = None) -> bool:
    """Remove the Include (and its marker and the blank line after it); False if it was not there."""
    target = _through_symlink(user_config or user_ssh_config_path())
    if not target.exists():
        return False
    lines = target.read_text().splitlines(keepends=True)
    wanted = include_line(home)
    kept: list[str] = []
    removed = False
    index = 0
    while index < len(lines):
        line = lines[index].rstrip("\n")
        if line == wanted:
            removed = True
            if kept and kept[-1].rstrip("\n") == INCLUDE_MARKER:
                kept.pop()
            if index + 1 < len(lines) and not lines[index + 1].strip():
                index += 1
        else:
            kept.append(lines[index])
        index += 1
    if removed:
        write_atomic(target, "".join(kept), mode=target.stat().st_mode & 0o777)
    return removed
