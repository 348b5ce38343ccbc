"""Nodes from the user's own OpenSSH config: the machines they already reach with ``ssh NAME``.

paramiko does this job: it lists a config's Host aliases and resolves each alias's HostName, User
and Port with OpenSSH's matching rules (first value wins, wildcards, ``Host *`` defaults). asyncssh
reads configs too, but only to connect, with no way to list what a config defines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from cluster.errors import ConfigError
from cluster.inventory import DEFAULT_SSH_PORT, Node, local_user

_HOST_LINE = re.compile(r"^\s*Host\s+\S", re.IGNORECASE | re.MULTILINE)


def looks_like_ssh_config(text: str) -> bool:
    return bool(_HOST_LINE.search(text))


def ssh_config_aliases(text: str) -> list[str]:
    """The concrete Host aliases (no wildcard or negated patterns), sorted."""
    import paramiko

    config = paramiko.SSHConfig.from_text(text)
    return sorted(name for name in config.get_hostnames() if not any(ch in name for ch in "*?!"))


def nodes_from_ssh_config(text: str, source: Path | str, wanted: Sequence[str], taken_names: Iterable[str] = ()) -> list[Node]:
    """The named aliases as nodes; naming none (or an unknown one) is an error that lists the choices."""
    import paramiko

    aliases = ssh_config_aliases(text)
    listing = ", ".join(aliases) if aliases else "none"
    if not wanted:
        raise ConfigError(
            source,
            [f"is an ssh config with {len(aliases)} host(s) ({listing}); name the ones to import, e.g. "
             f"`corral node import {source} {' '.join(aliases[:2]) or 'HOST'}`"],
        )
    unknown = [name for name in wanted if name not in aliases]
    if unknown:
        raise ConfigError(source, [f"has no Host {name!r}; its hosts are: {listing}" for name in unknown])
    config = paramiko.SSHConfig.from_text(text)
    taken = {name.lower() for name in taken_names}
    nodes = []
    for alias in dict.fromkeys(wanted):
        resolved = config.lookup(alias)
        try:
            port = int(resolved.get("port", DEFAULT_SSH_PORT))
        except ValueError:
            raise ConfigError(source, [f"Host {alias}: Port {resolved['port']!r} is not a number"]) from None
        if alias.lower() in taken:
            raise ConfigError(source, [f"Host {alias}: the cluster already has a node named {alias!r}"])
        nodes.append(Node(name=alias, address=resolved.get("hostname", alias), port=port,
                          user=resolved.get("user", local_user())))
    return nodes
