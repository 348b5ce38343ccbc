"""corral sync without a network: rsync argv, quoting as rsync itself splits it, output parsing, error sentences."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cluster import errors
from cluster.cli_sync import LiveView, PlainView, describe_progress, format_bytes, print_summary
from cluster.errors import ClusterError
from cluster.fleet import NodeOutcome
from cluster.home import CorralHome
from cluster.inventory import Node
from cluster.rsync_output import ItemLine, ProgressLine, RsyncOutputParser, SyncStats
from cluster.sync import (
    DEFAULT_EXCLUDES,
    SyncFailed,
    SyncPhase,
    SyncPlan,
    SyncProgress,
    SyncResult,
    check_project_folder,
    check_rsync_version,
    control_dir_candidates,
    control_path_for,
    explain_failure,
    parse_rsync_version,
    quote_rsync_shell_word,
    remote_shell,
    retry_command,
    rsync_argv,
    usable_control_dir,
)

DATA = Path(__file__).parent / "data"
NODE = Node("node1", "10.0.0.11", 22, "lab1")
ERROR_TYPES = {"SyncFailed": SyncFailed, **{name: getattr(errors, name) for name in dir(errors)}}


def plan(tmp_path: Path, **changes: object) -> SyncPlan:
    values: dict[str, object] = dict(project=tmp_path / "train", code_dir="corral/projects/train-1234abcd",
                                     ssh_config=tmp_path / "ssh_config")
    values.update(changes)
    return SyncPlan(**values)  # type: ignore[arg-type]


# --- rsync versions ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", json.loads((DATA / "rsync_versions" / "cases.json").read_text()),
                         ids=lambda case: case["output"].splitlines()[0])
def test_rsync_versions_are_read_and_judged(case):
    version = parse_rsync_version(case["output"])
    assert version.version == tuple(case["version"])
    assert version.openrsync == case["openrsync"]
    assert version.has_progress2 == case["progress2"]
    if case["usable"]:
        check_rsync_version(version)
    else:
        with pytest.raises(ClusterError, match="brew install rsync"):
            check_rsync_version(version)


def test_unreadable_version_output_is_a_clear_error():
    with pytest.raises(ClusterError, match="Could not read the rsync version"):
        parse_rsync_version("command not found")


# --- argv ----------------------------------------------------------------------------------------


def test_argv_copies_the_folder_contents_into_the_relative_code_dir(tmp_path):
    argv = rsync_argv(plan(tmp_path), NODE)
    assert argv[0] == "rsync"
    assert argv[-2:] == [f"{tmp_path / 'train'}/", "node1:corral/projects/train-1234abcd/"]
    assert "--delete" in argv and "--stats" in argv and "--info=progress2" in argv
    assert "--rsync-path=mkdir -p corral/projects && rsync" in argv
    # Flags old rsyncs (macOS 2.6.9, openrsync) or old remote rsyncs reject are not used.
    for flag in ("--mkpath", "-s", "--secluded-args", "--protect-args", "-a", "--delete-excluded"):
        assert flag not in argv
    assert not any(arg.startswith(("--owner", "--group", "-o", "-g")) and arg != "-e" for arg in argv)


def test_argv_excludes_user_patterns_defaults_and_gitignore(tmp_path):
    argv = rsync_argv(plan(tmp_path, excludes=("data/", "*.ckpt")), NODE)
    excludes = [arg.removeprefix("--exclude=") for arg in argv if arg.startswith("--exclude=")]
    assert excludes == ["data/", "*.ckpt", *DEFAULT_EXCLUDES]
    assert ".git/" in DEFAULT_EXCLUDES and ".venv/" in DEFAULT_EXCLUDES
    assert "--filter=:- .gitignore" in argv


def test_old_rsync_gets_no_progress2(tmp_path):
    assert "--info=progress2" not in rsync_argv(plan(tmp_path, progress2=False), NODE)


def test_unsafe_remote_paths_and_host_aliases_are_refused(tmp_path):
    with pytest.raises(ValueError):
        rsync_argv(plan(tmp_path, code_dir="corral/projects/a b"), NODE)
    with pytest.raises(ValueError):
        rsync_argv(plan(tmp_path, code_dir="/abs/path"), NODE)
    with pytest.raises(ClusterError, match="cannot be used as an ssh host alias"):
        rsync_argv(plan(tmp_path), dataclasses.replace(NODE, name="-oProxyCommand=x"))


def test_quoting_doubles_single_quotes():
    assert quote_rsync_shell_word("/a b/it's") == "'/a b/it''s'"


FAKE_SSH = """#!/bin/sh
# Records the argv rsync gives its remote shell, one argument per line, then fails like a dead host.
for arg in "$@"; do printf '%s\\n' "$arg"; done > "$FAKE_SSH_LOG"
exit 255
"""


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
@pytest.mark.parametrize("home_name", ["corral home", "it's \"quoted\" $(touch pwned) `x` 100%"])
def test_rsync_splits_the_remote_shell_back_into_the_exact_paths(tmp_path, home_name):
    # The real rsync parses -e; a fake ssh on PATH records what it received (no network needed).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text(FAKE_SSH)
    fake.chmod(0o755)
    home = tmp_path / home_name
    project = tmp_path / "my project $(touch pwned2) it's"
    project.mkdir()
    control = home / "ssh-mux"
    argv = rsync_argv(plan(tmp_path, project=project, ssh_config=home / "ssh_config", control_dir=control), NODE)
    log = tmp_path / "ssh-argv.txt"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SSH_LOG": str(log)}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert result.returncode != 0
    received = log.read_text().splitlines()
    control_value = str(control_path_for(control, NODE, home / "ssh_config")).replace("%", "%%")
    assert received[:8] == ["-F", str(home / "ssh_config"), "-o", "ControlMaster=auto",
                            "-o", f'ControlPath="{control_value}"', "-o", "ControlPersist=300"]
    # ssh joins the words after the host into the command line the node's shell runs.
    host = received.index("node1")
    remote = " ".join(received[host + 1:])
    assert remote.startswith("mkdir -p corral/projects && rsync --server ")
    assert remote.endswith(" . corral/projects/train-1234abcd/")
    assert not list(tmp_path.rglob("pwned*"))


def test_remote_shell_without_connection_reuse_is_just_ssh_with_the_config():
    assert remote_shell(Path("/x/ssh_config")) == "ssh -F '/x/ssh_config'"


def test_control_sockets_live_in_a_private_short_directory(tmp_path):
    home = CorralHome(Path("/home/me/.config/corral"))
    assert control_dir_candidates(home)[0] == home.root / "ssh-mux"
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # pytest's tmp_path is too long for a socket
        chosen = usable_control_dir([Path(short) / "ssh-mux"])
        assert chosen == Path(short) / "ssh-mux"
        assert stat.S_IMODE(chosen.stat().st_mode) == 0o700
        # Another login (user, address or port) of the same name gets its own socket.
        config = Path("/h/ssh_config")
        other = dataclasses.replace(NODE, address="10.0.0.99")
        assert control_path_for(chosen, NODE, config) != control_path_for(chosen, other, config)
        # Two corral homes never share a connection (each has its own key and host keys).
        assert control_path_for(chosen, NODE, config) != control_path_for(chosen, NODE, Path("/other/ssh_config"))
        assert control_path_for(chosen, NODE, config).name.startswith("node1-")
        # A path too long for a Unix socket falls back to the next candidate (and is never created).
        deep = Path(short) / ("d" * 70)
        assert usable_control_dir([deep, Path(short) / "b"]) == Path(short) / "b"
        assert not deep.exists()
    # A directory others can write to is never used: they could hijack the connections.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert usable_control_dir([shared]) is None


# --- the project folder -------------------------------------------------------------------------


def test_project_folder_checks(tmp_path):
    project = tmp_path / "train"
    project.mkdir()
    assert check_project_folder(project, user_home=tmp_path) == project
    with pytest.raises(ClusterError, match="does not exist"):
        check_project_folder(tmp_path / "missing", user_home=tmp_path)
    (tmp_path / "file.py").write_text("")
    with pytest.raises(ClusterError, match="is a file"):
        check_project_folder(tmp_path / "file.py", user_home=tmp_path)
    with pytest.raises(ClusterError, match="your home folder"):
        check_project_folder(tmp_path, user_home=tmp_path)
    with pytest.raises(ClusterError, match="whole disk"):
        check_project_folder("/", user_home=tmp_path)
    # Through a symlink or `..` it is still the home folder.
    with pytest.raises(ClusterError, match="your home folder"):
        check_project_folder(project / "..", user_home=tmp_path)


def test_a_corral_home_with_a_double_quote_is_refused_before_anything_runs(tmp_path):
    import asyncio

    from cluster.inventory import Inventory
    from cluster.sync import sync_project

    home = CorralHome(tmp_path / 'say "hi"')
    with pytest.raises(ClusterError, match="contains a double quote"):
        asyncio.run(sync_project(home, Inventory(nodes=(NODE,)), tmp_path))
    assert not home.root.exists()


# --- parsing rsync's output ---------------------------------------------------------------------


OUTPUT_CASES = sorted((DATA / "rsync_output").glob("*.txt"))


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=lambda path: path.stem)
@pytest.mark.parametrize("chunking", ["whole", "random chunks"])
def test_rsync_output_cases(case, chunking):
    text = case.read_text()
    expected = json.loads(case.with_suffix(".json").read_text())
    parser = RsyncOutputParser()
    parsed: list[ItemLine | ProgressLine] = []
    if chunking == "whole":
        parsed += parser.feed(text)
    else:  # output arrives in arbitrary pieces: a line (even "\r\n") may be split anywhere
        rng = random.Random(case.name)
        position = 0
        while position < len(text):
            size = rng.randint(1, 40)
            parsed += parser.feed(text[position:position + size])
            position += size
    parsed += parser.finish()
    assert dataclasses.asdict(parser.stats()) == expected["stats"]
    assert [p.path for p in parsed if isinstance(p, ItemLine) and p.is_file_sent] == expected["sent"]
    assert [p.path for p in parsed if isinstance(p, ItemLine) and p.is_deletion] == expected["deleted"]
    progress = [p for p in parsed if isinstance(p, ProgressLine)]
    assert len(progress) == expected["progress_lines"]
    assert (dataclasses.asdict(progress[-1]) if progress else None) == expected["last_progress"]


def test_no_stats_when_rsync_failed_early():
    parser = RsyncOutputParser()
    parser.feed("created directory corral/projects/x\n")
    assert parser.stats() is None


# --- failures become sentences ------------------------------------------------------------------


@pytest.mark.parametrize("case", json.loads((DATA / "rsync_failures" / "cases.json").read_text()),
                         ids=lambda case: case["stderr"].removesuffix(".txt"))
def test_failures_are_explained(case):
    stderr = (DATA / "rsync_failures" / case["stderr"]).read_text()
    error = explain_failure(NODE, case["exit_status"], stderr, retry="corral sync --to node1")
    assert type(error) is ERROR_TYPES[case["error"]]
    assert error.node == "node1"
    message = str(error)
    assert message.startswith("node1 (lab1@10.0.0.11:22)")
    for words in case["says"]:
        assert words in message
    if case["error"] != "HostKeyChanged":
        assert "corral sync --to node1" in message
    assert "\n" not in message


def test_changed_host_key_carries_the_presented_fingerprint():
    stderr = (DATA / "rsync_failures" / "host_key_changed.txt").read_text()
    error = explain_failure(NODE, 255, stderr, retry="corral sync --to node1")
    assert isinstance(error, errors.HostKeyChanged)
    assert error.presented_fingerprint.startswith("SHA256:") and not error.presented_fingerprint.endswith(".")


def test_retry_command_repeats_only_what_is_needed():
    assert retry_command(["node2"]) == "corral sync --to node2"
    assert retry_command(["node2", "node3"], ["big data/"], home_arg="/x y") == (
        "corral --home '/x y' sync --to node2 --to node3 --exclude 'big data/'")


# --- the CLI's output ---------------------------------------------------------------------------


def test_format_bytes():
    assert [format_bytes(n) for n in (0, 999, 1000, 1_234_567, 5 * 10**12)] == [
        "0 B", "999 B", "1.0 kB", "1.2 MB", "5000.0 GB"]


def test_plain_view_prints_phases_not_counters():
    out = io.StringIO()
    view = PlainView(out)
    view.show(SyncProgress("node1", SyncPhase.STARTING))
    view.show(SyncProgress("node1", SyncPhase.TRANSFERRING, files_sent=1, bytes_done=10))
    view.show(SyncProgress("node1", SyncPhase.DONE, files_sent=3, files_done=7, files_total=7, bytes_done=1500))
    assert out.getvalue().splitlines() == ["node1: connecting", "node1: done: 3 sent, 7/7 checked, 1.5 kB"]
    assert describe_progress(SyncProgress("n", SyncPhase.TRANSFERRING, files_done=5, percent=40)) == (
        "transferring: 0 sent, 5/? checked, 0 B, 40%")


def test_live_view_redraws_one_line_per_node_in_place_and_throttles_counters(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("cluster.cli_sync.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    view = LiveView(["node1", "node22"], out)
    view.show(SyncProgress("node1", SyncPhase.STARTING))
    assert out.getvalue() == "\x1b[2Knode1   connecting\n\x1b[2Knode22  waiting\n"
    clock[0] += 0.05
    view.show(SyncProgress("node22", SyncPhase.TRANSFERRING, files_sent=1))  # 0.05 s after a draw: skipped
    assert "\x1b[2F" not in out.getvalue()
    clock[0] += 0.1
    view.show(SyncProgress("node22", SyncPhase.TRANSFERRING, files_sent=2))
    assert out.getvalue().count("\x1b[2F") == 1 and "2 sent" in out.getvalue() and "1 sent" not in out.getvalue()
    view.show(SyncProgress("node22", SyncPhase.DONE, files_sent=3))  # a phase change always shows at once
    assert out.getvalue().rsplit("\x1b[2F", 1)[1] == (
        "\x1b[2Knode1   connecting\n\x1b[2Knode22  done: 3 sent, 0/? checked, 0 B\n")


def test_summary_lists_every_node_and_the_retry_command_for_the_failed():
    node2 = Node("node2", "10.0.0.12", 22, "lab2")
    stats = SyncStats(files_total=10, files_transferred=2, bytes_transferred=2000, bytes_sent=2500)
    outcomes = [
        NodeOutcome(NODE, value=SyncResult("node1", "corral/projects/x", stats), elapsed_s=0.4),
        NodeOutcome(node2, error=errors.NodeUnreachable("node2", "node2 (lab2@10.0.0.12:22) refused the SSH "
                                                                 "connection"), elapsed_s=0.1),
    ]
    out, err = io.StringIO(), io.StringIO()
    assert print_summary(outcomes, ["data/"], out, err) == 1
    table = out.getvalue().strip().splitlines()
    assert table[0].split() == ["NODE", "FILES", "SENT", "DATA", "DELETED", "ON", "THE", "WIRE", "TIME", "RESULT"]
    assert table[1].split() == ["node1", "2", "2.0", "kB", "0", "2.5", "kB", "0.4", "s", "ok"]
    assert table[2].split()[0] == "node2" and table[2].split()[-1] == "FAILED"
    assert "corral: node2 (lab2@10.0.0.12:22) refused the SSH connection" in err.getvalue()
    assert err.getvalue().rstrip().endswith("corral sync --to node2 --exclude data/")


def test_cli_module_stays_cheap_to_import():
    code = "import sys, cluster.cli_sync; print(sorted(m for m in ('asyncssh', 'yaml', 'cluster.sync') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
