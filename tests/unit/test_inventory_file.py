"""cluster.yaml: every data case under data/inventory, round trips, and saves that never lose a file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cluster.errors import ConfigError
from cluster.inventory import Inventory, Node, local_user
from cluster.inventory_file import dump_inventory, load_inventory, parse_inventory, save_inventory

CASES = Path(__file__).parent / "data" / "inventory"
CASE_FILES = sorted(CASES.glob("*.yaml"))

BROKEN = """\
version: 1
nodes:
  - name: node1
    address: 10.77.0.11
    port: ssh
  - name: node1
    adress: 10.77.0.12
"""


def _expected_inventory(data: dict[str, Any]) -> Inventory:
    nodes = tuple(Node(**{"user": local_user(), **node}) for node in data["nodes"])
    return Inventory(nodes=nodes, network=data["network"])


@pytest.mark.parametrize("case", CASE_FILES, ids=[path.stem for path in CASE_FILES])
def test_case(case: Path) -> None:
    expected = json.loads(case.with_suffix(".expected.json").read_text(encoding="utf-8"))
    if "inventory" in expected:
        assert load_inventory(case) == _expected_inventory(expected["inventory"])
    else:
        with pytest.raises(ConfigError) as raised:
            load_inventory(case)
        assert raised.value.problems == expected["problems"]
        assert raised.value.path == str(case)


def test_every_case_has_an_expectation() -> None:
    assert CASE_FILES
    for case in CASE_FILES:
        assert case.with_suffix(".expected.json").exists(), case.name


ROUND_TRIPS = [
    Inventory(),
    Inventory(nodes=(Node("node1", "10.77.0.11", user="lab1"),), network="10.77.0.0/24"),
    Inventory(
        nodes=(
            # Values YAML would read as something else unless dump_inventory quotes them.
            Node("1e3", "::1", port=2222, user="yes", slots=8),
            Node("null", "fe80::1%en0", user="on"),
            Node("n.o_d-e", "host.example.com.", user="0755"),
        ),
        network="fd00::/64",
    ),
]


@pytest.mark.parametrize("inventory", ROUND_TRIPS)
def test_dump_then_parse_is_the_same_inventory(inventory: Inventory) -> None:
    assert parse_inventory(dump_inventory(inventory)) == inventory


def test_dump_layout() -> None:
    inventory = Inventory(nodes=(Node("node1", "10.77.0.11", user="lab1"),), network="10.77.0.0/24")
    text = dump_inventory(inventory)
    header, body = text.split("version:", 1)
    assert all(line.startswith("# ") for line in header.splitlines())
    assert "edit it by hand" in header
    assert "version:" + body == (
        "version: 1\n"
        "network: 10.77.0.0/24\n"
        "nodes:\n"
        "  - name: node1\n"
        "    address: 10.77.0.11\n"
        "    port: 22\n"
        "    user: lab1\n"
        "    slots: 1\n"
    )


def test_dump_leaves_out_an_unset_network() -> None:
    assert "network:" not in dump_inventory(Inventory(nodes=(Node("node1", "10.77.0.11"),)))


def test_missing_file_is_an_empty_inventory(tmp_path: Path) -> None:
    assert load_inventory(tmp_path / "nowhere" / "cluster.yaml") == Inventory()


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_inventory(tmp_path)  # a directory


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(b"nodes: [\xff]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_inventory(path)


def test_error_lists_every_problem_in_one_sentence_per_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as raised:
        load_inventory(path)
    assert str(raised.value) == (
        f"{path} has 3 problems:\n"
        "  - line 5: nodes[0].port: expected an integer from 1 to 65535, got 'ssh'\n"
        "  - line 6: nodes[1].name: 'node1' is also the name of nodes[0] on line 3; node names must be unique\n"
        "  - line 7: nodes[1]: unknown key 'adress'; did you mean 'address'?"
    )


def test_save_then_load(tmp_path: Path) -> None:
    path = tmp_path / "home" / "cluster.yaml"
    inventory = Inventory(nodes=(Node("node1", "10.77.0.11", user="lab1", slots=2),), network="10.77.0.0/24")
    save_inventory(path, inventory)
    assert load_inventory(path) == inventory
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_save_replaces_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    save_inventory(path, Inventory(nodes=(Node("node1", "10.77.0.11"),)))
    save_inventory(path, Inventory())
    assert load_inventory(path) == Inventory()
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.yaml"]


@pytest.mark.parametrize(
    "content",
    [BROKEN, "nodes: [\n", "- a list\n", b"\xff\xfe not text"],
    ids=["wrong-type-and-duplicate", "syntax", "not-a-mapping", "not-utf8"],
)
def test_save_never_overwrites_a_file_it_cannot_read(tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "cluster.yaml"
    raw = content.encode() if isinstance(content, str) else content
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as refused:
        save_inventory(path, Inventory(nodes=(Node("node9", "10.77.0.19"),)))
    with pytest.raises(ConfigError) as loaded:
        load_inventory(path)
    assert refused.value.problems == loaded.value.problems
    assert path.read_bytes() == raw
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.yaml"]


def test_save_refuses_content_it_could_not_read_back(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    save_inventory(path, Inventory(nodes=(Node("node1", "10.77.0.11"),)))
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="not saved") as raised:
        save_inventory(path, Inventory(nodes=(Node("bad name", "10.77.0.12"),)))
    assert "'bad name' is not a usable node name" in raised.value.problems[0]
    assert path.read_bytes() == before


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cluster.yaml"
    save_inventory(path, Inventory(nodes=(Node("node1", "10.77.0.11"),)))
    before = path.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_inventory(path, Inventory())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cluster.yaml"]


def test_a_byte_order_mark_is_not_content(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(b"\xef\xbb\xbfnodes:\n  - {name: node1, address: 10.77.0.11}\n")
    assert load_inventory(path).names() == ["node1"]


def test_project_round_trips_and_must_be_absolute():
    inventory = Inventory(nodes=(Node("a", "10.0.0.1", user="u"),), project="/home/me/my project")
    assert parse_inventory(dump_inventory(inventory)) == inventory
    with pytest.raises(ConfigError, match=r"line 2: project: expected the absolute path of the project folder, got 'src'"):
        parse_inventory("version: 1\nproject: src\nnodes: []\n")
