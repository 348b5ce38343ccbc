"""The cluster's client ssh config and the Include line in the user's ~/.ssh/config."""

import stat

from cluster.home import CorralHome
from cluster.inventory import Node
from cluster.ssh_config import client_ssh_config, install_include, uninstall_include

NODES = [Node("node1", "10.0.0.11", user="lab1"), Node("studio", "10.0.0.12", port=2222, user="me")]


def test_client_config_has_user_key_and_strict_known_hosts(tmp_path):
    home = CorralHome(tmp_path / "my home")
    text = client_ssh_config(NODES, home)
    block = text.split("Host studio 10.0.0.12\n")[1]
    assert "HostName 10.0.0.12" in block and "Port 2222" in block and "User me" in block
    assert f'IdentityFile "{home.private_key_path}"' in block  # quoted: the home has a space
    assert f'UserKnownHostsFile "{home.known_hosts_path}"' in block
    assert "StrictHostKeyChecking yes" in block and "BatchMode yes" in block


def test_install_puts_include_first_once_and_uninstall_restores_the_file(tmp_path):
    home = CorralHome(tmp_path / "corral")
    config = tmp_path / "ssh" / "config"
    config.parent.mkdir()
    original = "Host work\n    User me\n"
    config.write_text(original)
    config.chmod(0o600)
    assert install_include(home, config) is True
    assert install_include(home, config) is False
    text = config.read_text()
    assert text.count("Include") == 1 and text.index("Include") < text.index("Host work")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert uninstall_include(home, config) is True
    assert config.read_text() == original
    assert uninstall_include(home, config) is False


def test_install_creates_a_private_config_when_there_is_none(tmp_path):
    home = CorralHome(tmp_path / "corral")
    config = tmp_path / "fresh" / ".ssh" / "config"
    install_include(home, config)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700


def test_a_symlinked_config_is_edited_through_the_link(tmp_path):
    home = CorralHome(tmp_path / "corral")
    real = tmp_path / "dotfiles" / "ssh_config"
    real.parent.mkdir()
    real.write_text("Host work\n")
    link = tmp_path / ".ssh" / "config"
    link.parent.mkdir()
    link.symlink_to(real)
    install_include(home, link)
    assert link.is_symlink() and "Include" in real.read_text()
    uninstall_include(home, link)
    assert link.is_symlink() and real.read_text() == "Host work\n"
