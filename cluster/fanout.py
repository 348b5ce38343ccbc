"""Run one command on many nodes at once over pooled connections, each line attributed to its node."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cluster.fleet import NodeOutcome, for_each_node
from cluster.inventory import Node
from cluster.ssh import CommandResult, SessionPool

OnNodeLine = Callable[[Node, str, str], None]  # (node, "stdout"/"stderr", line)


async def run_on_nodes(
    pool: SessionPool,
    nodes: Sequence[Node],
    argv: Sequence[str],
    *,
    on_line: OnNodeLine | None = None,
    timeout_s: float | None = None,
) -> list[NodeOutcome[CommandResult]]:
    """``argv`` on every node concurrently; a non-zero exit or a dead node is that node's outcome only."""

    async def run_one(node: Node) -> CommandResult:
        session = await pool.session(node)
        forward = None if on_line is None else (lambda stream, line: on_line(node, stream, line))
        return await session.run(argv, check=True, timeout_s=timeout_s, on_line=forward)

    return await for_each_node(nodes, run_one)
