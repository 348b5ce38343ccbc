"""corral export and ssh-config against the real cluster: the files work with mpirun and ssh, verbatim."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.integration.corral_cli import CorralCli
from tests.integration.node_site import shared_site

pytestmark = pytest.mark.integration


def test_mpirun_script_runs_on_every_node(keyed_cluster, tmp_path):
    cluster, corral = keyed_cluster
    corral.ok("export", str(tmp_path / "out"))
    script = tmp_path / "out" / "mpirun.sh"
    result = subprocess.run([str(script), "hostname"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    hostnames = sorted(line.split(":", 1)[1] for line in result.stdout.splitlines() if "<stdout>:" in line)
    assert hostnames == sorted(node.hostname for node in cluster.nodes)


def test_printed_mpirun_line_works_verbatim_in_a_shell(keyed_cluster, tmp_path):
    cluster, corral = keyed_cluster
    printed = corral.ok("export", str(tmp_path / "out")).stdout
    line = next(l.strip() for l in printed.splitlines() if l.strip().startswith("mpirun "))
    command = line.replace("PROGRAM ARGS...", "hostname")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(node.hostname in result.stdout for node in cluster.nodes)


def test_exported_files_describe_the_cluster(keyed_cluster, tmp_path):
    cluster, corral = keyed_cluster
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


def test_ssh_config_install_makes_plain_ssh_work_and_uninstall_restores(keyed_cluster, tmp_path):
    cluster, corral = keyed_cluster
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


def test_export_to_a_path_with_spaces_is_refused_clearly(keyed_cluster, tmp_path):
    _, corral = keyed_cluster
    result = corral.run("export", str(tmp_path / "my exports"))
    assert result.returncode == 1
    assert "contains a space" in result.stderr
    assert not (tmp_path / "my exports").exists()


def test_mlx_launch_line_is_printed(keyed_cluster, tmp_path):
    _, corral = keyed_cluster
    printed = corral.ok("export", str(tmp_path / "out")).stdout
    line = next(l.strip() for l in printed.splitlines() if l.strip().startswith("mlx.launch "))
    assert shlex.split(line)[:5] == ["mlx.launch", "--backend", "ring", "--hostfile", str(tmp_path / "out" / "hosts.json")]


ALL_SUM_SCRIPT = """\
import socket
import mlx.core as mx
group = mx.distributed.init(backend="ring", strict=True)
total = mx.distributed.all_sum(mx.ones(1)).item()
print(f"rank {group.rank()} of {group.size()} on {socket.gethostname()}: all_sum={total:g}", flush=True)
"""


@pytest.fixture(scope="module")
def mlx_on_nodes(keyed_cluster):
    """MLX importable by each node user's plain `python3`, as a user with MLX installed would have it.

    The wheel is installed once into a directory every node sees (the nodes have no network) and added
    to each user's site-packages with a .pth file.
    """
    cluster, _ = keyed_cluster
    mlx_site = shared_site("mlx", "mlx[cpu]")
    for node in cluster.nodes:
        version = node.run(["python3", "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                           as_user=True).stdout.strip()
        site = node.home_on_host / ".local" / "lib" / f"python{version}" / "site-packages"
        site.mkdir(parents=True, exist_ok=True)
        (site / "corral-test-mlx.pth").write_text(f"{mlx_site}\n")
        for path in [site, *site.parents]:
            if path == node.home_on_host:
                break
            os.chown(path, node.uid, node.uid)
    return cluster


def test_printed_mlx_launch_line_works_verbatim_with_the_installed_ssh_config(keyed_cluster, mlx_on_nodes, tmp_path):
    cluster, corral = keyed_cluster
    printed = corral.ok("export", str(tmp_path / "out")).stdout
    line = next(l.strip() for l in printed.splitlines() if l.strip().startswith("mlx.launch "))
    # The script sits in a directory every node sees at the same path, as mlx.launch expects.
    work = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="corral-mlx-launch-"))
    try:
        (work / "SCRIPT.py").write_text(ALL_SUM_SCRIPT)
        work.chmod(0o755)
        # What `corral ssh-config --install` does for a user: plain `ssh NODE` reads corral's config.
        # (OpenSSH reads ~/.ssh from the passwd home, so the test puts an `ssh` first on PATH instead.)
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {tmp_path / "out" / "ssh_config"} "$@"\n')
        (bin_dir / "ssh").chmod(0o755)
        env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
        result = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(work)
    assert result.returncode == 0, result.stdout + result.stderr
    reports = sorted(l for l in result.stdout.splitlines() if "all_sum=" in l)
    assert len(reports) == len(cluster.nodes), result.stdout + result.stderr
    for rank, node in enumerate(cluster.nodes):
        assert f"rank {rank} of {len(cluster.nodes)} on {node.hostname}: all_sum={len(cluster.nodes)}" in reports[rank]
