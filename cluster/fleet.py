"""Run one coroutine per node concurrently and report every node's outcome; one failure stops no other."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from cluster.errors import ClusterError
from cluster.inventory import Node

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 32


@dataclass(frozen=True)
class NodeOutcome(Generic[T]):
    """What happened on one node: a value, or the error to show beside the node."""

    node: Node
    value: T | None = None
    error: BaseException | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def message(self) -> str:
        """The sentence to show for a failure; an unexpected exception says it is a bug."""
        if self.error is None:
            return "ok"
        if isinstance(self.error, ClusterError):
            return str(self.error)
        return f"{self.node.name}: unexpected error (a bug in corral, please report it): {self.error!r}"


async def for_each_node(
    nodes: Sequence[Node],
    action: Callable[[Node], Awaitable[T]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[NodeOutcome[T]]:
    """``action(node)`` for every node at once (at most ``concurrency`` at a time), in the nodes' order."""
    limit = asyncio.Semaphore(concurrency)

    async def one(node: Node) -> NodeOutcome[T]:
        async with limit:
            started = time.monotonic()
            try:
                value = await action(node)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every node's failure is reported, never raised
                if not isinstance(exc, ClusterError):
                    log.error("unexpected error on %s:\n%s", node.name, traceback.format_exc())
                return NodeOutcome(node, error=exc, elapsed_s=time.monotonic() - started)
            return NodeOutcome(node, value=value, elapsed_s=time.monotonic() - started)

    return list(await asyncio.gather(*(one(node) for node in nodes)))
