"""What the wizard asks of corral's core, as one object whose coroutines run on the bridge's worker loop.

The pages never import the core's network modules themselves: they call these methods through
``Bridge.start``. Widget tests hand the wizard a fake with the same methods.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import ClusterError
from cluster.fleet import NodeOutcome, for_each_node
from cluster.home import CorralHome
from cluster.inventory import Inventory, Node

Report = Callable[[object], None]
ConfirmHostKey = Callable[[Node, str], Awaitable[bool]]
AskPassword = Callable[[Node], Awaitable[str | None]]


class StepState(str, enum.Enum):
    """A node's state in a long step, as the per-node progress widget shows it."""

    WAITING = "waiting"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class NodeStep:
    """Progress of one node in a step the core reports no events of its own for (host keys, key install)."""

    node: str
    state: StepState
    text: str


class HostKeyStatus(str, enum.Enum):
    NEW = "new"  # never accepted: the user compares the fingerprint and decides
    TRUSTED = "trusted"  # matches the accepted key
    CHANGED = "changed"  # differs from the accepted key: refused


@dataclass(frozen=True)
class HostKeyView:
    """The key a node presents now, and what corral knows of it."""

    node: str
    fingerprint: str
    status: HostKeyStatus
    message: str = ""  # for CHANGED: the core's HostKeyChanged sentence


@dataclass(frozen=True)
class LocalNetwork:
    """A network this computer is on, as a choice for MPI's traffic."""

    interface: str
    address: str
    cidr: str

    @property
    def label(self) -> str:
        return f"{self.cidr}  ({self.interface}, this computer is {self.address})"


class WizardCore:
    """The real thing: discovery, key install and mesh, sync, env and doctor against the nodes."""

    def __init__(self, home: CorralHome) -> None:
        self.home = home

    # --- discover ---

    def default_subnets(self) -> list[str]:
        from cluster.discovery import local_subnets

        try:
            return local_subnets()
        except OSError:
            return []

    async def discover(self, subnets: Sequence[str], timeout_s: float, report: Report) -> list[object]:
        from cluster.discovery import discover

        return await discover(list(subnets) or None, timeout_s=timeout_s, on_found=report)

    # --- network ---

    def local_networks(self) -> list[LocalNetwork]:
        import ipaddress

        import ifaddr

        networks = []
        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                if not isinstance(ip.ip, str):
                    continue
                interface = ipaddress.ip_interface(f"{ip.ip}/{ip.network_prefix}")
                if interface.ip.is_loopback:
                    continue
                networks.append(LocalNetwork(adapter.nice_name or adapter.name, ip.ip, str(interface.network)))
        return networks

    # --- credentials and keys ---

    async def host_keys(self, nodes: Sequence[Node], report: Report) -> list[NodeOutcome[HostKeyView]]:
        from cluster.known_hosts import KnownHosts, fingerprint, key_line
        from cluster.ssh import host_key_changed_error, presented_host_key

        known_hosts = KnownHosts(self.home.known_hosts_path)

        async def one(node: Node) -> HostKeyView:
            report(NodeStep(node.name, StepState.RUNNING, "asking for its host key"))
            try:
                accepted, presented = await presented_host_key(node, known_hosts, 5.0)
            except ClusterError as exc:
                report(NodeStep(node.name, StepState.FAILED, str(exc)))
                raise
            shown = fingerprint(presented)
            if not accepted:
                view = HostKeyView(node.name, shown, HostKeyStatus.NEW)
            elif any(key_line(key) == key_line(presented) for key in accepted):
                view = HostKeyView(node.name, shown, HostKeyStatus.TRUSTED)
            else:
                view = HostKeyView(node.name, shown, HostKeyStatus.CHANGED,
                                   str(host_key_changed_error(node, accepted[0], presented)))
            report(NodeStep(node.name, StepState.OK if view.status is not HostKeyStatus.CHANGED else StepState.FAILED,
                            view.message or shown))
            return view

        return await for_each_node(nodes, one)

    async def install_keys(self, nodes: Sequence[Node], mesh_nodes: Sequence[Node], confirm: ConfirmHostKey,
                           ask_password: AskPassword, report: Report) -> dict[str, str | None]:
        """Install corral's key on ``nodes``, then node-to-node access among ``mesh_nodes``.

        Returns each node's failure sentence, or None for a node that is ready (key login and mesh).
        """
        from cluster.keys import KeySetup, ensure_key_pair
        from cluster.known_hosts import KnownHosts
        from cluster.mesh import build_mesh
        from cluster.ssh import Credentials, open_session

        ensure_key_pair(self.home)
        known_hosts = KnownHosts(self.home.known_hosts_path)
        setup = KeySetup(self.home, known_hosts, confirm, ask_password)

        async def install(node: Node) -> object:
            report(NodeStep(node.name, StepState.RUNNING, "installing corral's key"))
            try:
                session = await setup.install(node)
            except ClusterError as exc:
                report(NodeStep(node.name, StepState.FAILED, str(exc)))
                raise
            report(NodeStep(node.name, StepState.RUNNING, "key login works; setting up node-to-node access"))
            return session

        results: dict[str, str | None] = {}
        outcomes = await for_each_node(nodes, install)
        sessions = {o.node.name: o.value for o in outcomes if o.ok}
        for outcome in outcomes:
            results[outcome.node.name] = None if outcome.ok else outcome.message
        try:
            installed = {node.name for node in nodes}
            others = [n for n in mesh_nodes if n.name not in installed]
            credentials = Credentials(private_key_path=self.home.private_key_path)
            other_outcomes = await for_each_node(others, lambda n: open_session(n, credentials, known_hosts))
            for outcome in other_outcomes:
                if outcome.ok:
                    sessions[outcome.node.name] = outcome.value
                else:
                    results[outcome.node.name] = outcome.message
                    report(NodeStep(outcome.node.name, StepState.FAILED, outcome.message))
            if len(sessions) > 1:
                mesh = await build_mesh(sessions, [n for n in mesh_nodes if n.name in sessions], known_hosts)  # type: ignore[arg-type]  # ok outcomes hold sessions
                for name, messages in mesh.failures.items():
                    if messages:
                        results[name] = " ".join(messages)
            for name in sessions:
                if results.get(name) is None:
                    results[name] = None
                    peers = len(sessions) - 1
                    report(NodeStep(name, StepState.OK, "Key login works" + (f"; reaches {peers} other node(s) by key"
                                                                             if peers else "")))
                else:
                    report(NodeStep(name, StepState.FAILED, results[name] or ""))
        finally:
            await asyncio.gather(*(s.close() for s in sessions.values() if s is not None), return_exceptions=True)  # type: ignore[union-attr]  # sessions
        return results

    # --- code, environment, check ---

    def check_project(self, folder: str) -> Path:
        from cluster.sync import check_project_folder

        return check_project_folder(folder)

    async def sync(self, inventory: Inventory, project: str, names: Sequence[str], report: Report
                   ) -> list[NodeOutcome[object]]:
        from cluster.sync import sync_project

        return await sync_project(self.home, inventory, project, names=list(names), on_progress=report)  # type: ignore[return-value]  # SyncResult outcomes

    async def build_env(self, inventory: Inventory, names: Sequence[str], wheels: str, report: Report
                        ) -> list[NodeOutcome[object]]:
        from cluster.env_recipe import read_requirements
        from cluster.layout import RemoteLayout
        from cluster.remote_env import EnvRequest, run_env

        if not inventory.project:
            raise ClusterError("No project folder was synced yet; go back to the Code step and choose one.")
        project = Path(inventory.project)
        requirements = project / "requirements.txt"
        request = EnvRequest(layout=RemoteLayout.for_project(project),
                             requirements=read_requirements(requirements if requirements.is_file() else None),
                             wheels="push" if wheels == "push" else "online")
        nodes = inventory.select(list(names))
        return await run_env(self.home, nodes, request, all_nodes=inventory.nodes, on_progress=report)  # type: ignore[return-value]  # NodeEnv outcomes

    async def doctor(self, inventory: Inventory, report: Report) -> object:
        from cluster.doctor import run_doctor
        from cluster.known_hosts import KnownHosts
        from cluster.ssh import Credentials, SessionPool

        credentials = Credentials(private_key_path=self.home.private_key_path)
        async with SessionPool(credentials, KnownHosts(self.home.known_hosts_path)) as pool:
            return await run_doctor(inventory, pool, on_event=report)
