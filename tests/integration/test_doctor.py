"""corral doctor against the test cluster: a healthy cluster passes, and each check broken once names node and fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.layout import RemoteLayout
from cluster.state import load_cluster
from tests.integration.corral_cli import CorralCli

pytestmark = pytest.mark.integration

# Shared with tests/integration/test_env.py, so repeated runs reuse the downloaded wheels.
WHEEL_CACHE = Path(os.environ.get("CORRAL_TEST_WHEEL_CACHE", "/var/tmp/corral-test-wheel-cache"))
# A different MLX to put on one node; /var/tmp is visible inside the nodes, which have no network.
OTHER_MLX = "0.31.2"
OTHER_MLX_WHEELS = Path("/var/tmp/corral-doctor-test-wheels") / f"mlx-{OTHER_MLX}"
LIBMPI_ALTERNATIVE = "libmpi.so-x86_64-linux-gnu"


@pytest.fixture(scope="module")
def prepared(test_cluster, tmp_path_factory):
    """Three nodes set up all the way, as a user would: keys, `corral sync`, `corral env --wheels push`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CORRAL_WHEELHOUSE", str(WHEEL_CACHE))
        corral = CorralCli(tmp_path_factory.mktemp("corral") / "home")
        corral.add_nodes(test_cluster.nodes)
        corral.install_keys(test_cluster.nodes)
        project = tmp_path_factory.mktemp("project")
        (project / "train.py").write_text("print('training')\n")
        corral.ok("sync", str(project))
        env = corral.run("env", "--wheels", "push", timeout=900)
        assert env.returncode == 0, env.stdout + env.stderr
        yield test_cluster, corral, project


def doctor(corral: CorralCli) -> tuple[int, list[dict], str]:
    """Exit code, JSON results, and the human output of one doctor run."""
    as_json = corral.run("doctor", "--json")
    human = corral.run("doctor")
    assert as_json.returncode == human.returncode, human.stdout + human.stderr
    return as_json.returncode, json.loads(as_json.stdout), human.stdout


def statuses(results: list[dict], check: str) -> dict[str, str]:
    return {r["node"]: r["status"] for r in results if r["check"] == check}


def venv_pip(node, project: Path, *args: str) -> None:
    # corral env may build the venv with uv, leaving no pip inside it; the system pip can target it.
    python = RemoteLayout.for_project(project).venv_python
    node.run(["/usr/bin/python3", "-m", "pip", "--python", python, "--disable-pip-version-check", "-q", *args],
             as_user=True, timeout=180)


def mlx_version(node, project: Path) -> str:
    python = RemoteLayout.for_project(project).venv_python
    return node.run([python, "-c", "import mlx.core as mx; print(mx.__version__)"], as_user=True).stdout.strip()


def test_a_healthy_cluster_passes_every_check(prepared):
    cluster, corral, _ = prepared
    code, results, human = doctor(corral)
    assert code == 0, human
    assert {r["status"] for r in results} <= {"pass", "warn"}, [r for r in results if r["status"] not in ("pass", "warn")]
    nodes = [node.name for node in cluster.nodes]
    for check in ("ssh", "host-key", "code", "venv", "python-version", "mlx-version", "mpirun", "node-ssh",
                  "mpi-address", "reachability", "fabric"):
        assert statuses(results, check) == {name: "pass" for name in nodes}, check
    fabric = {r["node"]: r["detail"] for r in results if r["check"] == "fabric"}
    assert all("mpi4py 3/3, MLX 3/3, all_sum 3" in detail for detail in fabric.values()), fabric
    # The nodes' venv Python finds the OpenBLAS the trainer loads there (./dev system installs it).
    venvs = {r["node"]: r["detail"] for r in results if r["check"] == "venv"}
    assert all(detail.endswith(", OpenBLAS") for detail in venvs.values()), venvs
    header, *rows = human.split("\n\n")[0].splitlines()
    assert header.split()[1:] == nodes
    assert all(row.split()[-3:] == ["✓", "✓", "✓"] for row in rows), human
    assert "All checks passed" in human


def test_a_different_mlx_on_one_node_is_named_with_the_fix(prepared):
    cluster, corral, project = prepared
    node = cluster.nodes[1]
    usual = mlx_version(node, project)
    if not OTHER_MLX_WHEELS.is_dir():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(OTHER_MLX_WHEELS),
                        f"mlx=={OTHER_MLX}", f"mlx-cpu=={OTHER_MLX}"], check=True, timeout=600)
    venv_pip(node, project, "install", "--no-index", "--find-links", str(OTHER_MLX_WHEELS),
             f"mlx=={OTHER_MLX}", f"mlx-cpu=={OTHER_MLX}")
    try:
        code, results, human = doctor(corral)
        others = [n.name for n in cluster.nodes if n is not node]
        assert code == 1
        assert statuses(results, "mlx-version") == {cluster.nodes[0].name: "pass", node.name: "fail",
                                                     cluster.nodes[2].name: "pass"}
        assert (f"{node.name}: mlx {OTHER_MLX} in the venv but {usual} on {others[0]} and {others[1]}; "
                f"run `corral env --to {node.name}` to reinstall it.") in human
    finally:
        # The fix the doctor names, as the user would run it (push: the nodes have no network).
        repaired = corral.run("env", "--to", node.name, "--wheels", "push", timeout=900)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert mlx_version(node, project) == usual
    assert doctor(corral)[0] == 0


def test_mlx_without_libmpi_on_one_node_is_caught_by_the_fabric_check(prepared):
    cluster, corral, _ = prepared
    node = cluster.nodes[2]
    # Only this node's mount namespace: the unversioned libmpi.so dangles, as without libopenmpi-dev.
    node.run(["sh", "-c", f"cp -a /etc/alternatives /tmp/alternatives && rm /tmp/alternatives/{LIBMPI_ALTERNATIVE} "
                          "&& mount --bind /tmp/alternatives /etc/alternatives"])
    try:
        code, results, human = doctor(corral)
    finally:
        node.run(["umount", "/etc/alternatives"])
    assert code == 1
    fabric = {r["node"]: r for r in results if r["check"] == "fabric"}
    assert fabric[node.name]["status"] == "fail"
    sentence = fabric[node.name]["fix"]
    assert sentence.startswith(f"{node.name}: MLX ran as rank 0 of 1 under mpirun while mpi4py saw all 3 ranks")
    assert "libopenmpi-dev" in sentence and "MLX_MPI_LIBNAME" in sentence
    assert sentence in human
    # The healthy nodes' MLX saw the whole world; their all_sum was held back, not failed.
    assert {fabric[n.name]["status"] for n in cluster.nodes if n is not node} == {"skip"}
    assert statuses(results, "venv")[node.name] == "warn"


def test_missing_code_on_one_node_says_to_sync(prepared):
    cluster, corral, project = prepared
    node = cluster.nodes[0]
    code_dir = RemoteLayout.for_project(project).code_dir
    node.run(["rm", "-rf", code_dir], as_user=True)
    code, results, human = doctor(corral)
    assert code == 1
    assert statuses(results, "code")[node.name] == "fail"
    assert f"{node.name}: no project code at ~/{code_dir}; run `corral sync --to {node.name}` to copy it." in human
    corral.ok("sync", "--to", node.name)  # the fix the sentence names
    code, results, human = doctor(corral)
    assert code == 0, human


def test_a_missing_node_to_node_key_names_both_nodes(prepared):
    cluster, corral, _ = prepared
    source, target = cluster.nodes[0], cluster.nodes[1]
    authorized = target.home_on_host / ".ssh" / "authorized_keys"
    original = authorized.read_text()
    authorized.write_text("".join(line for line in original.splitlines(keepends=True)
                                  if f"corral@{source.hostname}" not in line))
    try:
        code, results, human = doctor(corral)
    finally:
        authorized.write_text(original)
    assert code == 1
    assert statuses(results, "node-ssh") == {source.name: "fail", target.name: "pass", cluster.nodes[2].name: "pass"}
    assert re.search(rf"{source.name} cannot log in to {target.name} \({re.escape(target.address)}\) by key without "
                     r"a prompt \(.*Permission denied.*\); run `corral keys` to set up node-to-node access\.", human)
    fabric = [r for r in results if r["check"] == "fabric"]
    assert [r["status"] for r in fabric] == ["skip"]
    assert "node-to-node SSH from the head node" in fabric[0]["detail"]


def test_no_route_between_two_nodes_is_explained(prepared):
    cluster, corral, _ = prepared
    source, target = cluster.nodes[0], cluster.nodes[2]
    # Only the source node loses its route: the controller still reaches every node.
    source.run(["ip", "route", "add", "unreachable", f"{target.address}/32"])
    try:
        code, results, human = doctor(corral)
    finally:
        source.run(["ip", "route", "del", "unreachable", f"{target.address}/32"])
    assert code == 1
    assert statuses(results, "reachability") == {n.name: ("pass" if n is cluster.nodes[1] else "fail")
                                                 for n in cluster.nodes}
    assert (f"{source.name} cannot open a TCP connection to {target.name} at {target.address}: no route to the host "
            "(EHOSTUNREACH)") in human
    # The target's answers cannot get back either: its connection attempts vanish.
    assert f"{target.name} cannot open a TCP connection to {source.name} at {source.address}: timed out" in human


def test_sshd_down_fails_ssh_and_skips_that_nodes_other_checks(prepared):
    cluster, corral, _ = prepared
    node = cluster.nodes[1]
    node.stop_sshd()
    try:
        code, results, human = doctor(corral)
    finally:
        node.start_sshd()
    assert code == 1
    assert statuses(results, "ssh")[node.name] == "fail"
    assert f"{node.name} ({node.user}@{node.address}:22) refused the connection on port 22: sshd is not running there" in human
    for check in ("host-key", "code", "venv", "mpirun", "node-ssh", "reachability"):
        result = next(r for r in results if r["check"] == check and r["node"] == node.name)
        assert result["status"] == "skip" and result["detail"].startswith("skipped: SSH failed"), result
    # The other nodes are still checked in full.
    assert statuses(results, "venv")[cluster.nodes[0].name] == "pass"
    assert statuses(results, "node-ssh")[cluster.nodes[0].name] == "pass"


def test_a_changed_host_key_and_no_project(cluster_factory, tmp_path):
    cluster = cluster_factory(2)
    corral = CorralCli(tmp_path / "home")
    corral.add_nodes(cluster.nodes)
    corral.install_keys(cluster.nodes)
    cluster.nodes[1].regenerate_host_key()
    code, results, human = doctor(corral)
    assert code == 1
    first, second = (node.name for node in cluster.nodes)
    assert statuses(results, "host-key") == {first: "pass", second: "fail"}
    assert statuses(results, "ssh") == {first: "pass", second: "skip"}
    assert f"but corral accepted" in human and f"`corral node forget-host-key {second}`" in human
    assert "no project synced yet: run `corral sync PATH`" in human
    assert load_cluster(corral.paths).project is None
