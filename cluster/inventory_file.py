"""Read and write the cluster inventory file (cluster.yaml), reporting every problem with its line."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from cluster.atomic import write_atomic
from cluster.errors import ConfigError
from cluster.inventory import DEFAULT_SSH_PORT, Inventory, Node, local_user

FORMAT_VERSION = 1
TOP_LEVEL_KEYS = ("version", "network", "project", "nodes")
NODE_KEYS = ("name", "address", "port", "user", "slots")

# Names become ssh Host aliases and file names: no spaces, no leading '-' (ssh would read an
# option), no '/' and no '..' tricks; the length keeps them readable in tables and paths.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_HOSTNAME_PATTERN = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*)(\.[A-Za-z0-9_-]+)*\.?\Z")
_USER_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")

_HEADER = """\
# corral cluster inventory: the machines corral trains on and the network MPI uses.
# You may edit it by hand; corral checks it on every read and never overwrites a copy
# it cannot read. corral rewrites it when nodes change, keeping only this header comment.
"""


class _IndentedDumper(yaml.SafeDumper):
    """Indents list items under their key (``nodes:`` then ``  - name:``), as people write YAML."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


# ---------------------------------------------------------------------------------------------
# Public API


def load_inventory(path: Path | str) -> Inventory:
    """The inventory in ``path``; a missing file is an empty inventory, a broken one a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a Windows editor may add a BOM
    except FileNotFoundError:
        return Inventory()
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"is not UTF-8 text (byte {exc.start}); save it as UTF-8 and try again"]) from exc
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read ({exc.strerror}); check that it is a file you may read"]) from exc
    return parse_inventory(text, source=path)


def parse_inventory(text: str, source: object = "cluster.yaml") -> Inventory:
    """The inventory described by ``text``; every problem is collected into one ConfigError."""
    return _InventoryReader(source).read(text)


def dump_inventory(inventory: Inventory) -> str:
    """``inventory`` as cluster.yaml text, with a header comment; ``parse_inventory`` reads it back equal."""
    data: dict[str, Any] = {"version": FORMAT_VERSION}
    if inventory.network is not None:
        data["network"] = inventory.network
    if inventory.project is not None:
        data["project"] = inventory.project
    data["nodes"] = [
        {"name": n.name, "address": n.address, "port": n.port, "user": n.user, "slots": n.slots}
        for n in inventory.nodes
    ]
    body = yaml.dump(data, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return _HEADER + body


def save_inventory(path: Path | str, inventory: Inventory) -> None:
    """Replace ``path`` with ``inventory``, atomically.

    Refuses (raising the existing file's ConfigError) when the file on disk cannot be read: it may
    hold hand edits only the user can repair. Also refuses to write content it could not read back.
    """
    path = Path(path)
    load_inventory(path)
    text = dump_inventory(inventory)
    parse_inventory(text, source=f"{path} (new content, not saved)")
    write_atomic(path, text, mode=0o644)


# ---------------------------------------------------------------------------------------------
# Checks shared with hostfile.py: each returns the reason a value is unusable, or None.


def closest_match(word: object, choices: Iterable[str]) -> str | None:
    """The choice ``word`` is most likely a typo of, if any is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``"; did you mean 'address'?"`` for a near miss, else ``""``."""
    close = closest_match(word, choices)
    return f"; did you mean {close!r}?" if close else ""


def name_problem(name: str) -> str | None:
    if NAME_PATTERN.match(name):
        return None
    return (
        f"{name!r} is not a usable node name; use up to 64 letters, digits, '-', '_' and '.', "
        "starting with a letter or digit (it becomes an ssh Host alias and a file name)"
    )


def address_problem(address: str) -> str | None:
    if not address:
        return "is empty; give the node's IP address or host name"
    if any(ch.isspace() for ch in address):
        return f"{address!r} contains a space; give one IP address or host name"
    if "@" in address:
        user, _, host = address.rpartition("@")
        return f"{address!r} includes a user; put {user!r} in 'user' and {host!r} in 'address'"
    if address.startswith("[") and address.endswith("]"):
        return f"{address!r} is in brackets; write the IPv6 address without them: {address[1:-1]!r}"
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if ":" in address:
        host, _, port = address.rpartition(":")
        if port.isdigit():
            return f"{address!r} includes a port; put {host!r} in 'address' and {port} in 'port'"
        return f"{address!r} is neither an IP address nor a host name"
    if len(address) > 253 or not _HOSTNAME_PATTERN.match(address):
        return f"{address!r} is neither an IP address nor a host name"
    return None


def user_problem(user: str) -> str | None:
    if _USER_PATTERN.match(user):
        return None
    if not user:
        return "is empty; give the login name on the node"
    return f"{user!r} is not a login name; use letters, digits, '.', '_' and '-', not starting with '-'"


def network_problem(network: str) -> str | None:
    if "/" not in network:
        try:
            ip = ipaddress.ip_address(network)
        except ValueError:
            return f"{network!r} is not a network; write a CIDR such as 10.77.0.0/24"
        if ip.version == 4:
            guess = ipaddress.ip_network(f"{ip}/24", strict=False)
            return f"{network!r} has no prefix length; write a CIDR such as {guess}"
        return f"{network!r} has no prefix length; write a CIDR such as {ip}/64"
    try:
        ipaddress.ip_network(network, strict=True)
        return None
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return f"{network!r} is not a network; write a CIDR such as 10.77.0.0/24"
    return f"{network!r} has host bits set; did you mean {str(loose)!r}?"


# ---------------------------------------------------------------------------------------------
# The reader: walks the composed YAML graph so every value keeps its line number.


class _InventoryReader:
    def __init__(self, source: object) -> None:
        self._source = source
        self._problems: list[tuple[int, str]] = []
        self._constructor = SafeConstructor()

    def read(self, text: str) -> Inventory:
        root = self._compose(text)
        if root is None:
            return Inventory()
        inventory = self._inventory(root)
        if self._problems:
            # Sorted so the report reads top to bottom like the file; sort() is stable.
            self._problems.sort(key=lambda item: item[0])
            raise ConfigError(self._source, [text for _, text in self._problems])
        return inventory

    # -- reporting --

    def _problem(self, node: yaml.Node | None, where: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 0
        prefix = f"line {line}: " if node is not None else ""
        field = f"{where}: " if where else ""
        self._problems.append((line, f"{prefix}{field}{message}"))

    def _compose(self, text: str) -> yaml.Node | None:
        try:
            return yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            raise ConfigError(self._source, [_syntax_problem(exc)]) from exc
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            raise ConfigError(
                self._source,
                [f"line {line}: contains the character {chr(exc.character)!r}, which YAML does not allow; remove it"],
            ) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(self._source, [f"is not valid YAML ({exc}); fix it or move it aside"]) from exc

    # -- structure --

    def _inventory(self, root: yaml.Node) -> Inventory:
        if not isinstance(root, yaml.MappingNode):
            got = _shown(root, self._value)
            self._problem(root, "", f"the file must be a mapping with keys {_listing(TOP_LEVEL_KEYS)}, but it is {got}")
            return Inventory()
        fields, _ = self._mapping(root, "", TOP_LEVEL_KEYS, "the file")
        self._version(fields.get("version"))
        network = self._network(fields.get("network"))
        project = self._project(fields.get("project"))
        nodes = self._nodes(fields.get("nodes"))
        return Inventory(nodes=nodes, network=network, project=project)

    def _mapping(
        self, mapping: yaml.MappingNode, where: str, known: Sequence[str], owner: str
    ) -> tuple[dict[str, tuple[yaml.Node, yaml.Node]], set[str]]:
        """Key -> (key node, value node), and the keys suggested for typos; reports unknown and repeated keys."""
        fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        suggested: set[str] = set()
        for key_node, value_node in mapping.value:
            key = self._value(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or key not in known:
                shown = repr(key) if isinstance(key_node, yaml.ScalarNode) else _shown(key_node, self._value)
                close = closest_match(key, known)
                if close:
                    suggested.add(close)
                    hint = f"; did you mean {close!r}?"
                else:
                    hint = f"; {owner} may have {_listing(known)}"
                self._problem(key_node, where, f"unknown key {shown}{hint}")
                continue
            if key in fields:
                first_line = fields[key][0].start_mark.line + 1
                self._problem(key_node, _join(where, key), f"is given twice (first on line {first_line}); keep one")
                continue
            fields[key] = (key_node, value_node)
        return fields, suggested

    def _version(self, field: tuple[yaml.Node, yaml.Node] | None) -> None:
        if field is None:
            return  # a hand-written file may leave it out
        node = field[1]
        value = self._value(node)
        if _is_int(value) and value > FORMAT_VERSION:
            self._problem(
                node, "version", f"this file is format {value}, written by a newer corral; upgrade corral to read it"
            )
        elif value != FORMAT_VERSION or not _is_int(value):
            self._problem(node, "version", f"expected {FORMAT_VERSION}, got {_shown(node, self._value)}")

    def _network(self, field: tuple[yaml.Node, yaml.Node] | None) -> str | None:
        return self._optional_text(field, "network", "a CIDR such as 10.77.0.0/24", network_problem)

    def _project(self, field: tuple[yaml.Node, yaml.Node] | None) -> str | None:
        def not_absolute(value: str) -> str | None:
            if value.startswith("/"):
                return None
            assert field is not None  # only called for a value that is present
            return f"expected the absolute path of the project folder, got {_shown(field[1], self._value)}"

        return self._optional_text(field, "project", "the absolute path of the project folder", not_absolute)

    def _optional_text(self, field: tuple[yaml.Node, yaml.Node] | None, name: str, expected: str,
                       problem_of: Callable[[str], str | None]) -> str | None:
        """A top-level text setting that may be absent or null; a wrong type or a failed check is a problem on its line."""
        if field is None:
            return None
        node = field[1]
        value = self._value(node)
        if value is None:
            return None
        if not isinstance(value, str):
            self._problem(node, name, f"expected {expected}, got {_shown(node, self._value)}")
            return None
        problem = problem_of(value)
        if problem:
            self._problem(node, name, problem)
            return None
        return value

    def _nodes(self, field: tuple[yaml.Node, yaml.Node] | None) -> tuple[Node, ...]:
        if field is None:
            return ()
        sequence = field[1]
        if isinstance(sequence, yaml.ScalarNode) and self._value(sequence) is None:
            return ()  # "nodes:" with nothing under it
        if not isinstance(sequence, yaml.SequenceNode):
            got = _shown(sequence, self._value)
            self._problem(sequence, "nodes", f"expected a list of nodes ('- name: ...' entries), got {got}")
            return ()
        nodes: list[Node] = []
        names: dict[str, tuple[int, yaml.Node]] = {}
        endpoints: dict[tuple[str, int], tuple[int, str, yaml.Node]] = {}
        for index, entry in enumerate(sequence.value):
            node = self._node(entry, index, names, endpoints)
            if node is not None:
                nodes.append(node)
        return tuple(nodes)

    def _node(
        self,
        entry: yaml.Node,
        index: int,
        names: dict[str, tuple[int, yaml.Node]],
        endpoints: dict[tuple[str, int], tuple[int, str, yaml.Node]],
    ) -> Node | None:
        where = f"nodes[{index}]"
        if not isinstance(entry, yaml.MappingNode):
            self._problem(
                entry,
                where,
                f"expected a mapping of {_listing(NODE_KEYS)} (e.g. '- name: node1' with 'address:' below it), "
                f"got {_shown(entry, self._value)}",
            )
            return None
        before = len(self._problems)
        fields, suggested = self._mapping(entry, where, NODE_KEYS, "a node")
        for required in ("name", "address"):
            # A typo such as 'adress' was already reported with its fix; "missing" would repeat it.
            if required not in fields and required not in suggested:
                self._problem(entry, where, f"{required!r} is missing; every node needs a name and an address")
        name = self._text(fields.get("name"), where, "name", name_problem)
        address = self._text(fields.get("address"), where, "address", address_problem)
        user = self._text(fields.get("user"), where, "user", user_problem)
        port = self._integer(fields.get("port"), where, "port", DEFAULT_SSH_PORT, 1, 65535)
        slots = self._integer(fields.get("slots"), where, "slots", 1, 1, None)

        # Compared case-insensitively: ssh matches Host aliases that way, and macOS file names too.
        if name is not None:
            seen = names.get(name.lower())
            name_node = fields["name"][1]
            if seen is not None:
                self._problem(
                    name_node,
                    f"{where}.name",
                    f"{name!r} is also the name of nodes[{seen[0]}] on line {seen[1].start_mark.line + 1}; "
                    "node names must be unique",
                )
            else:
                names[name.lower()] = (index, name_node)
        if address is not None and port is not None:
            key = (address.lower(), port)
            seen_endpoint = endpoints.get(key)
            address_node = fields["address"][1]
            if seen_endpoint is not None:
                other_index, other_name, other_node = seen_endpoint
                self._problem(
                    address_node,
                    f"{where}.address",
                    f"{address}:{port} is also nodes[{other_index}] ({other_name}) on line "
                    f"{other_node.start_mark.line + 1}; each machine may appear once",
                )
            else:
                endpoints[key] = (index, name or "?", address_node)

        if len(self._problems) > before or name is None or address is None or port is None or slots is None:
            return None
        return Node(name=name, address=address, port=port, user=user if user is not None else local_user(), slots=slots)

    # -- values --

    def _text(
        self,
        field: tuple[yaml.Node, yaml.Node] | None,
        where: str,
        key: str,
        check: Callable[[str], str | None],
    ) -> str | None:
        if field is None:
            return None
        node = field[1]
        value = self._value(node)
        if not isinstance(value, str):
            hint = f"; quote it: '{node.value}'" if isinstance(node, yaml.ScalarNode) and value is not None else ""
            self._problem(node, f"{where}.{key}", f"expected text, got {_shown(node, self._value)}{hint}")
            return None
        problem = check(value)
        if problem:
            self._problem(node, f"{where}.{key}", problem)
            return None
        return value

    def _integer(
        self,
        field: tuple[yaml.Node, yaml.Node] | None,
        where: str,
        key: str,
        default: int,
        low: int,
        high: int | None,
    ) -> int | None:
        if field is None:
            return default
        node = field[1]
        value = self._value(node)
        if _is_int(value) and value >= low and (high is None or value <= high):
            return int(value)
        wanted = f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
        self._problem(node, f"{where}.{key}", f"expected {wanted}, got {_shown(node, self._value)}")
        return None

    def _value(self, node: yaml.Node) -> Any:
        """The Python value of a scalar, as yaml.safe_load would give it; None for lists and maps."""
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            return node.value  # e.g. an impossible date: keep the text, the type check reports it


def _syntax_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if exc.problem == "but found another document":
        return f"{where}a second YAML document starts here ('---'); the inventory is one document, remove the rest"
    what = exc.problem or exc.context or "unreadable YAML"
    context = ""
    if exc.context and exc.context_mark and exc.problem:
        start = exc.context_mark
        context = f" {exc.context} that starts on line {start.line + 1}, column {start.column + 1}"
    return f"{where}this is not valid YAML: {what}{context}; check the indentation and quoting there"


def _shown(node: yaml.Node, value_of: Callable[[yaml.Node], Any]) -> str:
    """How a wrong value reads in a message: "'ssh'", "yes (a yes/no value)", "a list"."""
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    value = value_of(node)
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{node.value} (a yes/no value)"
    if isinstance(value, str):
        if value.strip().lstrip("-").isdigit():
            return f"{value!r} (text; write it without quotes)"
        return repr(value)
    if isinstance(value, (int, float)):
        return node.value
    return f"{node.value} (a {type(value).__name__})"


def _is_int(value: object) -> bool:
    # YAML reads yes/no/on/off as booleans, and bool is an int in Python: never a port.
    return isinstance(value, int) and not isinstance(value, bool)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _listing(keys: Sequence[str]) -> str:
    quoted = [f"'{k}'" for k in keys]
    return ", ".join(quoted[:-1]) + f" and {quoted[-1]}" if len(quoted) > 1 else quoted[0]
