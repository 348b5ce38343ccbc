"""Read and write the host lists MPI and MLX take: Open MPI hostfiles and mlx.launch hosts JSON."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.errors import ConfigError
from cluster.inventory import DEFAULT_SSH_PORT, Node, covering_subnet, local_user
from cluster.inventory_file import (
    NAME_PATTERN,
    address_problem,
    closest_match,
    did_you_mean,
    user_problem,
)

# Open MPI's hostfile keywords (prrte/src/util/hostfile/hostfile_lex.l); count and cpu are
# synonyms of slots there. Hardware descriptions and slot caps do not change what corral runs.
_SLOTS_KEYS = frozenset({"slots", "count", "cpu"})
_USER_KEYS = frozenset({"username", "user-name", "user_name"})
_PORT_KEYS = frozenset({"port"})
_IGNORED_KEYS = frozenset(
    {
        "max_slots", "max-slots", "slots_max", "slots-max", "max_cpu", "max-cpu", "cpu_max", "cpu-max",
        "max_count", "max-count", "count_max", "count-max",
        "boards", "sockets", "sockets_per_board", "sockets-per-board", "cores", "cores_per_socket",
        "cores-per-socket",
    }
)
_ALL_KEYS = sorted(_SLOTS_KEYS | _USER_KEYS | _PORT_KEYS | _IGNORED_KEYS)
_COMMENT = re.compile(r"#|//")
_EQUALS = re.compile(r"\s*=\s*")

# mlx/_distributed_utils/common.py (Hostfile.from_file): a list of hosts, or an object holding
# "hosts" plus a backend and environment; each host has "ssh" and optional "ips" and "rdma".
_MLX_TOP_KEYS = ("hosts", "backend", "envs")
_MLX_HOST_KEYS = ("ssh", "ips", "rdma")
_MLX_EXAMPLE = '[{"ssh": "node1", "ips": ["10.77.0.11"]}]'


@dataclass
class _Host:
    """One host line or entry before it becomes a Node: where it came from and what it said."""

    where: str
    address: str
    user: str | None = None
    port: int = DEFAULT_SSH_PORT
    slots: int = 1
    ips: list[str] = field(default_factory=list)
    alias: str | None = None  # an ssh_config alias the address was resolved from


# ---------------------------------------------------------------------------------------------
# Reading


def parse_host_list_file(path: Path | str, *, taken_names: Iterable[str] = ()) -> list[Node]:
    """The nodes listed in an Open MPI hostfile or an mlx.launch hosts JSON file, sniffed by content.

    Node names are derived from the hosts and avoid ``taken_names`` (the cluster's current nodes).
    """
    path = Path(path)
    text = _read_text(path)
    if _looks_like_json(text):
        return parse_mlx_hosts_json(text, source=path, taken_names=taken_names)
    return parse_openmpi_hostfile(text, source=path, taken_names=taken_names)


def parse_openmpi_hostfile(text: str, source: object = "hostfile", *, taken_names: Iterable[str] = ()) -> list[Node]:
    """Nodes from an Open MPI hostfile (``[user@]host [slots=N] [max_slots=N] [port=N]`` per line)."""
    problems: list[str] = []
    hosts: dict[tuple[str, int], _Host] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        host = _parse_hostfile_line(raw, f"line {number}", problems)
        if host is not None:
            _add_host(hosts, host, problems)
    if not hosts and not problems:
        problems.append("lists no hosts; an Open MPI hostfile has one host per line, e.g. 'lab1@10.77.0.11 slots=1'")
    return _nodes(list(hosts.values()), source, problems, taken_names)


def parse_mlx_hosts_json(text: str, source: object = "hosts.json", *, taken_names: Iterable[str] = ()) -> list[Node]:
    """Nodes from the JSON file ``mlx.launch --hostfile`` reads; repeated ``ssh`` entries add slots."""
    problems: list[str] = []
    hosts = _mlx_hosts(text, source, problems)
    return _nodes(hosts, source, problems, taken_names)


def mlx_hosts_network(text: str, source: object = "hosts.json") -> str | None:
    """The IPv4 subnet holding every entry's first ``ips`` address (e.g. a Thunderbolt bridge), or None.

    mlx's ring backend talks over ``ips`` while ssh goes to ``ssh``; this is the network to set as
    the inventory's MPI network when importing such a file.
    """
    problems: list[str] = []
    hosts = _mlx_hosts(text, source, problems)
    if problems:
        raise ConfigError(source, problems)
    if not hosts or any(not host.ips for host in hosts):
        return None
    return covering_subnet(host.ips[0] for host in hosts)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a Windows editor may add a BOM
    except FileNotFoundError as exc:
        raise ConfigError(
            path, ["does not exist; give the path of an Open MPI hostfile or an mlx.launch hosts JSON file"]
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"is not UTF-8 text (byte {exc.start}); is it really a hostfile?"]) from exc
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read ({exc.strerror}); check that it is a file you may read"]) from exc


def _looks_like_json(text: str) -> bool:
    # A hostfile line starts with a host name, never a bracket or brace; JSON hosts always do.
    return text.lstrip().startswith(("[", "{"))


def _parse_hostfile_line(raw: str, where: str, problems: list[str]) -> _Host | None:
    content = _COMMENT.split(raw, maxsplit=1)[0]
    # Open MPI's lexer skips blanks around '=', so "slots = 4" is one option.
    tokens = _EQUALS.sub("=", content).split()
    if not tokens:
        return None
    first, options = tokens[0], tokens[1:]
    before = len(problems)
    host = _hostfile_host(first, where, problems)
    seen: set[str] = set()
    for option in options:
        _apply_option(host, option, where, seen, problems)
    return host if len(problems) == before else None


def _hostfile_host(token: str, where: str, problems: list[str]) -> _Host:
    host = _Host(where=where, address=token)
    if "=" in token:
        problems.append(f"{where}: expected a host first, got {token!r}; write e.g. 'node1 {token}'")
        return host
    if token.startswith("^"):
        problems.append(f"{where}: excluding a host ({token!r}) is not supported on import; remove the line")
        return host
    if token.startswith("+") or token == "rank":
        problems.append(f"{where}: {token!r} is rankfile or relative-host syntax, not a host; list hosts by name")
        return host
    if token.count("@") > 1:
        problems.append(f"{where}: {token!r} has more than one '@'; write user@host")
        return host
    user, _, address = token.rpartition("@")
    host.address = address
    if "@" in token:
        problem = user_problem(user)
        if problem:
            problems.append(f"{where}: the user {problem}")
        host.user = user
    slot_suffix = re.fullmatch(r"(.+):(\d+)", address)
    if slot_suffix and not _is_ip(address):
        name, count = slot_suffix.groups()
        problems.append(
            f"{where}: {token!r} is mpirun's --host syntax; in a hostfile write '{name} slots={count}'"
        )
        return host
    problem = address_problem(address)
    if problem:
        problems.append(f"{where}: the host {problem}")
    return host


def _apply_option(host: _Host, option: str, where: str, seen: set[str], problems: list[str]) -> None:
    key, equals, value = option.partition("=")
    if not equals:
        problems.append(
            f"{where}: unexpected {option!r} after the host; a hostfile has one host per line, "
            "followed by options such as 'slots=4'"
        )
        return
    canonical = _canonical_key(key)
    if canonical is None:
        hint = did_you_mean(key, _ALL_KEYS) or "; corral understands slots, max_slots, port and username"
        problems.append(f"{where}: unknown option {key!r}{hint}")
        return
    if canonical in seen and canonical != "ignored":
        problems.append(f"{where}: {canonical} is given twice; keep one")
        return
    seen.add(canonical)
    if canonical == "slots":
        if value.isdigit() and int(value) >= 1:
            host.slots = int(value)
        else:
            problems.append(f"{where}: slots must be a whole number ≥ 1, got {value!r}")
    elif canonical == "port":
        if value.isdigit() and 1 <= int(value) <= 65535:
            host.port = int(value)
        else:
            problems.append(f"{where}: port must be a whole number from 1 to 65535, got {value!r}")
    elif canonical == "user":
        problem = user_problem(value)
        if problem:
            problems.append(f"{where}: the username {problem}")
        elif host.user is not None and host.user != value:
            problems.append(f"{where}: the user is given twice ({host.user!r} and {value!r}); keep one")
        host.user = value
    elif canonical == "ignored" and value and not value.isdigit():
        problems.append(f"{where}: {key} must be a whole number, got {value!r}")


def _canonical_key(key: str) -> str | None:
    if key in _SLOTS_KEYS:
        return "slots"
    if key in _USER_KEYS:
        return "user"
    if key in _PORT_KEYS:
        return "port"
    if key in _IGNORED_KEYS:
        return "ignored"
    return None


def _mlx_hosts(text: str, source: object, problems: list[str]) -> list[_Host]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            source, [f"line {exc.lineno}, column {exc.colno}: this is not valid JSON ({exc.msg}); fix it there"]
        ) from exc
    prefix = ""
    if isinstance(data, dict):
        for key in data:
            if key not in _MLX_TOP_KEYS:
                hint = did_you_mean(key, _MLX_TOP_KEYS) or "; mlx.launch reads 'hosts', 'backend' and 'envs'"
                problems.append(f"unknown key {key!r}{hint}")
        if "hosts" not in data:
            problems.append(f"'hosts' is missing; it lists the machines, e.g. \"hosts\": {_MLX_EXAMPLE}")
            return []
        data, prefix = data["hosts"], "hosts"
    if not isinstance(data, list):
        what = prefix or "the file"
        problems.append(f"{what}: expected a JSON list of hosts like {_MLX_EXAMPLE}, got {_json_kind(data)}")
        return []
    hosts: dict[tuple[str, int], _Host] = {}
    for index, entry in enumerate(data):
        host = _mlx_host(entry, f"{prefix}[{index}]", problems)
        if host is not None:
            _add_host(hosts, host, problems)
    if not data and not problems:
        problems.append(f"lists no hosts; mlx.launch expects e.g. {_MLX_EXAMPLE}")
    return list(hosts.values())


def _mlx_host(entry: Any, where: str, problems: list[str]) -> _Host | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected an object like {{\"ssh\": \"node1\"}}, got {_json_kind(entry)}")
        return None
    before = len(problems)
    for key in entry:
        if key not in _MLX_HOST_KEYS:
            hint = did_you_mean(key, _MLX_HOST_KEYS) or "; a host has 'ssh', 'ips' and 'rdma'"
            problems.append(f"{where}: unknown key {key!r}{hint}")
    ssh = entry.get("ssh")
    host = _Host(where=where, address="")
    if ssh is None:
        if not _has_typo_of(entry, "ssh"):
            problems.append(f"{where}: 'ssh' is missing; give the host mlx.launch should ssh into, e.g. \"node1\"")
    elif not isinstance(ssh, str):
        problems.append(f"{where}.ssh: expected text such as \"node1\" or \"lab1@10.77.0.11\", got {_json_kind(ssh)}")
    elif re.fullmatch(r"[^:]+:\d+", ssh):
        problems.append(
            f"{where}.ssh: {ssh!r} has a port, but mlx.launch hands 'ssh' to ssh as a host name; "
            "use an ssh_config alias that sets the port"
        )
    else:
        user, _, address = ssh.rpartition("@")
        host.address = address
        if "@" in ssh:
            host.user = user
            problem = user_problem(user)
            if problem:
                problems.append(f"{where}.ssh: the user {problem}")
        problem = address_problem(address)
        if problem:
            problems.append(f"{where}.ssh: the host {problem}")
    host.ips = _mlx_ips(entry.get("ips", []), f"{where}.ips", problems)
    if host.ips and host.user is None and _is_alias(host.address):
        # "node1" is an ssh_config alias (as corral exports it) that only resolves through that config;
        # the entry's own IP is an address corral can reach. The alias stays as the node's name.
        host.alias, host.address = host.address, host.ips[0]
    return host if len(problems) == before else None


def _is_alias(address: str) -> bool:
    return bool(address) and "." not in address and ":" not in address and not _is_ip(address)


def _has_typo_of(entry: Mapping[str, Any], key: str) -> bool:
    """Whether some other key of ``entry`` is a typo of ``key`` (already reported with its fix)."""
    return any(closest_match(other, [key]) == key for other in entry if other != key)


def _mlx_ips(ips: Any, where: str, problems: list[str]) -> list[str]:
    if not isinstance(ips, list):
        problems.append(f"{where}: expected a list of IP addresses such as [\"10.77.0.11\"], got {_json_kind(ips)}")
        return []
    good = []
    for index, ip in enumerate(ips):
        if isinstance(ip, str) and _is_ip(ip):
            good.append(ip)
        else:
            shown = repr(ip) if isinstance(ip, str) else _json_kind(ip)
            problems.append(f"{where}[{index}]: {shown} is not an IP address; the ring backend connects to these")
    return good


def _json_kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    return "an object"


# ---------------------------------------------------------------------------------------------
# From hosts to nodes


def _add_host(hosts: dict[tuple[str, int], _Host], host: _Host, problems: list[str]) -> None:
    """Adds ``host``, or merges it into the same machine seen before: Open MPI and mlx.launch both
    read a repeated host as more slots."""
    key = (host.address.lower(), host.port)
    first = hosts.get(key)
    if first is None:
        hosts[key] = host
        return
    if host.user is not None and first.user is not None and host.user != first.user:
        problems.append(
            f"{host.where}: {host.address} appears again with user {host.user!r}, but {first.where} "
            f"says {first.user!r}; one machine has one login here"
        )
        return
    first.user = first.user or host.user
    first.slots += host.slots


def _nodes(hosts: list[_Host], source: object, problems: list[str], taken_names: Iterable[str]) -> list[Node]:
    if problems:
        raise ConfigError(source, problems)
    taken = {name.lower() for name in taken_names}
    return [
        Node(
            name=_derived_name(host.alias or host.address, position, taken),
            address=host.address,
            port=host.port,
            user=host.user if host.user is not None else local_user(),
            slots=host.slots,
        )
        for position, host in enumerate(hosts, start=1)
    ]


def _derived_name(address: str, position: int, taken: set[str]) -> str:
    """A node name from its host: a host name's first label, else ``node<position>``; never a repeat."""
    base = None
    if not _is_ip(address):
        label = re.sub(r"[^A-Za-z0-9_-]", "-", address.split(".")[0])
        base = label if NAME_PATTERN.match(label) else None
    if base is None:
        number = position
        while f"node{number}" in taken:
            number += 1
        name = f"node{number}"
    else:
        name, suffix = base, 2
        while name.lower() in taken:
            name, suffix = f"{base}-{suffix}", suffix + 1
    taken.add(name.lower())
    return name


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Writing


def format_openmpi_hostfile(nodes: Sequence[Node], *, with_users: bool = True) -> str:
    """An Open MPI hostfile: ``lab1@10.77.0.11 slots=1`` per node, ``port=N`` when not 22."""
    lines = ["# Open MPI hostfile written by corral from its cluster inventory; edit the inventory, not this."]
    for node in nodes:
        parts = [node.destination if with_users else node.address, f"slots={node.slots}"]
        if node.port != DEFAULT_SSH_PORT:
            # Open MPI 4 and 5 pass a per-host port=N to ssh as -p N.
            parts.append(f"port={node.port}")
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


def format_mlx_hosts_json(nodes: Sequence[Node], *, network_ips: Mapping[str, str] | None = None) -> str:
    """The JSON list ``mlx.launch --hostfile`` reads: one entry per rank, so a node appears ``slots`` times.

    ``ssh`` is the node name, an alias from corral's exported ssh_config (it carries user, port
    and key). ``ips`` is what the ring backend connects to: ``network_ips[name]`` (e.g. the node's
    Thunderbolt address) or else the node's address when it is an IP; mlx wants IPs, not names.
    """
    entries = []
    for node in nodes:
        ip = (network_ips or {}).get(node.name) or (node.address if _is_ip(node.address) else None)
        entries.extend({"ssh": node.name, "ips": [ip] if ip else []} for _ in range(node.slots))
    if not entries:
        return "[]\n"
    # One entry per line: readable, and a diff shows which rank changed.
    return "[\n" + ",\n".join(f"  {json.dumps(entry)}" for entry in entries) + "\n]\n"
