"""The head-node supervisor, run here for real: detached start, follow to the end, status, stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cluster.remote.supervise as supervise_module

SUPERVISE = [sys.executable, supervise_module.__file__]


def supervise(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SUPERVISE, *args], capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_start_returns_at_once_and_follow_streams_everything_until_the_end(tmp_path):
    run_dir = str(tmp_path / "run")
    started = time.monotonic()
    result = supervise("start", run_dir, "--", "sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done; exit 3")
    assert time.monotonic() - started < 0.8  # did not wait for the 1 s program
    info = json.loads(result.stdout)
    assert info["pid"] > 0
    followed = supervise("follow", run_dir)
    assert followed.stdout.splitlines() == [f"line {i}" for i in range(1, 6)]
    assert json.loads(supervise("status", run_dir).stdout)["returncode"] == 3


def test_follow_from_an_offset_replays_the_rest(tmp_path):
    run_dir = str(tmp_path / "run")
    supervise("start", run_dir, "--", "sh", "-c", "echo first; echo second")
    supervise("follow", run_dir)
    assert supervise("follow", run_dir, "--offset", "6").stdout == "second\n"


def test_the_launcher_survives_its_caller_and_stop_ends_the_whole_group(tmp_path):
    run_dir = tmp_path / "run"
    # A launcher with a child of its own, both ignoring SIGINT, to exercise the escalation.
    script = "trap '' INT; sleep 60 & trap '' INT; wait"
    info = json.loads(supervise("start", str(run_dir), "--", "sh", "-c", script).stdout)
    pgid = info["pgid"]
    status = json.loads(supervise("status", str(run_dir)).stdout)
    assert status["alive"] is True
    result = json.loads(supervise("stop", str(run_dir), "--grace-s", "0.5").stdout)
    assert result["stopped"] is True
    assert result["signals"][0] == "SIGINT" and len(result["signals"]) >= 2
    listing = subprocess.run(["ps", "-A", "-o", "pgid=,stat="], capture_output=True, text=True).stdout.split("\n")
    assert not [row for row in listing if row.split()[:1] == [str(pgid)] and not row.split()[1].startswith("Z")]
    wait_for(lambda: (run_dir / "exit.json").exists())
    assert json.loads(supervise("status", str(run_dir)).stdout)["alive"] is False


def test_a_missing_program_is_reported(tmp_path):
    result = supervise("start", str(tmp_path / "run"), "--", "/nonexistent/mpirun")
    assert result.returncode == 1
    assert "cannot start /nonexistent/mpirun" in result.stdout


def test_a_run_directory_is_used_once(tmp_path):
    run_dir = str(tmp_path / "run")
    supervise("start", run_dir, "--", "true")
    again = supervise("start", run_dir, "--", "true")
    assert again.returncode == 2 and "used once" in again.stdout
    assert Path(run_dir, "launcher.json").exists()


def test_follow_ends_when_the_launcher_outlived_a_killed_supervisor(tmp_path):
    # The supervisor is killed (OOM killer, a stray pkill); the launcher runs on, then ends with nobody to
    # record it. A follower must not wait forever: it records the end itself, exit status unknown.
    run_dir = tmp_path / "run"
    info = json.loads(supervise("start", str(run_dir), "--", "sh", "-c", "echo before; sleep 1.5; echo after").stdout)
    os.kill(info["supervisor_pid"], signal.SIGKILL)
    started = time.monotonic()
    followed = supervise("follow", str(run_dir), timeout=20)
    assert followed.returncode == 0 and followed.stdout.splitlines() == ["before", "after"]
    assert time.monotonic() - started < 5  # the launcher's 1.5 s, then at most a check interval or two
    ended = json.loads((run_dir / "exit.json").read_text())
    assert ended["returncode"] is None and f"supervisor (pid {info['supervisor_pid']}) died" in ended["error"]
    assert json.loads(supervise("status", str(run_dir)).stdout)["alive"] is False


def test_a_live_supervisor_is_left_to_record_the_end(tmp_path):
    run_dir = tmp_path / "run"
    supervise("start", str(run_dir), "--", "sh", "-c", "sleep 1.5; exit 4")
    supervise("follow", str(run_dir), timeout=20)
    assert json.loads((run_dir / "exit.json").read_text()) == {"returncode": 4, "ended": pytest.approx(time.time(), abs=10)}


def test_a_zombie_supervisor_counts_as_gone():
    # A dead supervisor that nobody reaped yet (in a namespace whose init does not reap) must not keep a
    # follower waiting: only a running process counts.
    child = os.fork()
    if child == 0:
        os._exit(0)
    try:
        wait_for(lambda: supervise_module.process_exists(child) is False)
        assert os.waitpid(child, os.WNOHANG) == (child, 0)  # it was a zombie until now
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
    assert supervise_module.process_exists(os.getpid())
