"""corral env against the test cluster: pushed wheels on nodes without internet, idempotence, faults, retries."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.env_recipe import read_requirements
from cluster.layout import RemoteLayout
from cluster.remote_env import EnvProgress, EnvRequest, EnvStep, run_env
from cluster.state import load_cluster, save_cluster
from cluster.wheels import WHEELHOUSE_ENV
from tests.integration.corral_cli import CorralCli

pytestmark = pytest.mark.integration

# Outside any corral home so repeated test runs reuse the downloads (pip's own cache helps too).
WHEEL_CACHE = Path(os.environ.get("CORRAL_TEST_WHEEL_CACHE", "/var/tmp/corral-test-wheel-cache"))
# Small pure-Python wheels that the requirements of these tests name; pinned, so the cache stays valid.
FIRST_REQUIREMENTS = "six==1.16.0\n"
SECOND_REQUIREMENTS = "six==1.16.0\nidna==3.7\n"


@pytest.fixture(scope="module")
def installed(test_cluster, tmp_path_factory):
    """The module's 3 nodes with keys, a synced-looking project, and one first `corral env --wheels push`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(WHEELHOUSE_ENV, str(WHEEL_CACHE))
        corral = CorralCli(tmp_path_factory.mktemp("corral") / "home")
        corral.add_nodes(test_cluster.nodes)
        corral.install_keys(test_cluster.nodes)
        project = tmp_path_factory.mktemp("project")
        (project / "requirements.txt").write_text(FIRST_REQUIREMENTS)
        # What `corral sync` records; env builds the venv for this project.
        save_cluster(corral.paths, replace(load_cluster(corral.paths), project=str(project)))
        first = corral.run("env", "--wheels", "push", timeout=900)
        yield test_cluster, corral, project, first


def layout_of(project: Path) -> RemoteLayout:
    return RemoteLayout.for_project(project)


def stamp_of(node, project: Path) -> dict:
    return json.loads((node.home_on_host / layout_of(project).env_stamp).read_text())


def stamp_mtime(node, project: Path) -> int:
    return (node.home_on_host / layout_of(project).env_stamp).stat().st_mtime_ns


def table_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if len(cells) == 8 and cells[-1] == "s":  # NODE PYTHON MLX MPI4PY INSTALLER ACTION TIME s
            rows[cells[0]] = cells[1:7]
    return rows


def set_requirements(project: Path, text: str) -> None:
    (project / "requirements.txt").write_text(text)


def test_first_install_pushes_wheels_and_reports_versions(installed):
    cluster, _, project, first = installed
    assert first.returncode == 0, first.stdout + first.stderr
    rows = table_rows(first.stdout)
    assert set(rows) == {node.name for node in cluster.nodes}
    for node in cluster.nodes:
        python, mlx, mpi4py, installer, action, _ = rows[node.name]
        stamp = stamp_of(node, project)
        assert (python, mlx, mpi4py) == (stamp["versions"]["python"], stamp["versions"]["mlx"], stamp["versions"]["mpi4py"])
        assert python.startswith("3.") and mlx[0].isdigit() and mpi4py[0].isdigit()
        assert (installer, action) == ("uv", "installed")
        assert stamp["packages"] == ["mlx[cpu]", "mpi4py"] and stamp["wheels"] == "push"
        assert stamp["requirements"]["file"] == str(project / "requirements.txt")
        # The venv is the node's own, in its own home, and has the project's requirements.
        venv_python = layout_of(project).venv_python
        out = node.run([venv_python, "-c", "import mlx.core, mpi4py, six, sys; print(sys.prefix)"], as_user=True)
        assert out.stdout.strip() == f"{node.home}/{layout_of(project).venv_dir}"


def test_unchanged_run_runs_no_installer(installed):
    cluster, corral, project, _ = installed
    before = {node.name: stamp_mtime(node, project) for node in cluster.nodes}
    requirements_copy = layout_of(project).venv_dir + "/corral-requirements.txt"
    copies = {node.name: (node.home_on_host / requirements_copy).stat().st_mtime_ns for node in cluster.nodes}
    started = time.monotonic()
    result = corral.ok("env", "--wheels", "push")
    elapsed = time.monotonic() - started
    assert {row[4] for row in table_rows(result.stdout).values()} == {"unchanged"}
    # The install script rewrites both files first thing: untouched means no installer ran.
    assert {node.name: stamp_mtime(node, project) for node in cluster.nodes} == before
    assert {node.name: (node.home_on_host / requirements_copy).stat().st_mtime_ns for node in cluster.nodes} == copies
    assert elapsed < 10, f"an unchanged run took {elapsed:.1f} s"  # generous: the machine is shared


def test_venv_runs_mpi4py_across_the_nodes_under_mpirun(installed, tmp_path):
    cluster, corral, project, _ = installed
    corral.ok("export", str(tmp_path / "out"))
    program = ("from mpi4py import MPI; c = MPI.COMM_WORLD; "
               "print('rank', c.Get_rank(), 'of', c.Get_size(), 'sum', c.allreduce(1), flush=True)")
    venv_python = layout_of(project).venv_python
    result = subprocess.run([str(tmp_path / "out" / "mpirun.sh"), "sh", "-c", f'exec "$HOME/{venv_python}" -c "$0"',
                             program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    n = len(cluster.nodes)
    ranks = sorted(line.split("rank ", 1)[1] for line in result.stdout.splitlines() if "rank " in line)
    assert ranks == [f"{rank} of {n} sum {n}" for rank in range(n)]


def test_missing_package_is_named_and_no_node_is_touched(installed):
    cluster, corral, project, _ = installed
    bad = project / "bad-requirements.txt"
    bad.write_text("six==1.16.0\ncorral-no-such-package-4e1f==1.0\n")
    before = {node.name: stamp_mtime(node, project) for node in cluster.nodes}
    result = corral.run("env", "--wheels", "push", "--requirements", str(bad), timeout=300)
    assert result.returncode == 1
    for node in cluster.nodes:
        assert f"corral: {node.name}: the package index has no wheel of 'corral-no-such-package-4e1f==1.0'" in result.stderr
    assert "Retry the failed node(s) with: corral" in result.stderr
    assert {node.name: stamp_mtime(node, project) for node in cluster.nodes} == before


def test_missing_python_is_reported_per_node(installed):
    cluster, corral, project, _ = installed
    result = corral.run("env", "--wheels", "push", "--python", "/opt/no-such-python3")
    assert result.returncode == 1
    for node in cluster.nodes:
        assert f"corral: {node.name}: no Python at '/opt/no-such-python3' (--python)" in result.stderr
    assert "--python /opt/no-such-python3" in result.stderr  # the retry line keeps the option
    assert all(stamp_of(node, project)["versions"] for node in cluster.nodes)  # nothing was removed


def test_python_too_old_is_refused_with_the_fix(installed):
    cluster, corral, project, _ = installed
    node = cluster.nodes[0]
    fake = node.home_on_host / "old-python"
    fake.write_text("#!/bin/sh\necho 'Python 3.8.10'\n")
    fake.chmod(0o755)
    os.chown(fake, node.uid, node.gid)
    result = corral.run("env", "--wheels", "push", "--python", "./old-python", "--to", node.name)
    assert result.returncode == 1
    assert f"corral: {node.name}: ./old-python is Python 3.8.10, but corral needs 3.10 or newer" in result.stderr
    assert "--python" in result.stderr and "apt install python3" in result.stderr
    assert table_rows(result.stdout).keys() == {node.name}


def test_node_down_before_env_others_finish_and_retry_touches_only_it(installed):
    cluster, corral, project, _ = installed
    down = cluster.nodes[1]
    others = [node for node in cluster.nodes if node is not down]
    set_requirements(project, SECOND_REQUIREMENTS)
    down.stop_sshd()
    try:
        result = corral.run("env", "--wheels", "push", timeout=900)
    finally:
        down.start_sshd()
    assert result.returncode == 1
    rows = table_rows(result.stdout)
    assert rows[down.name][4] == "failed"
    assert all(rows[node.name][4] == "installed" for node in others)
    assert f"corral: {down.name} ({down.user}@{down.address}:22) refused the connection" in result.stderr
    retry = result.stderr.split("Retry the failed node(s) with: ", 1)[1].strip()
    assert shlex.split(retry)[-2:] == ["--to", down.name]
    settled = {node.name: stamp_mtime(node, project) for node in others}
    again = corral.ok(*shlex.split(retry)[3:])  # drop `corral --home HOME`; CorralCli adds its own
    assert table_rows(again.stdout).keys() == {down.name}
    assert table_rows(again.stdout)[down.name][4] == "installed"
    assert {node.name: stamp_mtime(node, project) for node in others} == settled
    for node in cluster.nodes:
        assert stamp_of(node, project)["requirements"]["sha256"] == read_requirements(project / "requirements.txt").sha256


def test_sshd_stopped_while_env_runs(installed):
    cluster, corral, project, _ = installed
    down = cluster.nodes[2]
    set_requirements(project, FIRST_REQUIREMENTS)
    home = corral.paths
    inventory = load_cluster(home)
    request = EnvRequest(layout=layout_of(project), requirements=read_requirements(project / "requirements.txt"),
                         wheels="push")
    events: list[EnvProgress] = []

    def on_progress(event: EnvProgress) -> None:
        events.append(event)
        # The node's probe is done; its sshd goes away before the wheels are copied (open sessions live on).
        if event.node == down.name and event.step is EnvStep.DOWNLOADING:
            down.stop_sshd()

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(WHEELHOUSE_ENV, str(WHEEL_CACHE))
            outcomes = asyncio.run(run_env(home, inventory.nodes, request, on_progress=on_progress))
    finally:
        down.start_sshd()
    by_name = {outcome.node.name: outcome for outcome in outcomes}
    assert not by_name[down.name].ok
    assert by_name[down.name].message.startswith(f"{down.name}: copying the wheels failed because ssh could not connect")
    assert f"corral env --to {down.name}" in by_name[down.name].message
    assert all(by_name[node.name].ok and by_name[node.name].value.action == "installed"
               for node in cluster.nodes if node is not down)
    assert [e.step for e in events if e.node == down.name][-1] is EnvStep.FAILED
    # Its old stamp still describes the old recipe, so the next run rebuilds it (and only it).
    retry = corral.ok("env", "--wheels", "push")
    actions = {name: row[4] for name, row in table_rows(retry.stdout).items()}
    assert actions == {node.name: ("installed" if node is down else "unchanged") for node in cluster.nodes}


def test_online_mode_without_internet_says_to_push(installed):
    cluster, corral, project, _ = installed
    node = cluster.nodes[0]
    # A version no earlier test installed, so not even uv's cache on the node can provide it.
    set_requirements(project, "six==1.15.0\n")
    result = corral.run("env", "--to", node.name, timeout=300)
    assert result.returncode == 1
    assert f"corral: {node.name} could not reach the package index; use `--wheels push`" in result.stderr, result.stderr
