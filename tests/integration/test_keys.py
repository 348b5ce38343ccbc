"""corral keys against real sshd: key install, node↔node access, host-key policy, passwords kept secret."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.corral_cli import CorralCli

pytestmark = pytest.mark.integration


@pytest.fixture
def corral(tmp_path: Path) -> CorralCli:
    return CorralCli(tmp_path / "corral-home")


def authorized_keys(node) -> list[str]:
    return (node.home_on_host / ".ssh" / "authorized_keys").read_text().splitlines()


def test_keys_installs_once_then_every_node_reaches_every_other(cluster_factory, corral):
    cluster = cluster_factory(3)
    corral.add_nodes(cluster.nodes)
    result = corral.install_keys(cluster.nodes)
    for node in cluster.nodes:
        assert f"accepted new host key {node.host_key_fingerprint}" in result.stderr
        assert f"{node.name}: reaches 2 other node(s) by key" in result.stdout

    public_key = corral.paths.public_key_path.read_text().strip()
    assert oct(corral.paths.private_key_path.stat().st_mode & 0o777) == "0o600"
    for node in cluster.nodes:
        assert authorized_keys(node).count(public_key) == 1
        ssh_dir = node.home_on_host / ".ssh"
        assert oct(ssh_dir.stat().st_mode & 0o777) == "0o700"
        assert oct((ssh_dir / "authorized_keys").stat().st_mode & 0o777) == "0o600"

    # A second run needs no password (stdin is empty and not a terminal) and adds no line.
    before = {node.name: authorized_keys(node) for node in cluster.nodes}
    corral.ok("keys")
    assert {node.name: authorized_keys(node) for node in cluster.nodes} == before

    # Node↔node, as mpirun does it: plain ssh by address and by name, no prompt, host keys known.
    for source in cluster.nodes:
        for target in cluster.nodes:
            if target is source:
                continue
            for how in (target.address, target.name):
                out = source.run(["ssh", "-o", "BatchMode=yes", how, "hostname"], as_user=True)
                assert out.stdout.strip() == target.hostname


def test_password_is_never_written_or_shown(cluster_factory, corral):
    cluster = cluster_factory(2)
    corral.add_nodes(cluster.nodes)
    passwords = [node.password for node in cluster.nodes]
    seen: list[str] = []
    done = threading.Event()

    def watch_processes() -> None:
        # Scan every process's command line and environment while corral runs.
        while not done.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                for part in ("cmdline", "environ"):
                    try:
                        data = (proc / part).read_bytes()
                    except OSError:
                        continue
                    seen.extend(p for p in passwords if p.encode() in data)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_processes)
    watcher.start()
    try:
        corral.install_keys(cluster.nodes)
    finally:
        done.set()
        watcher.join()
    assert seen == []
    for path in corral.home.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not any(p.encode() in content for p in passwords), f"password found in {path}"
    assert corral.paths.log_path.exists()


def test_wrong_password_fails_that_node_only(cluster_factory, corral):
    cluster = cluster_factory(3)
    corral.add_nodes(cluster.nodes)
    lines = [node.password for node in cluster.nodes]
    lines[1] = "not-the-password"
    result = corral.run("keys", "--password-stdin", "--accept-new", "--no-mesh", input="\n".join(lines) + "\n")
    assert result.returncode == 1
    node2 = cluster.nodes[1]
    assert f"{node2.name} ({node2.user}@{node2.address}:22) rejected the password for '{node2.user}'" in result.stderr
    assert f"{cluster.nodes[0].name}: corral's key works" in result.stdout
    assert f"{cluster.nodes[2].name}: corral's key works" in result.stdout


def test_unknown_host_key_is_refused_without_acceptance(cluster_factory, corral):
    cluster = cluster_factory(1)
    corral.add_nodes(cluster.nodes)
    node = cluster.nodes[0]
    result = corral.run("keys", "--password-stdin", input=node.password + "\n")
    assert result.returncode == 1
    assert node.host_key_fingerprint in result.stderr
    assert f"corral keys {node.name} --accept-new" in result.stderr
    assert not corral.paths.known_hosts_path.exists()
    assert not (node.home_on_host / ".ssh" / "authorized_keys").exists()


def test_changed_host_key_is_refused_and_nothing_is_modified(cluster_factory, corral):
    cluster = cluster_factory(2)
    corral.add_nodes(cluster.nodes)
    corral.install_keys(cluster.nodes)
    node = cluster.nodes[0]
    old_fingerprint = node.host_key_fingerprint
    node.regenerate_host_key()
    known_before = corral.paths.known_hosts_path.read_bytes()
    keys_before = authorized_keys(node)

    for args in (("exec", "--", "true"), ("keys", "--accept-new")):
        result = corral.run(*args, input=node.password + "\n")
        assert result.returncode == 1
        message = [line for line in result.stderr.splitlines() if node.host_key_fingerprint in line]
        assert message, result.stderr
        assert old_fingerprint in message[0] and node.name in message[0]
        assert "Nothing was changed" in message[0]
    assert corral.paths.known_hosts_path.read_bytes() == known_before
    assert authorized_keys(node) == keys_before
    # The other node is unaffected.
    assert cluster.nodes[1].name + " | " + cluster.nodes[1].hostname in corral.run("exec", "--", "hostname").stdout

    # The documented way out after a reinstall works.
    corral.ok("node", "forget-host-key", node.name)
    corral.ok("keys", node.name, "--accept-new", "--no-mesh")


def one_error_line(result: subprocess.CompletedProcess[str], node_name: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"corral: {node_name} ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_each_connection_fault_is_one_line_naming_the_node(cluster_factory, corral):
    cluster = cluster_factory(3)
    corral.add_nodes(cluster.nodes)
    corral.install_keys(cluster.nodes)
    good, down, keyless = cluster.nodes
    down.stop_sshd()
    key_line = corral.paths.public_key_path.read_text().strip()
    keys_file = keyless.home_on_host / ".ssh" / "authorized_keys"
    keys_file.write_text("".join(f"{line}\n" for line in authorized_keys(keyless) if line != key_line))
    # An address nobody answers, and a port nothing listens on.
    corral.ok("node", "add", f"{cluster.subnet.rsplit('.', 1)[0]}.250", "--user", "ghost", "--name", "ghost")
    corral.ok("node", "add", f"{good.address}:2222", "--user", good.user, "--name", "closedport")

    result = corral.run("exec", "--timeout-s", "20", "--", "hostname", timeout=60)
    assert result.returncode == 1
    assert [line.split() for line in result.stdout.splitlines()] == [[good.name, "|", good.hostname]]
    assert "refused the connection on port 22" in one_error_line(result, down.name)
    assert "did not accept corral's key; run `corral keys" in one_error_line(result, keyless.name)
    ghost = one_error_line(result, "ghost")
    assert "did not answer" in ghost or "is unreachable" in ghost
    assert "refused the connection on port 2222" in one_error_line(result, "closedport")
    assert "1 of 5 node(s) succeeded" in result.stderr


def test_keys_cli_without_terminal_or_password_says_what_to_do(cluster_factory, corral):
    cluster = cluster_factory(1)
    corral.add_nodes(cluster.nodes)
    node = cluster.nodes[0]
    result = corral.run("keys", "--accept-new")
    assert result.returncode == 1
    assert f"{node.name} ({node.user}@{node.address}:22) does not accept corral's key yet and no password was given" in result.stderr


def test_password_stdin_with_the_wrong_number_of_lines_is_refused(cluster_factory, corral):
    cluster = cluster_factory(2)
    corral.add_nodes(cluster.nodes)
    result = corral.run("keys", "--password-stdin", "--accept-new", input="only-one\nand-two\nand-three\n")
    assert result.returncode == 1
    assert "read 3 non-empty line(s) for 2 node(s)" in result.stderr
