"""Inventory operations: adding, selecting, removing nodes and the MPI network default."""

import pytest

from cluster.errors import ClusterError
from cluster.inventory import Inventory, Node, covering_subnet, default_node_name, split_destination


def make(*nodes: Node, network: str | None = None) -> Inventory:
    inventory = Inventory(network=network)
    for node in nodes:
        inventory = inventory.with_node(node)
    return inventory


def test_duplicate_name_and_address_are_refused_with_the_next_step():
    inventory = make(Node("node1", "10.0.0.11", user="a"))
    with pytest.raises(ClusterError, match="named 'node1' already exists.*--name"):
        inventory.with_node(Node("node1", "10.0.0.12", user="a"))
    with pytest.raises(ClusterError, match="10.0.0.11:22 is already in the cluster as 'node1'"):
        inventory.with_node(Node("other", "10.0.0.11", user="a"))


def test_select_reports_every_unknown_name_with_did_you_mean():
    inventory = make(Node("studio", "10.0.0.11", user="a"), Node("mini", "10.0.0.12", user="a"))
    assert [n.name for n in inventory.select(None)] == ["studio", "mini"]
    assert [n.name for n in inventory.select(["mini"])] == ["mini"]
    with pytest.raises(ClusterError) as error:
        inventory.select(["studoi", "nope"])
    assert "Did you mean 'studio'?" in str(error.value)
    assert "'nope'" in str(error.value)


def test_without_removes_only_that_node():
    inventory = make(Node("a", "10.0.0.1", user="u"), Node("b", "10.0.0.2", user="u"))
    assert inventory.without("a").names() == ["b"]
    with pytest.raises(ClusterError, match="no node named 'c'"):
        inventory.without("c")


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (["10.77.0.11", "10.77.0.12"], "10.77.0.0/24"),
        (["10.77.0.11", "10.77.1.12"], "10.77.0.0/23"),
        (["192.168.1.5"], "192.168.1.0/24"),
        (["10.0.0.1", "mac.local"], None),
        (["fe80::1"], None),
        ([], None),
    ],
)
def test_covering_subnet(addresses, expected):
    assert covering_subnet(addresses) == expected


def test_configured_network_wins_over_the_nodes_subnet():
    nodes = (Node("a", "10.0.0.1", user="u"),)
    assert Inventory(nodes).effective_network() == "10.0.0.0/24"
    assert Inventory(nodes, network="169.254.0.0/16").effective_network() == "169.254.0.0/16"


def test_default_names_come_from_host_names_else_count_up():
    inventory = make(Node("node1", "10.0.0.1", user="u"))
    assert default_node_name("10.0.0.2", inventory) == "node2"
    assert default_node_name("studio.local", inventory) == "studio"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", (None, "10.0.0.5", None)),
        ("lab1@10.0.0.5", ("lab1", "10.0.0.5", None)),
        ("lab1@mac.local:2222", ("lab1", "mac.local", 2222)),
        ("[fe80::1]:22", (None, "fe80::1", 22)),
        ("fe80::1", (None, "fe80::1", None)),
    ],
)
def test_split_destination(text, expected):
    assert split_destination(text) == expected


def test_split_destination_explains_a_bad_port():
    with pytest.raises(ClusterError, match="port after ':' must be a number"):
        split_destination("host:ssh")


def test_select_keeps_the_order_given_without_repeats():
    inventory = make(Node("a", "10.0.0.1", user="u"), Node("b", "10.0.0.2", user="u"), Node("c", "10.0.0.3", user="u"))
    assert [n.name for n in inventory.select(["c", "a", "c"])] == ["c", "a"]
