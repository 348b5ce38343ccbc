"""Node↔node SSH: every node gets its own key and reaches every other node by key with host keys known.

mpirun on one node starts ranks on the others over ssh, non-interactively, so each node needs:
``~/.ssh/corral_ed25519`` (made on the node; the private key never leaves it), the other nodes' public
keys in ``authorized_keys``, ``~/.ssh/corral_known_hosts`` with every node's accepted host key, and
``~/.ssh/corral_config`` (users, key, strict host keys, batch mode), included from ``~/.ssh/config``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cluster.errors import ClusterError, NodeError
from cluster.fleet import NodeOutcome, for_each_node
from cluster.inventory import DEFAULT_SSH_PORT, Node
from cluster.keys import append_once_argv
from cluster.known_hosts import KnownHosts, key_line
from cluster.ssh import NodeSession
from cluster.ssh_config import ssh_host_block

NODE_KEY_FILE = "corral_ed25519"
NODE_KNOWN_HOSTS_FILE = "corral_known_hosts"
NODE_SSH_CONFIG_FILE = "corral_config"
INCLUDE_LINE = f"Include {NODE_SSH_CONFIG_FILE}"
# sshd allows 10 sessions per connection by default; stay under it when probing peers.
PEER_PROBES_PER_NODE = 8

ENSURE_NODE_KEY_SCRIPT = f"""
set -e
umask 077
mkdir -p "$HOME/.ssh"
chmod 700 "$HOME/.ssh"
k="$HOME/.ssh/{NODE_KEY_FILE}"
[ -f "$k" ] || ssh-keygen -q -t ed25519 -N '' -C "corral@$(hostname)" -f "$k"
cat "$k.pub"
"""

# Replaces ~/.ssh/FILE with stdin atomically (a temp file renamed over it), mode 600.
WRITE_SSH_FILE_SCRIPT = """
set -e
umask 077
mkdir -p "$HOME/.ssh"
chmod 700 "$HOME/.ssh"
f="$HOME/.ssh/$1"
tmp="$f.corral-tmp.$$"
cat > "$tmp"
mv -f "$tmp" "$f"
"""

# Puts the Include first in ~/.ssh/config (ssh takes the first value it reads for each option).
ENSURE_INCLUDE_SCRIPT = f"""
set -e
umask 077
f="$HOME/.ssh/config"
[ -e "$f" ] || : > "$f"
chmod 600 "$f"
if ! grep -qxF '{INCLUDE_LINE}' "$f"; then
  tmp="$f.corral-tmp.$$"
  {{ printf '%s\\n' '# Added by corral: lets mpirun reach the other nodes of the cluster.' '{INCLUDE_LINE}' ''; cat "$f"; }} > "$tmp"
  # A symlinked config (dotfile managers) is written through the link rather than replaced by a file.
  if [ -L "$f" ]; then cat "$tmp" > "$f" && rm -f "$tmp"; else mv -f "$tmp" "$f"; fi
fi
"""


@dataclass
class MeshReport:
    """Per node: which peers it reaches by key, and the failures, each a sentence."""

    reached: dict[str, list[str]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())


def node_known_hosts(nodes: Sequence[Node], known_hosts: KnownHosts) -> str:
    """known_hosts for the nodes: each node's accepted key under its name and its address."""
    lines = ["# Written by corral: host keys of the nodes of this cluster."]
    for node in nodes:
        patterns = [node.name, node.address]
        if node.port != DEFAULT_SSH_PORT:
            patterns = [f"[{p}]:{node.port}" for p in patterns]
        for key in known_hosts.keys_for(node):
            lines.append(f"{','.join(patterns)} {key_line(key)}")
    return "\n".join(lines) + "\n"


def node_ssh_config(nodes: Sequence[Node]) -> str:
    """The ssh config a node uses to reach the others, by name or by address."""
    header = "# Written by corral: how this node reaches the other nodes of the cluster."
    blocks = [ssh_host_block(node, f"~/.ssh/{NODE_KEY_FILE}", f"~/.ssh/{NODE_KNOWN_HOSTS_FILE}") for node in nodes]
    return "\n\n".join([header, *blocks]) + "\n"


def peer_probe_argv(peer: Node) -> list[str]:
    """argv run on a node to prove it reaches ``peer`` by key without any prompt."""
    return ["ssh", "-n", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", peer.address, "true"]


async def build_mesh(
    sessions: Mapping[str, NodeSession], nodes: Sequence[Node], known_hosts: KnownHosts
) -> MeshReport:
    """Give each reachable node a key, every peer's key and host key, then probe every pair."""
    reachable = [node for node in nodes if node.name in sessions]
    report = MeshReport()

    key_outcomes = await for_each_node(
        reachable, lambda node: _ensure_node_key(sessions[node.name])
    )
    public_keys = {o.node.name: str(o.value) for o in key_outcomes if o.ok}
    _note_failures(report, key_outcomes)

    known_hosts_text = node_known_hosts(nodes, known_hosts)
    config_text = node_ssh_config(nodes)
    keyed = [node for node in reachable if node.name in public_keys]
    install_outcomes = await for_each_node(
        keyed,
        lambda node: _install_peer_access(
            sessions[node.name], list(public_keys.values()), known_hosts_text, config_text
        ),
    )
    _note_failures(report, install_outcomes)

    ready = [o.node for o in install_outcomes if o.ok]
    probe_outcomes = await for_each_node(ready, lambda node: _probe_peers(sessions[node.name], ready))
    for outcome in probe_outcomes:
        if not outcome.ok:
            report.failures.setdefault(outcome.node.name, []).append(outcome.message)
            continue
        reached, failed = outcome.value  # type: ignore[misc]  # ok outcomes carry the tuple
        report.reached[outcome.node.name] = reached
        if failed:
            report.failures.setdefault(outcome.node.name, []).extend(failed)
    return report


def _note_failures(report: MeshReport, outcomes: Sequence[NodeOutcome[object]]) -> None:
    for outcome in outcomes:
        if not outcome.ok:
            report.failures.setdefault(outcome.node.name, []).append(outcome.message)


async def _ensure_node_key(session: NodeSession) -> str:
    result = await session.run(["sh", "-c", ENSURE_NODE_KEY_SCRIPT])
    line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if not line.startswith("ssh-ed25519 "):
        raise NodeError(
            session.node.name,
            f"{session.node.name}: could not make its own SSH key (ssh-keygen printed {line!r}); "
            "check that OpenSSH's ssh-keygen is installed on the node.",
        )
    return line


async def _install_peer_access(
    session: NodeSession, public_keys: Sequence[str], known_hosts_text: str, config_text: str
) -> None:
    await session.run(append_once_argv("authorized_keys", public_keys))
    await session.run(["sh", "-c", WRITE_SSH_FILE_SCRIPT, "corral-write", NODE_KNOWN_HOSTS_FILE], input=known_hosts_text)
    await session.run(["sh", "-c", WRITE_SSH_FILE_SCRIPT, "corral-write", NODE_SSH_CONFIG_FILE], input=config_text)
    await session.run(["sh", "-c", ENSURE_INCLUDE_SCRIPT])


async def _probe_peers(session: NodeSession, peers: Sequence[Node]) -> tuple[list[str], list[str]]:
    limit = asyncio.Semaphore(PEER_PROBES_PER_NODE)
    others = [peer for peer in peers if peer.name != session.node.name]

    async def probe(peer: Node) -> str | None:
        try:
            async with limit:
                result = await session.run(peer_probe_argv(peer), check=False, timeout_s=30)
        except ClusterError as exc:  # one stuck probe must not hide the other peers' results
            return f"{session.node.name} could not probe {peer.name}: {exc}"
        if result.ok:
            return None
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit status {result.exit_status}"
        return (
            f"{session.node.name} cannot reach {peer.name} ({peer.destination}) by key: {why}. "
            f"Run `corral keys` again; if it persists, check that {peer.name} is reachable from {session.node.name}."
        )

    results = await asyncio.gather(*(probe(peer) for peer in others))
    reached = [peer.name for peer, failure in zip(others, results) if failure is None]
    failures = [failure for failure in results if failure is not None]
    return reached, failures

