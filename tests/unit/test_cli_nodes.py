"""`corral node …` and `corral network` end to end in-process: the inventory file they leave behind."""

from __future__ import annotations

import json

import pytest

from cluster.cli import main


@pytest.fixture
def corral(tmp_path, capsys):
    home = tmp_path / "home"

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--home", str(home), *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    run.home = home  # type: ignore[attr-defined]  # the test reads the files corral wrote
    return run


def test_add_list_remove_round_trip(corral):
    assert corral("node", "add", "10.0.0.11", "--user", "lab1")[0] == 0
    assert corral("node", "add", "lab2@studio.local:2222", "--slots", "2")[0] == 0
    code, out, _ = corral("node", "list", "--json")
    listed = json.loads(out)
    assert listed["nodes"] == [
        {"name": "node1", "address": "10.0.0.11", "port": 22, "user": "lab1", "slots": 1},
        {"name": "studio", "address": "studio.local", "port": 2222, "user": "lab2", "slots": 2},
    ]
    assert listed["network"] is None  # a host name: the subnet cannot be derived
    code, out, _ = corral("node", "remove", "studio")
    assert code == 0 and "corral node add lab2@studio.local:2222 --name studio --slots 2" in out
    assert [n["name"] for n in json.loads(corral("node", "list", "--json")[1])["nodes"]] == ["node1"]
    # The ssh config is regenerated with the inventory.
    assert "Host node1 10.0.0.11" in (corral.home / "ssh_config").read_text()
    assert "studio" not in (corral.home / "ssh_config").read_text()


def test_bad_input_is_one_sentence_and_changes_nothing(corral):
    corral("node", "add", "10.0.0.11", "--user", "lab1")
    before = (corral.home / "cluster.yaml").read_bytes()
    for args, expected in [
        (("node", "add", "10.0.0.11", "--user", "x"), "10.0.0.11:22 is already in the cluster as 'node1'"),
        (("node", "add", "10.0.0.12", "--name", "node1"), "A node named 'node1' already exists"),
        (("node", "add", "10.0.0.12", "--port", "70000"), "--port: 70000 is not a TCP port"),
        (("node", "add", "10.0.0.12", "--slots", "0"), "--slots: 0 must be at least 1"),
        (("node", "remove", "nod1"), "Did you mean 'node1'?"),
        (("network", "wifi"), "network: 'wifi' is not a network"),
    ]:
        code, _, err = corral(*args)
        assert code == 1 and expected in err, (args, err)
    assert (corral.home / "cluster.yaml").read_bytes() == before


def test_network_set_and_back_to_auto(corral):
    corral("node", "add", "10.0.0.11", "--user", "lab1")
    assert "10.0.0.0/24 (the nodes' own subnet)" in corral("network")[1]
    assert "169.254.0.0/16 (set)" in corral("network", "169.254.0.0/16")[1]
    assert json.loads(corral("node", "list", "--json")[1])["network"] == "169.254.0.0/16"
    assert "10.0.0.0/24 (the nodes' own subnet)" in corral("network", "--auto")[1]


def test_a_broken_inventory_is_reported_and_never_overwritten(corral):
    corral.home.mkdir()
    broken = "nodes:\n  - name: a\n    adress: 10.0.0.1\n"
    (corral.home / "cluster.yaml").write_text(broken)
    code, _, err = corral("node", "add", "10.0.0.2")
    assert code == 1
    assert "line 3" in err and "did you mean 'address'" in err
    assert (corral.home / "cluster.yaml").read_text() == broken


def test_import_an_open_mpi_hostfile(corral, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# lab\nlab1@10.0.0.11 slots=2\n10.0.0.12\n")
    code, out, _ = corral("node", "import", str(hostfile))
    assert code == 0 and "Imported 2 node(s)" in out
    nodes = json.loads(corral("node", "list", "--json")[1])["nodes"]
    assert [(n["address"], n["slots"]) for n in nodes] == [("10.0.0.11", 2), ("10.0.0.12", 1)]
    assert nodes[0]["user"] == "lab1"


def test_overview_without_a_command(corral):
    code, out, _ = corral()
    assert code == 0 and "corral discover" in out


def test_node_add_checks_each_field_before_touching_the_file(corral):
    for args, expected in [
        (("node", "add", "10.0.0.12", "--name", "a b"), "--name: 'a b' is not a usable node name"),
        (("node", "add", "10.0.0.12", "--user=-oProxyCommand=x"), "--user: '-oProxyCommand=x' is not a login name"),
        (("node", "add", "10.0.0.12", "--port", "0"), "--port: 0 is not a TCP port"),
        (("network", "10.0.0.5"), "network: '10.0.0.5' has no prefix length; write a CIDR such as 10.0.0.0/24."),
        (("network", "10.0.0.5/24"), "has host bits set; did you mean '10.0.0.0/24'?"),
    ]:
        code, _, err = corral(*args)
        assert code == 1 and expected in err, (args, err)
    assert not (corral.home / "cluster.yaml").exists()
