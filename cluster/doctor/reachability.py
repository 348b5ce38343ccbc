"""TCP from every node to every other node's MPI address, on an ephemeral port as MPI uses, with errno explained."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.doctor.model import CheckResult, failed, passed
from cluster.errors import ClusterError
from cluster.ssh import NodeSession

CONNECT_TIMEOUT_S = 3.0
# The listener gives up on its own after this long even if nobody stops it: it never outlives a doctor run.
LISTENER_DEADLINE_S = 20.0
LISTENER_START_TIMEOUT_S = 15.0

# argv: bind address, number of peers expected, deadline in seconds. Prints its port, then accepts.
LISTENER_PY = r"""
import os, select, socket, sys, time
ip, expected, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind((ip, 0))
server.listen(64)
print("CORRAL-LISTEN %d %d" % (server.getsockname()[1], os.getpid()), flush=True)
end, accepted = time.monotonic() + deadline, 0
while accepted < expected and time.monotonic() < end:
    ready, _, _ = select.select([server], [], [], max(0.0, end - time.monotonic()))
    if ready:
        connection, _ = server.accept()
        connection.close()
        accepted += 1
print("CORRAL-ACCEPTED %d" % accepted, flush=True)
"""

# argv: timeout in seconds, then (name, address, port) triples. Connects to all at once, prints one JSON line.
CONNECTOR_PY = r"""
import errno, json, select, socket, sys, time
timeout, rest = float(sys.argv[1]), sys.argv[2:]
results, pending = {}, {}
for i in range(0, len(rest), 3):
    name, address, port = rest[i], rest[i + 1], int(rest[i + 2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    code = sock.connect_ex((address, port))
    if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
        pending[sock] = name
        continue
    results[name] = "ok" if code == 0 else errno.errorcode.get(code, str(code))
    sock.close()
end = time.monotonic() + timeout
while pending and time.monotonic() < end:
    _, writable, _ = select.select([], list(pending), [], max(0.0, end - time.monotonic()))
    for sock in writable:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        results[pending.pop(sock)] = "ok" if code == 0 else errno.errorcode.get(code, str(code))
        sock.close()
for sock, name in pending.items():
    results[name] = "TIMEOUT"
    sock.close()
print("CORRAL-REACH " + json.dumps(results), flush=True)
"""


@dataclass(frozen=True)
class Participant:
    """A node taking part: its name, its address on the MPI network, and a Python to run the probes with."""

    name: str
    ip: str
    python: str
    session: NodeSession


def explain_connect_error(source: str, target: str, target_ip: str, code: str, network: str) -> str:
    """The sentence for one failed connection: what the errno means here and what to do."""
    where = f"{source} cannot open a TCP connection to {target} at {target_ip}"
    if code == "ECONNREFUSED":
        return (f"{where}: refused, although corral's test listener was running there, so a firewall on {target} "
                f"rejects it; allow incoming TCP from {network} on {target} (Linux: `sudo ufw allow from {network}`; "
                "macOS: System Settings › Network › Firewall).")
    if code in ("EHOSTUNREACH", "ENETUNREACH"):
        kind = "no route to the host" if code == "EHOSTUNREACH" else "network unreachable"
        return (f"{where}: {kind} ({code}); check the cable or switch between them and that {source} has a route "
                f"to {network} (`ip route` or `netstat -rn` on {source}).")
    if code in ("TIMEOUT", "ETIMEDOUT"):
        return (f"{where}: timed out after {CONNECT_TIMEOUT_S:g} s, so packets are silently dropped: a firewall "
                f"(e.g. the macOS firewall in stealth mode) on {target}, or a cut link; allow incoming TCP from "
                f"{network} on {target} and check the cable.")
    if code in ("EACCES", "EPERM"):
        return (f"{where}: forbidden ({code}) by a firewall rule on {source} or {target}; allow TCP within {network} "
                "on both.")
    return f"{where} ({code}); check the network between them, then run `corral doctor` again."


def listener_argv(participant: Participant, expected: int) -> list[str]:
    return [participant.python, "-I", "-c", LISTENER_PY, participant.ip, str(expected), str(LISTENER_DEADLINE_S)]


def connector_argv(python: str, targets: Sequence[tuple[str, str, int]]) -> list[str]:
    argv = [python, "-I", "-c", CONNECTOR_PY, str(CONNECT_TIMEOUT_S)]
    for name, ip, port in targets:
        argv += [name, ip, str(port)]
    return argv


def parse_connector_output(text: str) -> dict[str, str] | None:
    for line in text.splitlines():
        if line.startswith("CORRAL-REACH "):
            try:
                data = json.loads(line[len("CORRAL-REACH "):])
            except ValueError:
                return None
            return {str(k): str(v) for k, v in data.items()}
    return None


async def check_reachability(participants: Sequence[Participant], network: str) -> list[CheckResult]:
    """One ``reachability`` result per participant: can it reach every other participant's MPI address?"""
    if len(participants) < 2:
        return [passed(p.name, "reachability", "no other node to reach") for p in participants]
    listening: dict[str, tuple[int, int]] = {}  # name → (port, pid)
    started: dict[str, asyncio.Future[tuple[int, int]]] = {}
    loop = asyncio.get_running_loop()

    def on_line_for(name: str):  # noqa: ANN202 - a small closure factory
        future = started[name]

        def on_line(stream: str, line: str) -> None:
            parts = line.split()
            if stream == "stdout" and len(parts) == 3 and parts[0] == "CORRAL-LISTEN" and not future.done():
                future.set_result((int(parts[1]), int(parts[2])))

        return on_line

    listeners: dict[str, asyncio.Task] = {}
    for p in participants:
        started[p.name] = loop.create_future()
        listeners[p.name] = asyncio.ensure_future(
            p.session.run(listener_argv(p, len(participants) - 1), check=False,
                          timeout_s=LISTENER_DEADLINE_S + 10, on_line=on_line_for(p.name)))
    results: list[CheckResult] = []
    listen_errors: dict[str, str] = {}
    for p in participants:
        waiting = [started[p.name], listeners[p.name]]
        done, _ = await asyncio.wait(waiting, timeout=LISTENER_START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        if started[p.name].done():
            listening[p.name] = started[p.name].result()
        else:
            listen_errors[p.name] = _listener_problem(listeners[p.name])
    try:
        targets = [(p.name, p.ip, listening[p.name][0]) for p in participants if p.name in listening]
        outcomes = await asyncio.gather(
            *(p.session.run(connector_argv(p.python, [t for t in targets if t[0] != p.name]), check=False,
                            timeout_s=CONNECT_TIMEOUT_S + 15)
              for p in participants),
            return_exceptions=True,
        )
    finally:
        await _stop_listeners(participants, listening, listeners)
    by_name = {p.name: p for p in participants}
    for p, outcome in zip(participants, outcomes):
        problems: list[str] = []
        if isinstance(outcome, BaseException):
            problems.append(f"{p.name}: could not run the connection test ({_message(outcome)}); run `corral doctor` again.")
        else:
            reached = parse_connector_output(outcome.stdout)
            if reached is None:
                tail = " / ".join((outcome.stderr or outcome.stdout).strip().splitlines()[-2:]) or "no output"
                problems.append(f"{p.name}: the connection test did not run ({tail}); check that {p.python} works there.")
                reached = {}
            for name, code in reached.items():
                if code != "ok":
                    problems.append(explain_connect_error(p.name, name, by_name[name].ip, code, network))
        for name, why in listen_errors.items():
            if name != p.name:
                problems.append(f"{p.name} could not be tested against {name}: {why}")
        if p.name in listen_errors:
            problems.append(f"{p.name}: {listen_errors[p.name]}")
        if problems:
            results.append(failed(p.name, "reachability", " ".join(problems),
                                  f"{len(problems)} problem(s)"))
        else:
            results.append(passed(p.name, "reachability", f"reaches {len(participants) - 1} node(s)"))
    return results


def _listener_problem(task: asyncio.Task) -> str:
    if not task.done():
        return "the test listener did not start in time; check the node's load."
    if task.exception() is not None:
        return f"the test listener could not start ({_message(task.exception())})."
    result = task.result()
    tail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-2:]) or f"exit status {result.exit_status}"
    return f"the test listener could not start ({tail})."


async def _stop_listeners(participants: Sequence[Participant], listening: dict[str, tuple[int, int]],
                          listeners: dict[str, asyncio.Task]) -> None:
    """Listeners still waiting (a peer never connected) are killed now rather than at their deadline."""
    await asyncio.wait(list(listeners.values()), timeout=0.5)
    stops = []
    for p in participants:
        task = listeners[p.name]
        if not task.done() and p.name in listening:
            stops.append(p.session.run(["kill", str(listening[p.name][1])], check=False, timeout_s=10))
    if stops:
        await asyncio.gather(*stops, return_exceptions=True)
    if listeners:
        await asyncio.wait(list(listeners.values()), timeout=5)
    for task in listeners.values():
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


def _message(exc: BaseException | None) -> str:
    if isinstance(exc, ClusterError):
        return str(exc)
    return repr(exc)
