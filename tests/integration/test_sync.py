"""corral sync against real sshd and rsync: per-node homes, .gitignore, re-syncs, odd paths, dead nodes, retries."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path

import pytest

from cluster.errors import HostKeyChanged, NodeError
from cluster.layout import RemoteLayout
from cluster.state import load_cluster
from cluster.sync import SyncPhase, SyncProgress, sync_project
from tests.integration.corral_cli import CorralCli

pytestmark = pytest.mark.integration


def make_project(root: Path) -> Path:
    """A small project with the things .gitignore and corral's defaults must keep off the nodes."""
    files = {
        "train.py": "print('train')\n",
        "model/net.py": "LAYERS = 2\n",
        "model/__pycache__/net.cpython-311.pyc": "bytecode",
        "data/README.md": "the data folder\n",
        "data/raw/big.bin": "ignored by the nested .gitignore",
        "data/.gitignore": "raw/\n",
        "notes.log": "ignored by the root .gitignore",
        "checkpoints/step1.ckpt": "ignored",
        ".gitignore": "*.log\n/checkpoints/\n",
        ".git/HEAD": "ref: refs/heads/main\n",
        ".venv/bin/python": "a local venv",
        "name with spaces & 'quotes'.txt": "odd names survive\n",
        "données/résumé.md": "non-ASCII names too\n",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def remote_files(node: object, project: Path) -> set[str]:
    code_dir = node.home_on_host / RemoteLayout.for_project(project).code_dir  # type: ignore[attr-defined]
    return {str(path.relative_to(code_dir)) for path in code_dir.rglob("*") if path.is_file()}


SYNCED = {"train.py", "model/net.py", "data/README.md", "data/.gitignore", ".gitignore",
          "name with spaces & 'quotes'.txt", "données/résumé.md"}


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by node: NODE, FILES SENT, DATA, DELETED, ON THE WIRE, TIME, RESULT."""
    rows = [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines()]
    return {row[0]: row for row in rows if len(row) == 7 and row[-1] in ("ok", "FAILED")}


def logins(node: object) -> int:
    """How many SSH logins the node's sshd has accepted so far (from its log)."""
    return node.log_path.read_text().count("Accepted publickey")  # type: ignore[attr-defined]


def sync_in_process(corral: CorralCli, project: Path, **options: object):
    home = corral.paths
    return asyncio.run(sync_project(home, load_cluster(home), project, **options))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ready(test_cluster, tmp_path_factory):
    """The module's 3-node cluster with corral's keys, and a project synced once."""
    corral = CorralCli(tmp_path_factory.mktemp("corral") / "home")
    corral.add_nodes(test_cluster.nodes)
    corral.install_keys(test_cluster.nodes)
    project = make_project(tmp_path_factory.mktemp("work") / "train")
    first = corral.ok("sync", str(project))
    return test_cluster, corral, project, first


def test_first_sync_puts_the_project_under_each_node_users_own_home(ready):
    cluster, corral, project, first = ready
    for node in cluster.nodes:
        assert remote_files(node, project) == SYNCED, node.name
        # Each node has its own home (/home/lab1, /home/lab2, …): the relative path landed in each.
        listing = node.run(["sh", "-c", f"cd ~/{RemoteLayout.for_project(project).code_dir} && pwd && cat train.py"],
                           as_user=True).stdout.split()
        assert listing[0] == f"/home/{node.user}/{RemoteLayout.for_project(project).code_dir}"
        assert listing[1] == "print('train')"
    rows = summary_rows(first.stdout)
    assert set(rows) == {node.name for node in cluster.nodes}
    assert all(row[1] == str(len(SYNCED)) and row[-1] == "ok" for row in rows.values()), first.stdout
    assert load_cluster(corral.paths).project == str(project)


def test_resync_sends_nothing_then_only_the_edited_file(ready):
    cluster, corral, project, _ = ready
    logins_before = [logins(node) for node in cluster.nodes]
    outcomes = sync_in_process(corral, project)
    assert all(o.ok for o in outcomes), [o.message for o in outcomes]
    assert [o.value.stats.files_transferred for o in outcomes] == [0, 0, 0]
    # The re-sync rode on the connections the first sync left open: no node saw a new login.
    assert [logins(node) for node in cluster.nodes] == logins_before
    sync_in_process(corral, project, reuse_connections=False)
    assert [logins(node) for node in cluster.nodes] == [count + 1 for count in logins_before]
    assert all(o.value.stats.files_total >= len(SYNCED) for o in outcomes)

    edited = project / "model" / "net.py"
    edited.write_text("LAYERS = 3\n")
    os.utime(edited, (1_700_000_000, 1_700_000_000))  # a different mtime even within the same second
    events: list[SyncProgress] = []
    outcomes = sync_in_process(corral, project, on_progress=events.append)
    assert [o.value.stats.files_transferred for o in outcomes] == [1, 1, 1]
    assert [o.value.sent_paths for o in outcomes] == [("model/net.py",)] * 3
    for node in cluster.nodes:
        code_dir = node.home_on_host / RemoteLayout.for_project(project).code_dir
        assert (code_dir / "model" / "net.py").read_text() == "LAYERS = 3\n"
    # Every node reported starting and finishing, in that order.
    for node in cluster.nodes:
        phases = [e.phase for e in events if e.node == node.name]
        assert phases[0] is SyncPhase.STARTING and phases[-1] is SyncPhase.DONE
        assert events[[e.node for e in events].index(node.name)].phase is SyncPhase.STARTING


def test_removed_files_disappear_but_ignored_outputs_on_the_node_survive(ready):
    cluster, corral, project, _ = ready
    extra = project / "scratch.py"
    extra.write_text("temporary\n")
    corral.ok("sync")  # no PATH: the remembered project
    node = cluster.nodes[0]
    code_dir = node.home_on_host / RemoteLayout.for_project(project).code_dir
    assert (code_dir / "scratch.py").exists()
    # A run wrote a checkpoint into an ignored folder on the node: a sync must never delete it.
    node.run(["sh", "-c", f"mkdir -p ~/{RemoteLayout.for_project(project).code_dir}/checkpoints && "
              f"echo weights > ~/{RemoteLayout.for_project(project).code_dir}/checkpoints/run.ckpt"], as_user=True)
    extra.unlink()
    result = corral.ok("sync")
    assert not (code_dir / "scratch.py").exists()
    assert (code_dir / "checkpoints" / "run.ckpt").read_text() == "weights\n"
    assert [row[3] for row in summary_rows(result.stdout).values()] == ["1", "1", "1"]  # DELETED


def test_exclude_option_and_named_nodes_only(ready):
    cluster, corral, project, _ = ready
    other = make_project(project.parent / "second")
    result = corral.ok("sync", str(other), "--to", cluster.nodes[1].name, "--exclude", "data/")
    assert remote_files(cluster.nodes[1], other) == SYNCED - {"data/README.md", "data/.gitignore"}
    assert not (cluster.nodes[0].home_on_host / RemoteLayout.for_project(other).code_dir).exists()
    assert list(summary_rows(result.stdout)) == [cluster.nodes[1].name]
    corral.ok("sync", str(project))  # back to the module's project for the other tests


def test_odd_project_path_and_corral_home_are_passed_safely(ready, tmp_path):
    cluster, _, _, _ = ready
    # Any character but a double quote, which OpenSSH's config has no way to write in a path.
    home = CorralCli(tmp_path / "corral home's $(touch pwned-home) `x`")
    home.add_nodes(cluster.nodes)
    home.install_keys(cluster.nodes)
    project = make_project(tmp_path / "my project $(touch pwned) `touch pwned2` it's \"q\"; rm -rf x")
    result = home.ok("sync", str(project))
    assert "FAILED" not in result.stdout
    for node in cluster.nodes:
        assert remote_files(node, project) == SYNCED
        leftovers = node.run(["sh", "-c", "find /home /tmp -name 'pwned*' 2>/dev/null | head -1"]).stdout
        assert leftovers.strip() == ""
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_refuses_home_root_and_missing_paths(ready, tmp_path):
    _, corral, _, _ = ready
    for path, words in [("/", "whole disk"), (str(Path.home()), "home folder"),
                        (str(tmp_path / "missing"), "does not exist")]:
        result = corral.run("sync", path)
        assert result.returncode == 1
        assert words in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_unknown_node_name_is_refused_before_anything_runs(ready):
    _, corral, _, _ = ready
    result = corral.run("sync", "--to", "nod2")
    assert result.returncode == 1
    assert "Did you mean 'node2'?" in result.stderr


# --- nodes that break: fresh clusters ------------------------------------------------------------


def test_a_down_node_is_reported_the_others_finish_and_a_retry_touches_only_it(cluster_factory, tmp_path):
    cluster = cluster_factory(3)
    corral = CorralCli(tmp_path / "home")
    corral.add_nodes(cluster.nodes)
    corral.install_keys(cluster.nodes)
    project = make_project(tmp_path / "train")
    down = cluster.nodes[1]
    down.stop_sshd()

    result = corral.run("sync", str(project))
    assert result.returncode == 1
    rows = summary_rows(result.stdout)
    assert {name: row[-1] for name, row in rows.items()} == {"node1": "ok", "node2": "FAILED", "node3": "ok"}
    for node in (cluster.nodes[0], cluster.nodes[2]):
        assert remote_files(node, project) == SYNCED
    assert not (down.home_on_host / "corral").exists()
    sentences = [line for line in result.stderr.splitlines() if line.startswith("corral: node2")]
    retry_command = f"corral --home {corral.home} sync --to node2"
    assert sentences == [f"corral: node2 (lab2@{down.address}:22) refused the SSH connection (is the machine up, "
                         f"and sshd / Remote Login on?), so nothing was copied; retry it with `{retry_command}`."]
    assert result.stderr.rstrip().endswith(retry_command)

    down.start_sshd()
    logins_before = {node.name: logins(node) for node in cluster.nodes}
    retry = corral.ok("sync", "--to", "node2")  # exactly what was printed; the project is remembered
    assert list(summary_rows(retry.stdout)) == ["node2"]
    assert summary_rows(retry.stdout)["node2"][1] == str(len(SYNCED))
    assert remote_files(down, project) == SYNCED
    # Only node2 was contacted at all: the others' sshd saw no new login.
    assert {node.name: logins(node) for node in cluster.nodes} == {
        **logins_before, "node2": logins_before["node2"] + 1}


def test_a_node_that_dies_mid_transfer_fails_alone(cluster_factory, tmp_path):
    cluster = cluster_factory(3)
    corral = CorralCli(tmp_path / "home")
    corral.add_nodes(cluster.nodes)
    corral.install_keys(cluster.nodes)
    project = tmp_path / "train"
    # Enough data that the copy is still running when the first file has arrived.
    for index in range(40):
        path = project / f"shard{index:02}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(1_000_000))
    victim = cluster.nodes[2]
    crashed = threading.Event()

    def on_progress(event: SyncProgress) -> None:
        if event.node == victim.name and event.phase is SyncPhase.TRANSFERRING and not crashed.is_set():
            crashed.set()
            victim.crash()  # every process of the node dies: its sshd, the remote rsync, the session

    outcomes = sync_in_process(corral, project, on_progress=on_progress)
    assert crashed.is_set()
    by_name = {o.node.name: o for o in outcomes}
    assert by_name["node1"].ok and by_name["node2"].ok
    assert by_name["node1"].value.stats.files_transferred == 40
    failure = by_name[victim.name]
    assert not failure.ok and isinstance(failure.error, NodeError) and failure.error.node == victim.name
    assert failure.message.startswith(f"{victim.name} (lab3@{victim.address}:22)")
    assert "corral sync --to node3" in failure.message and "\n" not in failure.message


def test_a_changed_host_key_is_refused_and_nothing_is_copied(cluster_factory, tmp_path):
    cluster = cluster_factory(2)
    corral = CorralCli(tmp_path / "home")
    corral.add_nodes(cluster.nodes)
    corral.install_keys(cluster.nodes)
    cluster.nodes[1].regenerate_host_key()  # "the machine was reinstalled", or someone in between
    project = make_project(tmp_path / "train")
    outcomes = sync_in_process(corral, project)
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, HostKeyChanged)
    assert "corral node forget-host-key node2" in outcomes[1].message
    assert outcomes[1].error.presented_fingerprint == cluster.nodes[1].host_key_fingerprint
    assert not (cluster.nodes[1].home_on_host / "corral").exists()
