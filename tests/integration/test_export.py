"""corral export and ssh-config against the real cluster: the files work with mpirun and ssh, verbatim."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from tests.integration.corral_cli import CorralCli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ready(test_cluster, tmp_path_factory):
    corral = CorralCli(tmp_path_factory.mktemp("corral") / "home")
    corral.add_nodes(test_cluster.nodes)
    corral.install_keys(test_cluster.nodes)
    return test_cluster, corral


def test_mpirun_script_runs_on_every_node(ready, tmp_path):
    cluster, corral = ready
    corral.ok("export", str(tmp_path / "out"))
    script = tmp_path / "out" / "mpirun.sh"
    result = subprocess.run([str(script), "hostname"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    hostnames = sorted(line.split(":", 1)[1] for line in result.stdout.splitlines() if "<stdout>:" in line)
    assert hostnames == sorted(node.hostname for node in cluster.nodes)


def test_printed_mpirun_line_works_verbatim_in_a_shell(ready, tmp_path):
    cluster, corral = ready
    printed = corral.ok("export", str(tmp_path / "out")).stdout
    line = next(l.strip() for l in printed.splitlines() if l.strip().startswith("mpirun "))
    command = line.replace("PROGRAM ARGS...", "hostname")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(node.hostname in result.stdout for node in cluster.nodes)


def test_exported_files_describe_the_cluster(ready, tmp_path):
    cluster, corral = ready
    corral.ok("export", str(tmp_path / "out"))
    hostfile = (tmp_path / "out" / "hostfile").read_text()
    for node in cluster.nodes:
        assert f"{node.user}@{node.address} slots=1" in hostfile
    hosts = json.loads((tmp_path / "out" / "hosts.json").read_text())
    assert [entry["ssh"] for entry in hosts] == [node.name for node in cluster.nodes]
    config = tmp_path / "out" / "ssh_config"
    for node in cluster.nodes:
        out = subprocess.run(["ssh", "-F", str(config), node.name, "hostname"], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == node.hostname, out.stderr


def test_ssh_config_install_makes_plain_ssh_work_and_uninstall_restores(ready, tmp_path):
    cluster, corral = ready
    user_config = tmp_path / "dot-ssh" / "config"
    user_config.parent.mkdir()
    original = "Host elsewhere\n    User me\n"
    user_config.write_text(original)
    corral.ok("ssh-config", "--install", "--file", str(user_config))
    corral.ok("ssh-config", "--install", "--file", str(user_config))
    assert user_config.read_text().count("Include") == 1
    node = cluster.nodes[1]
    # OpenSSH reads ~/.ssh from the passwd home, so point it at the edited file as `ssh` would read it.
    out = subprocess.run(["ssh", "-F", str(user_config), node.name, "hostname"], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == node.hostname, out.stderr
    corral.ok("ssh-config", "--uninstall", "--file", str(user_config))
    assert user_config.read_text() == original


def test_export_to_a_path_with_spaces_is_refused_clearly(ready, tmp_path):
    _, corral = ready
    result = corral.run("export", str(tmp_path / "my exports"))
    assert result.returncode == 1
    assert "contains a space" in result.stderr
    assert not (tmp_path / "my exports").exists()


def test_mlx_launch_line_is_printed(ready, tmp_path):
    _, corral = ready
    printed = corral.ok("export", str(tmp_path / "out")).stdout
    line = next(l.strip() for l in printed.splitlines() if l.strip().startswith("mlx.launch "))
    assert shlex.split(line)[:5] == ["mlx.launch", "--backend", "ring", "--hostfile", str(tmp_path / "out" / "hosts.json")]
