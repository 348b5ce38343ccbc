"""Hostfiles and mlx.launch hosts JSON: every data case under data/hostfiles, and what we write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cluster.errors import ConfigError
from cluster.hostfile import (
    format_mlx_hosts_json,
    format_openmpi_hostfile,
    mlx_hosts_network,
    parse_host_list_file,
    parse_mlx_hosts_json,
    parse_openmpi_hostfile,
)
from cluster.inventory import Node, local_user

CASES = Path(__file__).parent / "data" / "hostfiles"
CASE_FILES = sorted([*CASES.glob("*.hostfile"), *CASES.glob("*.hosts.json")])

NODES = [
    Node("node1", "10.77.0.11", user="lab1", slots=2),
    Node("mini", "mini.local", port=2222, user="lab2"),
    Node("v6", "fe80::2", user="lab3"),
]


def _expectation(case: Path) -> dict[str, Any]:
    stem = case.name.split(".")[0]
    return json.loads((CASES / f"{stem}.expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASE_FILES, ids=[path.name for path in CASE_FILES])
def test_case(case: Path) -> None:
    expected = _expectation(case)
    if "nodes" in expected:
        nodes = [Node(**{"user": local_user(), **node}) for node in expected["nodes"]]
        assert parse_host_list_file(case) == nodes
    else:
        with pytest.raises(ConfigError) as raised:
            parse_host_list_file(case)
        assert raised.value.problems == expected["problems"]
        assert raised.value.path == str(case)


def test_every_case_has_an_expectation() -> None:
    assert CASE_FILES
    for case in CASE_FILES:
        _expectation(case)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as raised:
        parse_host_list_file(tmp_path / "hosts")
    assert raised.value.path == str(tmp_path / "hosts")


def test_openmpi_hostfile_layout() -> None:
    text = format_openmpi_hostfile(NODES)
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    assert lines[1:] == ["lab1@10.77.0.11 slots=2", "lab2@mini.local slots=1 port=2222", "lab3@fe80::2 slots=1"]
    assert format_openmpi_hostfile(NODES, with_users=False).splitlines()[1] == "10.77.0.11 slots=2"


def test_openmpi_hostfile_round_trip() -> None:
    parsed = parse_openmpi_hostfile(format_openmpi_hostfile(NODES))
    assert [(n.address, n.port, n.user, n.slots) for n in parsed] == [
        (n.address, n.port, n.user, n.slots) for n in NODES
    ]


def test_mlx_hosts_json_has_one_entry_per_rank() -> None:
    entries = json.loads(format_mlx_hosts_json(NODES))
    assert entries == [
        {"ssh": "node1", "ips": ["10.77.0.11"]},
        {"ssh": "node1", "ips": ["10.77.0.11"]},
        # A host name is no address for mlx's ring backend: leave ips empty rather than guess.
        {"ssh": "mini", "ips": []},
        {"ssh": "v6", "ips": ["fe80::2"]},
    ]


def test_mlx_hosts_json_uses_network_ips() -> None:
    entries = json.loads(format_mlx_hosts_json(NODES, network_ips={"mini": "192.168.2.2", "node1": "192.168.2.1"}))
    assert [entry["ips"] for entry in entries] == [["192.168.2.1"], ["192.168.2.1"], ["192.168.2.2"], ["fe80::2"]]


def test_mlx_hosts_json_empty() -> None:
    assert json.loads(format_mlx_hosts_json([])) == []


def test_mlx_reads_what_we_write(tmp_path: Path) -> None:
    common = pytest.importorskip("mlx._distributed_utils.common", reason="mlx's hostfile reader is not installed")
    path = tmp_path / "hosts.json"
    path.write_text(format_mlx_hosts_json(NODES))
    hosts = common.Hostfile.from_file(path).hosts
    assert [(h.rank, h.ssh_hostname, h.ips) for h in hosts] == [
        (0, "node1", ["10.77.0.11"]),
        (1, "node1", ["10.77.0.11"]),
        (2, "mini", []),
        (3, "v6", ["fe80::2"]),
    ]


def test_mlx_hosts_json_round_trip_keeps_names_and_slots() -> None:
    parsed = parse_mlx_hosts_json(format_mlx_hosts_json(NODES))
    # The ssh field is an alias: its name comes back as the node's name, its first ip as the address
    # ("mini" has a host name for an address, so its entry lists no ips).
    expected = [("node1", "10.77.0.11", 2), ("mini", "mini", 1), ("v6", "fe80::2", 1)]
    assert [(n.name, n.address, n.slots) for n in parsed] == expected


def test_mlx_hosts_network() -> None:
    text = (CASES / "mlx_list.hosts.json").read_text()
    assert mlx_hosts_network(text) is None  # the third host lists no ips
    bridge = {"node1": "192.168.2.1", "mini": "192.168.2.2", "v6": "192.168.2.3"}
    text = format_mlx_hosts_json(NODES, network_ips=bridge)
    assert mlx_hosts_network(text) == "192.168.2.0/24"


def test_sniffs_json_after_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text('\n\n  [{"ssh": "lab1@10.77.0.11"}]\n')
    assert parse_host_list_file(path) == [Node("node1", "10.77.0.11", user="lab1")]


def test_a_byte_order_mark_is_not_a_host(tmp_path: Path) -> None:
    path = tmp_path / "hostfile"
    path.write_bytes(b"\xef\xbb\xbfmini.local slots=2\n")
    assert parse_host_list_file(path) == [Node("mini", "mini.local", slots=2)]


def test_derived_names_never_repeat() -> None:
    nodes = parse_openmpi_hostfile("node2.lab\n10.77.0.12\nNODE2.other\n10.77.0.14\n")
    assert [n.name for n in nodes] == ["node2", "node3", "NODE2-2", "node4"]


def test_derived_names_avoid_the_clusters_names() -> None:
    nodes = parse_openmpi_hostfile("10.77.0.11\nmini.local\n", taken_names=["node1", "Mini"])
    assert [n.name for n in nodes] == ["node2", "mini-2"]


def test_corral_s_own_hosts_json_imports_with_reachable_addresses():
    from cluster.hostfile import format_mlx_hosts_json, parse_mlx_hosts_json
    from cluster.inventory import Node

    exported = format_mlx_hosts_json([Node("studio", "10.0.0.11", user="u"), Node("mini", "10.0.0.12", user="u")])
    nodes = parse_mlx_hosts_json(exported)
    assert [(n.name, n.address) for n in nodes] == [("studio", "10.0.0.11"), ("mini", "10.0.0.12")]
