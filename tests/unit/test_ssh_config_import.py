"""Importing nodes from the user's own ssh config, resolved with OpenSSH's rules."""

import json

import pytest

from cluster.cli import main
from cluster.errors import ConfigError
from cluster.ssh_config_import import nodes_from_ssh_config, ssh_config_aliases

CONFIG = """\
Host studio
    HostName 10.0.0.5
    User alice
    Port 2222
Host mini mini2
    HostName mini.local
Host *.corp !bad
    User x
Host *
    User fallback
    ServerAliveInterval 5
"""


def test_aliases_leave_out_wildcards():
    assert ssh_config_aliases(CONFIG) == ["mini", "mini2", "studio"]


def test_named_hosts_resolve_like_openssh():
    nodes = nodes_from_ssh_config(CONFIG, "config", ["studio", "mini"])
    assert [(n.name, n.address, n.port, n.user) for n in nodes] == [
        ("studio", "10.0.0.5", 2222, "alice"), ("mini", "mini.local", 22, "fallback")]


def test_naming_nothing_or_a_typo_lists_the_choices():
    with pytest.raises(ConfigError, match=r"3 host\(s\) \(mini, mini2, studio\); name the ones to import"):
        nodes_from_ssh_config(CONFIG, "config", [])
    with pytest.raises(ConfigError, match="has no Host 'stdio'; its hosts are: mini, mini2, studio"):
        nodes_from_ssh_config(CONFIG, "config", ["stdio"])


def test_cli_imports_from_an_ssh_config(tmp_path, capsys):
    config = tmp_path / "config"
    config.write_text(CONFIG)
    home = str(tmp_path / "home")
    assert main(["--home", home, "node", "import", str(config), "studio"]) == 0
    capsys.readouterr()
    main(["--home", home, "node", "list", "--json"])
    nodes = json.loads(capsys.readouterr().out)["nodes"]
    assert nodes == [{"name": "studio", "address": "10.0.0.5", "port": 2222, "user": "alice", "slots": 1}]
