"""Runs on the head node (standard library only): start a launcher detached, follow its output, stop it.

corral copies this file to ``~/corral/bin/supervise.py`` on the head node and calls it over SSH:

    supervise.py start RUN_DIR -- mpirun ...   start detached; prints {"pid": …, "pgid": …} once running
    supervise.py follow RUN_DIR [--offset N]   stream output.log from byte N until the run has ended
    supervise.py status RUN_DIR                prints {"alive": …, "returncode": …}
    supervise.py stop RUN_DIR [--grace-s S]    SIGINT the launcher's process group, then TERM, then KILL

The launcher lives in its own session, so closing the SSH connection (or this computer going to sleep)
does not stop training. A small supervisor process stays with it to record its exit status in
``exit.json``: readers use that to know the output is complete. Run state is judged from the events
in the output, not from this status (``mlx.launch`` exits 0 even when ranks fail).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

OUTPUT = "output.log"
LAUNCHER = "launcher.json"
EXIT = "exit.json"
FOLLOW_POLL_S = 0.05  # how often `follow` looks for new output: well inside the 300 ms latency goal
ORPHAN_CHECK_S = 1.0  # how often an idle `follow` checks that the supervisor still lives (it runs `ps`)


def write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def start(run_dir: str, argv: list[str]) -> int:
    os.makedirs(run_dir, exist_ok=True)
    if os.path.exists(os.path.join(run_dir, LAUNCHER)):
        print(json.dumps({"error": f"{run_dir} already has a launcher; a run id is used once"}))
        return 2
    ready_read, ready_write = os.pipe()
    if os.fork() > 0:
        # The caller (an SSH session): wait until the launcher runs, print its ids, and leave.
        os.close(ready_write)
        with os.fdopen(ready_read) as ready:
            message = ready.read()
        print(message or json.dumps({"error": "the supervisor exited before starting the launcher"}))
        return 0 if message and '"pid"' in message else 1
    os.close(ready_read)
    os.setsid()  # leave the SSH session: its hangup must not reach us
    if os.fork() > 0:
        os._exit(0)
    _supervise(run_dir, argv, ready_write)
    os._exit(0)


def _supervise(run_dir: str, argv: list[str], ready_write: int) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    output = os.open(os.path.join(run_dir, OUTPUT), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    started = time.time()
    try:
        # Its own process group, so `stop` can signal the launcher and everything it started at once.
        child = subprocess.Popen(argv, stdin=devnull, stdout=output, stderr=output, start_new_session=True)
    except OSError as exc:
        os.write(ready_write, json.dumps({"error": f"cannot start {argv[0]}: {exc.strerror}"}).encode())
        os.close(ready_write)
        write_json_atomic(os.path.join(run_dir, EXIT), {"returncode": None, "error": str(exc), "ended": time.time()})
        return
    info = {"pid": child.pid, "pgid": child.pid, "supervisor_pid": os.getpid(), "started": started, "argv": argv}
    write_json_atomic(os.path.join(run_dir, LAUNCHER), info)
    os.write(ready_write, json.dumps(info).encode())
    os.close(ready_write)
    returncode = child.wait()
    write_json_atomic(os.path.join(run_dir, EXIT), {"returncode": returncode, "ended": time.time()})


def follow(run_dir: str, offset: int) -> int:
    """Copy output from ``offset`` to stdout as it grows; return once the launcher has exited and all is read."""
    path = os.path.join(run_dir, OUTPUT)
    out = sys.stdout.buffer
    while not os.path.exists(path):
        if os.path.exists(os.path.join(run_dir, EXIT)):
            return 0
        time.sleep(FOLLOW_POLL_S)
    next_orphan_check = time.monotonic() + ORPHAN_CHECK_S
    with open(path, "rb") as handle:
        handle.seek(offset)
        while True:
            ended = os.path.exists(os.path.join(run_dir, EXIT))  # checked before reading: nothing is missed
            chunk = handle.read(1 << 16)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if ended:
                return 0
            if time.monotonic() >= next_orphan_check:
                next_orphan_check = time.monotonic() + ORPHAN_CHECK_S
                record_orphaned_end(run_dir)  # writes exit.json when nobody else will; read on the next turn
            time.sleep(FOLLOW_POLL_S)


def record_orphaned_end(run_dir: str) -> None:
    """Write exit.json for a launcher that ended after its supervisor died (killed, OOM): else followers wait forever."""
    launcher = read_json(os.path.join(run_dir, LAUNCHER)) or {}
    supervisor, pgid = launcher.get("supervisor_pid"), launcher.get("pgid")
    if not supervisor or not pgid or process_exists(supervisor) or alive(pgid):
        return
    if os.path.exists(os.path.join(run_dir, EXIT)):  # the supervisor wrote it just before it went
        return
    write_json_atomic(os.path.join(run_dir, EXIT), {
        "returncode": None, "ended": time.time(),
        "error": f"the supervisor (pid {supervisor}) died before the launcher ended, so its exit status is unknown",
    })


def process_exists(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie nobody reaps (a namespace whose init does not) counts as gone, as in alive()."""
    return _runs(os.kill, "pid", pid)


def alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies waiting to be reaped do not count."""
    return _runs(os.killpg, "pgid", pgid)


def _runs(probe: Callable[[int, int], None], column: str, ident: int) -> bool:
    """Whether a process (``column`` "pid") or a group ("pgid") with this id has a member that is not a zombie."""
    try:
        probe(ident, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent has not reaped it yet still "exists" for kill(); ps shows its state.
    try:
        listing = subprocess.run(["ps", "-A", "-o", f"{column}=,stat="], capture_output=True, text=True,
                                 timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return True
    for row in listing.splitlines():
        fields = row.split()
        if len(fields) == 2 and fields[0] == str(ident) and not fields[1].startswith("Z"):
            return True
    return False


def status(run_dir: str) -> int:
    launcher = read_json(os.path.join(run_dir, LAUNCHER)) or {}
    ended = read_json(os.path.join(run_dir, EXIT))
    pgid = launcher.get("pgid")
    print(json.dumps({
        "started": launcher.get("started"),
        "alive": bool(pgid) and ended is None and alive(pgid),
        "returncode": ended.get("returncode") if ended else None,
        "ended": ended.get("ended") if ended else None,
        "error": ended.get("error") if ended else None,  # why the exit status is unknown, when it is
    }))
    return 0


def stop(run_dir: str, grace_s: float) -> int:
    """INT, then TERM, then KILL to the launcher's group, each after ``grace_s`` without it ending."""
    launcher = read_json(os.path.join(run_dir, LAUNCHER))
    if not launcher:
        print(json.dumps({"stopped": False, "reason": "no launcher was started in this run directory"}))
        return 1
    pgid = int(launcher["pgid"])
    sent = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if not alive(pgid):
            break
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        sent.append(sig.name)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and alive(pgid):
            time.sleep(0.05)
    print(json.dumps({"stopped": not alive(pgid), "signals": sent}))
    return 0


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if args is None else args)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(prog="supervise.py")
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("start", "follow", "status", "stop"):
        action = sub.add_parser(name)
        action.add_argument("run_dir")
        if name == "follow":
            action.add_argument("--offset", type=int, default=0)
        if name == "stop":
            action.add_argument("--grace-s", type=float, default=1.5)
    parsed = parser.parse_args(argv)
    if parsed.action == "start":
        if not command:
            parser.error("start needs the launcher's command after --")
        return start(parsed.run_dir, command)
    if parsed.action == "follow":
        return follow(parsed.run_dir, parsed.offset)
    if parsed.action == "status":
        return status(parsed.run_dir)
    return stop(parsed.run_dir, parsed.grace_s)


if __name__ == "__main__":
    sys.exit(main())
