"""for_each_node: every node's outcome is reported and one failure stops no other."""

import asyncio

from cluster.errors import NodeUnreachable
from cluster.fleet import for_each_node
from cluster.inventory import Node
from cluster.ssh import Credentials

NODES = [Node(f"n{i}", f"10.0.0.{i}", user="u") for i in range(1, 5)]


def test_failures_are_outcomes_and_the_rest_finish():
    async def action(node: Node) -> str:
        await asyncio.sleep(0.01 * int(node.name[1:]))
        if node.name == "n2":
            raise NodeUnreachable(node.name, "n2 refused the connection")
        if node.name == "n3":
            raise ValueError("boom")
        return node.name.upper()

    outcomes = asyncio.run(for_each_node(NODES, action))
    assert [o.node.name for o in outcomes] == ["n1", "n2", "n3", "n4"]
    assert [o.value for o in outcomes if o.ok] == ["N1", "N4"]
    assert outcomes[1].message == "n2 refused the connection"
    assert "a bug in corral" in outcomes[2].message and "boom" in outcomes[2].message


def test_concurrency_limit_is_respected():
    running = 0
    peak = 0

    async def action(node: Node) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    asyncio.run(for_each_node(NODES, action, concurrency=2))
    assert peak == 2


def test_credentials_never_show_the_password():
    assert "hunter2" not in repr(Credentials(password="hunter2"))
