"""The wizard's progress on disk (``<home>/wizard.json``): nodes, users, network, project, steps done; never passwords."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cluster.atomic import write_atomic
from cluster.home import CorralHome
from cluster.inventory import DEFAULT_SSH_PORT, Node

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_FILE = "wizard.json"
# Page keys in order; the wizard's page ids are their indexes.
PAGES = ("discover", "network", "credentials", "keys", "code", "environment", "check", "done")


@dataclass(frozen=True)
class WizardNode:
    """A machine the wizard knows: found or typed in, and whether it is part of the cluster being set up."""

    name: str
    address: str
    port: int = DEFAULT_SSH_PORT
    user: str = ""
    slots: int = 1
    hostname: str | None = None
    banner: str | None = None
    os_hint: str | None = None
    found_by: tuple[str, ...] = ()
    selected: bool = True
    auto_named: bool = True  # named by corral (nodeN): renamed in address order until keys are installed

    def as_node(self, default_user: str) -> Node:
        return Node(name=self.name, address=self.address, port=self.port, user=self.user or default_user,
                    slots=self.slots)


@dataclass
class WizardState:
    """Everything needed to resume the wizard where it was left."""

    page: str = PAGES[0]
    subnets: str = ""
    nodes: list[WizardNode] = field(default_factory=list)
    network: str | None = None  # None: the nodes' own subnet
    shared_credentials: bool = False
    shared_user: str = ""
    project: str = ""
    wheels: str = "online"
    keyed: list[str] = field(default_factory=list)  # nodes whose key login (and mesh) succeeded
    completed: list[str] = field(default_factory=list)  # page keys finished
    finished: bool = False

    def selected_nodes(self) -> list[WizardNode]:
        return [node for node in self.nodes if node.selected]

    def node(self, name: str) -> WizardNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def replace_node(self, name: str, **changes: object) -> None:
        self.nodes = [replace(node, **changes) if node.name == name else node for node in self.nodes]  # type: ignore[arg-type]  # dataclass fields

    def mark_completed(self, page: str) -> None:
        if page not in self.completed:
            self.completed.append(page)

    def forget_completed_from(self, page: str) -> None:
        """A change on ``page`` invalidates it and every later step (they ran with the old choices)."""
        later = PAGES[PAGES.index(page):]
        self.completed = [key for key in self.completed if key not in later]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["version"] = STATE_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> WizardState:
        nodes = []
        for raw in data.get("nodes", []) or []:  # type: ignore[union-attr]  # validated by the dataclass below
            raw = dict(raw)  # type: ignore[arg-type]  # a JSON object
            raw["found_by"] = tuple(raw.get("found_by") or ())
            nodes.append(WizardNode(**{k: v for k, v in raw.items() if k in WizardNode.__dataclass_fields__}))
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "nodes"}
        state = cls(**known)  # type: ignore[arg-type]  # JSON values of the saved types
        state.nodes = nodes
        if state.page not in PAGES:
            state.page = PAGES[0]
        return state


def state_path(home: CorralHome) -> Path:
    return home.root / STATE_FILE


def load_state(home: CorralHome) -> WizardState | None:
    """The saved progress, or None when there is none; an unreadable file is set aside, not fatal."""
    path = state_path(home)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown format")
        return WizardState.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        aside = path.with_name(f"{path.name}.unreadable")
        log.warning("the wizard's saved progress in %s could not be read (%s); moved it to %s", path, exc, aside)
        try:
            path.replace(aside)
        except OSError:
            pass
        return None


def save_state(home: CorralHome, state: WizardState) -> None:
    """Write the progress atomically (private: it names the machines and users of the lab)."""
    home.ensure()
    write_atomic(state_path(home), json.dumps(state.to_json(), indent=2) + "\n", mode=0o600)


def clear_state(home: CorralHome) -> None:
    try:
        state_path(home).unlink()
    except FileNotFoundError:
        pass
