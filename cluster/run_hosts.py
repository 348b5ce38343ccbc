"""Reach the machines of a run: SSH sessions to its nodes, or this computer itself in local mode."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from cluster.errors import ClusterError, NodeUnreachable
from cluster.home import CorralHome
from cluster.inventory import Inventory, Node
from cluster.local_host import LocalHost, local_base_dir, local_node
from cluster.runs import RunRecord
from cluster.ssh import CommandResult, OnLine

PROBE_TIMEOUT_S = 2.5  # a node on the LAN answers SSH within a fraction of this


class Host(Protocol):
    """What launch, follow and stop need of a machine: NodeSession's ``run``."""

    async def run(self, argv: Sequence[str], *, check: bool = True, input: str | None = None,
                  timeout_s: float | None = None, on_line: OnLine | None = None) -> CommandResult: ...


class RunHosts:
    """Sessions to a run's nodes, opened on first use and closed together (``async with``)."""

    def __init__(self, home: CorralHome, nodes: Sequence[Node], *, local: bool) -> None:
        self.home = home
        self.nodes = list(nodes)
        self.local = local
        self._pool = None
        if not local:
            from cluster.known_hosts import KnownHosts
            from cluster.ssh import Credentials, SessionPool

            self._credentials = Credentials(private_key_path=home.private_key_path)
            self._known_hosts = KnownHosts(home.known_hosts_path)
            self._pool = SessionPool(self._credentials, self._known_hosts)
        self._local = LocalHost(local_base_dir(home)) if local else None

    @classmethod
    def for_record(cls, home: CorralHome, record: RunRecord, inventory: Inventory | None = None) -> RunHosts:
        if record.local:
            return cls(home, [local_node(record.world_size)], local=True)
        if inventory is None:
            from cluster.state import load_cluster

            inventory = load_cluster(home)
        known = {node.name: node for node in inventory.nodes}
        missing = [name for name in dict.fromkeys(record.nodes) if name not in known]
        if missing:
            raise ClusterError(
                f"Run {record.id} ran on {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} no longer "
                "in the cluster; add the node back (`corral node add`) to reach that run."
            )
        return cls(home, [known[name] for name in dict.fromkeys(record.nodes)], local=False)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ClusterError(f"{name} is not a node of this run.")

    async def host(self, name: str) -> Host:
        if self._local is not None:
            return self._local
        assert self._pool is not None
        return await self._pool.session(self.node(name))

    async def probe(self, names: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, str | None]:
        """Per node: None when it answers a fresh SSH login and a command now, else why not (a sentence)."""
        if self._local is not None:
            return {name: None for name in names}
        from cluster.ssh import open_session

        async def one(name: str) -> str | None:
            try:
                session = await asyncio.wait_for(
                    open_session(self.node(name), self._credentials, self._known_hosts, connect_timeout_s=timeout_s),
                    timeout_s * 2)
            except (ClusterError, asyncio.TimeoutError) as exc:
                return str(exc) or f"{name} did not answer within {timeout_s:g} s"
            try:
                await session.run(["true"], timeout_s=timeout_s)
                return None
            except ClusterError as exc:
                return str(exc)
            finally:
                await session.close()

        results = await asyncio.gather(*(one(name) for name in names))
        return dict(zip(names, results))

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> RunHosts:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, NodeUnreachable)
