"""Node and Inventory: the one list of machines that every command works on."""

from __future__ import annotations

import difflib
import getpass
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from cluster.errors import ClusterError

DEFAULT_SSH_PORT = 22


def local_user() -> str:
    """The user name corral assumes on a node when none is given (as ``ssh`` does)."""
    return getpass.getuser()


@dataclass(frozen=True)
class Node:
    """One machine of the cluster, as this computer reaches it over SSH."""

    name: str
    address: str
    port: int = DEFAULT_SSH_PORT
    user: str = field(default_factory=local_user)
    slots: int = 1

    @property
    def destination(self) -> str:
        """``user@address`` as OpenSSH and hostfiles spell it."""
        return f"{self.user}@{self.address}"

    @property
    def known_hosts_pattern(self) -> str:
        """How OpenSSH names this host in known_hosts: bare for port 22, ``[addr]:port`` otherwise."""
        if self.port == DEFAULT_SSH_PORT:
            return self.address
        return f"[{self.address}]:{self.port}"

    def describe(self) -> str:
        """``node1 (lab1@10.0.0.11:22)``: the name plus what it stands for, for messages."""
        host = f"[{self.address}]" if ":" in self.address else self.address  # IPv6 needs brackets before a port
        return f"{self.name} ({self.user}@{host}:{self.port})"


@dataclass(frozen=True)
class Inventory:
    """The cluster: its nodes in order (the first is the head node) and the network MPI uses."""

    nodes: tuple[Node, ...] = ()
    # CIDR MPI traffic should use, e.g. a Thunderbolt bridge; None means the nodes' own subnet.
    network: str | None = None
    # Absolute path, on this computer, of the project folder last synced to the nodes.
    project: str | None = None

    def names(self) -> list[str]:
        return [node.name for node in self.nodes]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError(unknown_node_message(name, self.names()))

    def select(self, names: Sequence[str] | None) -> list[Node]:
        """The named nodes (all when none are named); every unknown name is reported at once."""
        if not names:
            return list(self.nodes)
        unknown = [name for name in names if name not in self.names()]
        if unknown:
            raise ClusterError("; ".join(unknown_node_message(name, self.names()) for name in unknown))
        # In the order given (prompts and --password-stdin lines follow it), each node once.
        return [self.node(name) for name in dict.fromkeys(names)]

    def with_node(self, node: Node) -> Inventory:
        """A copy with ``node`` appended; a name or address:port already present is an error."""
        for existing in self.nodes:
            # Case-blind, as ssh Host aliases and macOS file names are.
            if existing.name.lower() == node.name.lower():
                raise ClusterError(
                    f"A node named {node.name!r} already exists ({existing.describe()}); "
                    "choose another name with --name, or remove it first with `corral node remove`."
                )
            if (existing.address.lower(), existing.port) == (node.address.lower(), node.port):
                raise ClusterError(
                    f"{node.address}:{node.port} is already in the cluster as {existing.name!r}; "
                    "remove it first with `corral node remove` to add it again."
                )
        return replace(self, nodes=(*self.nodes, node))

    def without(self, name: str) -> Inventory:
        self.node(name)  # raises with "did you mean" for an unknown name
        return replace(self, nodes=tuple(node for node in self.nodes if node.name != name))

    def effective_network(self) -> str | None:
        """The MPI network: the configured CIDR, else the smallest subnet (/24 or wider) of all nodes."""
        if self.network:
            return self.network
        return covering_subnet(node.address for node in self.nodes)

    def total_slots(self) -> int:
        return sum(node.slots for node in self.nodes)


def covering_subnet(addresses: Iterable[str]) -> str | None:
    """The /24 (widened as needed) holding every IPv4 address, or None if any is a hostname or IPv6."""
    parsed = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        if ip.version != 4:
            return None
        parsed.append(ip)
    if not parsed:
        return None
    network = ipaddress.ip_network(f"{parsed[0]}/24", strict=False)
    while not all(ip in network for ip in parsed):
        network = network.supernet()
    return str(network)


def unknown_node_message(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(known) if known else "none yet; add one with `corral node add ADDRESS`"
    return f"There is no node named {name!r} in the cluster.{hint} Nodes: {listing}."


def next_free_name(inventory: Inventory, stem: str = "node") -> str:
    """``node1``, ``node2``, …: the first name of that shape not yet taken."""
    taken = set(inventory.names())
    index = 1
    while f"{stem}{index}" in taken:
        index += 1
    return f"{stem}{index}"


def default_node_name(address: str, inventory: Inventory) -> str:
    """A name for a new node: a hostname's first label (``studio.local`` → ``studio``), else ``nodeN``."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        label = address.split(".")[0]
        if label and label not in inventory.names():
            return label
    return next_free_name(inventory)


def split_destination(text: str) -> tuple[str | None, str, int | None]:
    """``user@host:port`` → (user, host, port); each part optional but the host (IPv6 in brackets)."""
    user, _, rest = text.rpartition("@")
    port: int | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":") and tail[1:].isdigit():
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        if not port_text.isdigit():
            raise ClusterError(f"{text!r}: the port after ':' must be a number, like 10.0.0.5:2222.")
        port = int(port_text)
    else:
        host = rest
    if not host:
        raise ClusterError(f"{text!r} has no host name or address; give one like 10.0.0.5 or mac.local.")
    return (user or None), host, port
