"""Follow a run: replay its history, stream the head node's output live, judge the run by its events.

The head node's ``output.log`` is mirrored byte for byte into ``<corral home>/runs/<id>/output.log``,
so a replay is local and fast and ``corral logs`` works when the head is unreachable. One follower at
a time writes the mirror (a lock file); another follower reads the head's log from the start instead.

Faults: a rank that dies ends mpirun within seconds and the run fails with the rank named. When no
rank has said anything for ``RunMonitor.silence_threshold_s`` (a cut link stalls every rank; mpirun
itself waits ~15 s), every node is probed over a fresh SSH login and the unreachable ones are named.
If no node answers at all, the problem is this computer's network: the run is left alone. When the
connection to the head node drops, the nodes are probed the same way: a head that does not answer fails
the run (its output and checkpoints are there, so the failure says what is still possible), one that
answers is followed again from the byte where the follow stopped. A follower also keeps the run record's
state and step current, so `corral runs` shows a live run as running.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from cluster.errors import ClusterError
from cluster.home import CorralHome
from cluster.run_hosts import RunHosts
from cluster.run_monitor import OnFollowedLine, RunMonitor, unreachable_failure
from cluster.run_status import RunState, RunStatus
from cluster.run_stop import StopReport, stop_launcher, sweep_nodes, sweep_pending
from cluster.runs import RunRecord, list_runs, load_record, mirror_path, run_dir, update_record

WATCH_INTERVAL_S = 0.25
PROGRESS_EVERY_S = 5.0  # how often a follower writes the step into the run record
FOLLOW_RETRIES = 3  # follows of the head that end early without output before giving up
REFRESH_TIMEOUT_S = 10.0  # refresh_live_runs: how long one head may take to answer
log = logging.getLogger(__name__)


@contextlib.contextmanager
def mirror_lock(home: CorralHome, run_id: str) -> Iterator[bool]:
    """True when this process may write the run's mirror (no other follower holds it)."""
    path = run_dir(home, run_id) / "follow.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def replay_mirror(path: Path, monitor: RunMonitor, on_line: OnFollowedLine | None, *, writable: bool) -> int:
    """Feed the mirror's complete lines; returns the byte offset after them (a torn last line is dropped)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    end = data.rfind(b"\n") + 1
    if writable and end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    for raw in data[:end].decode(errors="replace").split("\n")[:-1]:
        for line in monitor.feed(raw, replayed=True):
            if on_line is not None:
                on_line(line)
    return end


def _finish_from_record(status: RunStatus, record: RunRecord) -> RunStatus:
    """What corral decided earlier (stopped, failed by silence) stands over what the events alone say."""
    if record.stop_requested and status.state is not RunState.FINISHED:
        status.state, status.failure = RunState.STOPPED, None
    elif record.state == "failed" and (status.state is not RunState.FAILED or record.failure):
        # The first reason recorded stands: later ones (the launcher ended, …) are its consequences.
        status.state, status.failure = RunState.FAILED, record.failure or status.failure
    elif record.state == "stopped":
        status.state = RunState.STOPPED
    return status


def _save(home: CorralHome, record: RunRecord, status: RunStatus, *, ended: bool, unreachable: tuple[str, ...] | None = None) -> None:
    changes = dict(state=status.state.value, failure=status.failure, step=status.step, total_steps=status.total_steps)
    if ended:
        changes["ended"] = time.time()
    if unreachable is not None:
        changes["unreachable"] = unreachable
    update_record(home, record.id, **changes)


async def follow_run(home: CorralHome, run_id: str, *, on_line: OnFollowedLine, replay: bool = True) -> RunStatus:
    """Replay the run's whole history (unless ``replay`` is False), then stream it live until it is over."""
    record = load_record(home, run_id)
    monitor = RunMonitor(RunStatus(rank_nodes=list(record.rank_nodes)), backend=record.backend)
    history = on_line if replay else None
    mirror = mirror_path(home, record.id)
    if record.ended is not None:
        replay_mirror(mirror, monitor, history, writable=False)
        for line in monitor.flush(replayed=True):
            if history is not None:
                history(line)
        return _finish_from_record(monitor.status, record)
    with mirror_lock(home, record.id) as writable:
        offset = replay_mirror(mirror, monitor, history, writable=True) if writable else 0
        sink = open(mirror, "ab") if writable else None
        try:
            return await _follow_live(home, record, monitor, offset, sink, on_line, replayed_upto=offset)
        finally:
            if sink is not None:
                sink.close()


class _ProgressNote:
    """Keeps the run record's state and step close to what a follower sees, at little cost.

    The record is rewritten when the state changes (starting → running) and at most every
    ``PROGRESS_EVERY_S`` for the step, so `corral runs` shows a live run as running.
    """

    def __init__(self, home: CorralHome, run_id: str) -> None:
        self.home, self.run_id = home, run_id
        self._state: str | None = None
        self._written = 0.0

    def note(self, status: RunStatus) -> None:
        if status.state.is_over or status.state is RunState.STARTING:
            return  # the end is recorded by whoever decides it; "starting" is what the record says already
        now = time.monotonic()
        if status.state.value == self._state and now - self._written < PROGRESS_EVERY_S:
            return
        self._state, self._written = status.state.value, now
        current = load_record(self.home, self.run_id)
        if current.state_is_over() or current.stop_requested or current.ended is not None:
            return  # a stop or a failure recorded meanwhile stands
        update_record(self.home, self.run_id, state=status.state.value, step=status.step,
                      total_steps=status.total_steps)


async def _follow_live(home: CorralHome, record: RunRecord, monitor: RunMonitor, offset: int, sink: IO[bytes] | None,
                       on_line: OnFollowedLine, *, replayed_upto: int) -> RunStatus:
    status = monitor.status
    python, supervise = record.supervisor
    progress = _ProgressNote(home, record.id)
    progress.note(status)
    received = offset  # bytes of the head's output.log taken so far: a new follow continues from here

    def take(stream: str, text: str) -> None:
        nonlocal received
        if stream != "stdout":
            return  # supervise.py's own complaints; the launcher's output is all in output.log
        received += len(text.encode()) + 1
        if sink is not None:
            sink.write(text.encode() + b"\n")
            sink.flush()
        for line in monitor.feed(text):
            on_line(line)
        progress.note(status)

    async with RunHosts.for_record(home, record) as hosts:
        names = list(dict.fromkeys(record.nodes))
        output_complete = False
        dead: list[str] = []
        drops_without_output = 0
        monitor.started_watching = time.time()
        while True:
            try:
                head = await hosts.host(record.head)
            except ClusterError:
                dead = await _unreachable_nodes(hosts, names)
                if not dead:
                    raise
                status.fail(unreachable_failure(status, dead, record.head, "the head node does not answer", record.id))
                _save(home, record, status, ended=False, unreachable=tuple(dead))
                break
            followed_from = received
            follow = asyncio.ensure_future(head.run([python, supervise, "follow", record.remote_run_dir,
                                                     "--offset", str(received)], check=False, on_line=take))
            try:
                while not follow.done():
                    await asyncio.wait({follow}, timeout=WATCH_INTERVAL_S)
                    if not follow.done() and monitor.is_silent():
                        log.info("run %s: no rank spoke for %.1f s (threshold %.1f s); probing the nodes", record.id,
                                 monitor.silent_for_s(), monitor.silence_threshold_s())
                        dead = await _unreachable_nodes(hosts, names)
                        log.info("run %s: unreachable: %s", record.id, dead or "none")
                        if dead:
                            status.fail(unreachable_failure(status, dead, record.head,
                                                            f"no rank spoke for {monitor.silent_for_s():.0f} s",
                                                            record.id))
                            # Recorded at once: ending the stalled launcher below takes a few seconds more.
                            _save(home, record, status, ended=False, unreachable=tuple(dead))
                            break
                        monitor.heard_now()
            finally:
                if not follow.done():
                    follow.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClusterError):
                    await follow
            if dead:
                break
            error = None if follow.cancelled() else follow.exception()
            if error is None and follow.result().exit_status == 0:
                output_complete = True  # supervise.py follow ends only once the launcher has ended
                break
            # The connection to the head dropped (or the follow was cut off): a dead node, or a passing glitch.
            dead = await _unreachable_nodes(hosts, names)
            log.info("run %s: the follow on %s ended early (%s); unreachable: %s", record.id, record.head,
                     error or "no exit status", dead or "none")
            if dead:
                status.fail(unreachable_failure(status, dead, record.head, "the connection to the head node dropped",
                                                record.id))
                _save(home, record, status, ended=False, unreachable=tuple(dead))
                break
            drops_without_output = drops_without_output + 1 if received == followed_from else 0
            if drops_without_output >= FOLLOW_RETRIES:
                if isinstance(error, ClusterError):
                    raise error
                raise ClusterError(f"Following run {record.id} on {record.head} kept ending without output; "
                                   f"`corral status {record.id}` shows where it is.")
        for line in monitor.flush():
            on_line(line)
        if output_complete and not status.state.is_over:
            await _judge_ended_launcher(hosts, record, monitor, names)
        status = _finish_from_record(status, load_record(home, record.id))
        unreachable = None
        if status.state is RunState.FAILED and not output_complete:
            unreachable = await _end_failed_run(hosts, record, names, dead)
    _save(home, record, status, ended=output_complete, unreachable=unreachable)
    return status


async def _end_failed_run(hosts: RunHosts, record: RunRecord, names: list[str], dead: list[str]) -> tuple[str, ...]:
    """The run failed while its launcher may still wait on a dead node: end it and clear every node that answers.

    Nodes that just failed a probe are not tried again (each try would wait out a timeout); returns the
    nodes left to sweep later.
    """
    report = StopReport(record.id)
    report.unreachable.update({name: "it did not answer a probe" for name in dead})
    if record.head not in report.unreachable:
        await stop_launcher(hosts, record, report)
    await sweep_nodes(hosts, record, [n for n in names if n not in report.unreachable], report)
    return tuple(n for n in names if n in report.unreachable)


async def _unreachable_nodes(hosts: RunHosts, names: list[str]) -> list[str]:
    """Nodes that do not answer now; empty also when none answers (this computer's network is down)."""
    answers = await hosts.probe(names)
    dead = [name for name, why in answers.items() if why is not None]
    if len(dead) == len(names) and len(names) > 1:
        return []
    return dead


async def _judge_ended_launcher(hosts: RunHosts, record: RunRecord, monitor: RunMonitor, names: list[str]) -> None:
    """The launcher exited: finished if every rank said done; otherwise name a dead node if there is one."""
    status = monitor.status
    returncode: int | None = None
    python, supervise = record.supervisor
    with contextlib.suppress(ClusterError, ValueError):
        head = await hosts.host(record.head)
        result = await head.run([python, supervise, "status", record.remote_run_dir], check=False, timeout_s=20)
        returncode = json.loads(result.stdout.strip().splitlines()[-1]).get("returncode")
    expected = status.world_size or record.world_size
    if sum(r.done for r in status.ranks.values()) < expected and not record.stop_requested:
        dead = await _unreachable_nodes(hosts, names)
        if dead:
            status.fail(unreachable_failure(status, dead, record.head, "the launcher ended", record.id))
        elif monitor.launcher_tail():
            status.launcher_ended(returncode)
            if status.failure:
                status.failure += f"; the launcher said: {monitor.launcher_tail()}"
            return
    status.launcher_ended(returncode)


async def run_status(home: CorralHome, run_id: str) -> RunStatus:
    """The run's status now: its history, anything new on the head, whether the launcher lives; sweeps leftovers."""
    record = load_record(home, run_id)
    monitor = RunMonitor(RunStatus(rank_nodes=list(record.rank_nodes)), backend=record.backend)
    mirror = mirror_path(home, record.id)
    names = list(dict.fromkeys(record.nodes))
    if record.ended is not None and not record.unreachable:
        replay_mirror(mirror, monitor, None, writable=False)
        monitor.flush()
        return _finish_from_record(monitor.status, record)
    python, supervise = record.supervisor
    with mirror_lock(home, record.id) as writable:
        offset = replay_mirror(mirror, monitor, None, writable=writable)
        if not writable:
            monitor = RunMonitor(RunStatus(rank_nodes=list(record.rank_nodes)), backend=record.backend)
            offset = 0
        status = monitor.status
        ended = False
        unreachable: tuple[str, ...] | None = None
        async with RunHosts.for_record(home, record) as hosts:
            if record.unreachable:
                unreachable = await sweep_pending(hosts, record)
            if record.ended is not None:  # the output is complete; only the sweep was pending
                update_record(home, record.id, unreachable=unreachable or ())
                return _finish_from_record(status, record)
            if record.head in (unreachable or ()):
                # The head, which holds the run's output, still does not answer (the sweep just tried it):
                # what this computer has is all there is, and asking again would only wait out another timeout.
                if not status.state.is_over:
                    status.fail(unreachable_failure(status, [record.head], record.head, "the head node does not answer",
                                                    record.id))
                status = _finish_from_record(status, load_record(home, record.id))
                _save(home, record, status, ended=False, unreachable=unreachable)
                return status
            try:
                head = await hosts.host(record.head)
                info = await _launcher_info(head, python, supervise, record)
                catch_up = await head.run(["tail", "-c", f"+{offset + 1}", f"{record.remote_run_dir}/output.log"],
                                          check=False, timeout_s=60)
                text = catch_up.stdout
                complete = text[: text.rfind("\n") + 1]
                if writable and complete:
                    with open(mirror, "ab") as sink:
                        sink.write(complete.encode())
                for raw in complete.split("\n")[:-1]:
                    monitor.feed(raw, replayed=True)
            except ClusterError:
                dead = await _unreachable_nodes(hosts, names)
                if dead:
                    if not status.state.is_over:
                        status.fail(unreachable_failure(status, dead, record.head, "the head node does not answer",
                                                        record.id))
                    # Nobody may be following: the ranks on the nodes that answer would wait for the head forever.
                    unreachable = await _end_failed_run(hosts, record, names, dead)
                status = _finish_from_record(status, load_record(home, record.id))
                _save(home, record, status, ended=False, unreachable=unreachable)
                return status
            if not info.get("alive"):
                if not status.state.is_over:
                    monitor.flush()
                    await _judge_ended_launcher(hosts, record, monitor, names)
                ended = writable
            elif not status.state.is_over and status.last_event_time is not None:
                silent_s = time.time() - status.last_event_time
                if silent_s > monitor.silence_threshold_s():
                    dead = await _unreachable_nodes(hosts, names)
                    if dead:
                        status.fail(unreachable_failure(status, dead, record.head, f"no rank spoke for {silent_s:.0f} s",
                                                        record.id))
                        unreachable = await _end_failed_run(hosts, record, names, dead)
    status = _finish_from_record(status, load_record(home, record.id))
    _save(home, record, status, ended=ended, unreachable=unreachable)
    return status


async def refresh_live_runs(home: CorralHome, *, timeout_s: float = REFRESH_TIMEOUT_S) -> list[RunRecord]:
    """Every run's record (newest first) after asking the head nodes of the live ones how they are, all at once.

    For `corral runs`: a run nobody follows would otherwise show the state its record had at launch. A head
    that does not answer within ``timeout_s`` leaves its record as it was.
    """
    live = [record for record in list_runs(home) if not record.state_is_over() and record.ended is None]

    async def refresh(record: RunRecord) -> None:
        with contextlib.suppress(ClusterError, asyncio.TimeoutError):
            await asyncio.wait_for(run_status(home, record.id), timeout_s)

    await asyncio.gather(*(refresh(record) for record in live))
    return list_runs(home)


async def _launcher_info(head, python: str, supervise: str, record: RunRecord) -> dict:  # noqa: ANN001 - a Host
    result = await head.run([python, supervise, "status", record.remote_run_dir], check=False, timeout_s=20)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


__all__ = ["follow_run", "refresh_live_runs", "replay_mirror", "run_status"]
