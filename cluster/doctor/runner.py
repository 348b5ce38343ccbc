"""Run every doctor check over one SessionPool: per-node probes concurrently, then the cluster-wide checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.doctor.fabric import DEFAULT_FABRIC_TIMEOUT_S, judge_fabric, run_fabric
from cluster.doctor.model import (
    CHECKS,
    CLUSTER,
    DoctorFinished,
    DoctorReport,
    DoctorStarted,
    OnDoctorEvent,
    ResultLog,
    Status,
    failed,
    passed,
    skipped,
    sort_results,
)
from cluster.doctor.node_checks import (
    code_result,
    mpi_address_result,
    mpirun_results,
    resources_result,
    venv_result,
    version_results,
)
from cluster.doctor.node_probe import NodeFacts, address_in, node_probe_argv, parse_node_probe
from cluster.doctor.reachability import Participant, check_reachability
from cluster.errors import AuthFailed, ClusterError, HostKeyChanged, HostKeyUnknown
from cluster.inventory import Inventory, Node
from cluster.layout import RemoteLayout
from cluster.mesh import PEER_PROBES_PER_NODE, peer_probe_argv
from cluster.ssh import NodeSession, SessionPool

PROBE_TIMEOUT_S = 60
PEER_PROBE_TIMEOUT_S = 20
# Checks that need a working SSH session to the node; skipped, with the reason, when it has none.
NEEDS_SSH = ("code", "venv", "python-version", "mlx-version", "resources", "mpirun", "node-ssh", "mpi-address",
             "reachability")


@dataclass(frozen=True)
class DoctorOptions:
    fabric_timeout_s: int = DEFAULT_FABRIC_TIMEOUT_S


@dataclass
class _NodeState:
    node: Node
    session: NodeSession | None = None
    facts: NodeFacts | None = None
    why_no_session: str = ""


async def run_doctor(
    inventory: Inventory,
    pool: SessionPool,
    *,
    on_event: OnDoctorEvent | None = None,
    options: DoctorOptions = DoctorOptions(),
) -> DoctorReport:
    """Check the whole cluster; one node's failure never stops the checks of the others."""
    started = time.monotonic()
    names = tuple(inventory.names())
    if on_event is not None:
        on_event(DoctorStarted(CHECKS, names))
    log = ResultLog(on_event)
    layout = RemoteLayout.for_project(inventory.project) if inventory.project else None
    network = inventory.effective_network()

    states = await asyncio.gather(*(_connect(node, pool, log) for node in inventory.nodes))
    connected = [state.node for state in states if state.session is not None]
    await asyncio.gather(*(_probe_node(state, connected, layout, network, log) for state in states if state.session))
    for state in states:
        if state.session is None:
            for check in NEEDS_SSH:
                log.add(skipped(state.node.name, check, state.why_no_session))

    for state in states:
        if state.session is not None and state.facts is None:
            for check in ("python-version", "mlx-version", "mpirun"):
                log.add(skipped(state.node.name, check, "the check script failed"))
    probed = {state.node.name: state.facts for state in states if state.facts is not None}
    order = [name for name in names if name in probed]
    venv_ok = [name for name in order if log.status("venv", name) in (Status.PASS, Status.WARN)]
    skip_reasons = {name: ("no project synced yet" if layout is None else "venv failed") for name in order}
    for result in version_results(probed, venv_ok, order, skip_reasons):  # type: ignore[arg-type]  # facts present for order
        log.add(result)
    for result in mpirun_results(probed, order):  # type: ignore[arg-type]  # facts present for order
        log.add(result)

    await _reachability(states, layout, network, log)
    await _fabric(inventory, states, layout, network, log, options)

    report = DoctorReport(names, tuple(sort_results(log.results, names)), time.monotonic() - started)
    if on_event is not None:
        on_event(DoctorFinished(report))
    return report


async def _connect(node: Node, pool: SessionPool, log: ResultLog) -> _NodeState:
    state = _NodeState(node)
    try:
        state.session = await pool.session(node)
    except (HostKeyChanged, HostKeyUnknown) as exc:
        log.add(skipped(node.name, "ssh", "host key not accepted"))
        log.add(failed(node.name, "host-key", str(exc)))
        state.why_no_session = "host key not accepted"
        return state
    except AuthFailed as exc:
        log.add(failed(node.name, "ssh", str(exc)))
        log.add(passed(node.name, "host-key", "matches the accepted key"))
        state.why_no_session = "SSH failed"
        return state
    except ClusterError as exc:
        log.add(failed(node.name, "ssh", str(exc)))
        log.add(skipped(node.name, "host-key", "SSH failed"))
        state.why_no_session = "SSH failed"
        return state
    log.add(passed(node.name, "ssh", node.destination))
    log.add(passed(node.name, "host-key", "matches the accepted key"))
    return state


async def _probe_node(state: _NodeState, connected: Sequence[Node], layout: RemoteLayout | None,
                      network: str | None, log: ResultLog) -> None:
    """One probe script and the node-to-node SSH probes, at once over the node's session."""
    session = state.session
    assert session is not None
    name = state.node.name
    argv = node_probe_argv(layout.code_dir if layout else None, layout.venv_python if layout else None)
    probe, peers = await asyncio.gather(
        session.run(argv, check=False, timeout_s=PROBE_TIMEOUT_S),
        _probe_peers(session, [peer for peer in connected if peer.name != name]),
        return_exceptions=True,
    )
    if isinstance(peers, BaseException):
        log.add(failed(name, "node-ssh", _sentence(name, peers)))
    else:
        log.add(peers)
    if isinstance(probe, BaseException) or not parse_node_probe(probe.stdout).complete:
        why = _sentence(name, probe) if isinstance(probe, BaseException) else (
            f"{name}: the check script did not finish ({_tail(probe.stderr or probe.stdout)}); "
            "check that the node's shell is a POSIX sh and run `corral doctor` again.")
        for check in ("code", "venv", "resources", "mpi-address"):
            log.add(failed(name, check, why) if check == "code" else skipped(name, check, "the check script failed"))
        return
    facts = state.facts = parse_node_probe(probe.stdout)
    if layout is None:
        log.add(failed(name, "code", "no project synced yet: run `corral sync PATH` to copy your project to the nodes."))
        log.add(skipped(name, "venv", "no project synced yet"))
    else:
        log.add(code_result(name, facts, layout))
        log.add(venv_result(name, facts, layout))
    log.add(resources_result(name, facts))
    log.add(mpi_address_result(name, facts, network))


async def _probe_peers(session: NodeSession, peers: Sequence[Node]):  # noqa: ANN202 - returns a CheckResult
    name = session.node.name
    if not peers:
        return passed(name, "node-ssh", "no other node to reach")
    limit = asyncio.Semaphore(PEER_PROBES_PER_NODE)

    async def probe(peer: Node) -> str | None:
        async with limit:
            try:
                result = await session.run(peer_probe_argv(peer), check=False, timeout_s=PEER_PROBE_TIMEOUT_S)
            except ClusterError as exc:
                return f"{name} could not run ssh to {peer.name}: {exc}"
        if result.ok:
            return None
        return peer_ssh_sentence(name, peer, result.stderr, result.exit_status)

    problems = [p for p in await asyncio.gather(*(probe(peer) for peer in peers)) if p]
    if problems:
        return failed(name, "node-ssh", " ".join(problems), f"{len(peers) - len(problems)} of {len(peers)} peers")
    return passed(name, "node-ssh", f"reaches {len(peers)} peer(s)")


# What ssh prints when the network, not the keys, is the problem.
NETWORK_TROUBLE = ("No route to host", "Connection timed out", "Connection refused", "Network is unreachable",
                   "Could not resolve hostname", "Operation timed out")


def peer_ssh_sentence(name: str, peer: Node, stderr: str, exit_status: int | None) -> str:
    """Why ``name`` could not ssh to ``peer``, and the fix: keys for a refusal, the network otherwise."""
    said = _tail(stderr) if stderr.strip() else f"exit status {exit_status}"
    where = f"{name} cannot log in to {peer.name} ({peer.address}) by key without a prompt ({said})"
    if any(marker in stderr for marker in NETWORK_TROUBLE):
        return (f"{where}; check that sshd runs on {peer.name} and that {name} reaches it over the network "
                "(see the TCP row), then run `corral doctor` again.")
    return f"{where}; run `corral keys` to set up node-to-node access."


async def _reachability(states: Sequence[_NodeState], layout: RemoteLayout | None, network: str | None,
                        log: ResultLog) -> None:
    participants = []
    for state in states:
        name = state.node.name
        if state.session is None:
            continue
        if state.facts is None or log.status("mpi-address", name) is not Status.PASS or network is None:
            log.add(skipped(name, "reachability", "no address on the MPI network"))
            continue
        address = address_in(state.facts.addresses, network)
        assert address is not None  # mpi-address passed
        # The venv's Python when it works; the system's otherwise, so the network is tested regardless.
        python = "python3"
        if layout is not None and log.status("venv", name) in (Status.PASS, Status.WARN):
            python = layout.venv_python
        participants.append(Participant(name, address.ip, python, state.session))
    if network is not None and participants:
        for result in await check_reachability(participants, network):
            log.add(result)


async def _fabric(inventory: Inventory, states: Sequence[_NodeState], layout: RemoteLayout | None,
                  network: str | None, log: ResultLog, options: DoctorOptions) -> None:
    head = inventory.nodes[0] if inventory.nodes else None
    if head is None:
        return
    blockers = _fabric_blockers(inventory, log, layout, network)
    if blockers:
        log.add(skipped(CLUSTER, "fabric", f"needs {'; '.join(blockers)}"))
        return
    head_session = states[0].session
    assert head_session is not None and layout is not None and network is not None
    run = await run_fabric(head_session, list(inventory.nodes), network, layout.venv_python, options.fabric_timeout_s)
    hostnames = {state.node.name: state.facts.hostname for state in states if state.facts is not None}
    for result in judge_fabric(run, list(inventory.nodes), head.name, hostnames, options.fabric_timeout_s):
        log.add(result)


def _fabric_blockers(inventory: Inventory, log: ResultLog, layout: RemoteLayout | None,
                     network: str | None) -> list[str]:
    """What must pass before mpirun can be tried; each entry names the check and the nodes that failed it."""
    if layout is None:
        return ["a synced project and its venv (`corral sync PATH`, then `corral env`)"]
    if network is None:
        return ["an MPI network (`corral network CIDR`)"]
    head = inventory.nodes[0].name
    names = inventory.names()
    wanted = [
        ("ssh", names, "SSH"),
        ("venv", names, "a working venv"),
        ("mpirun", names, "mpirun"),
        ("node-ssh", [head], "node-to-node SSH from the head node"),
        ("reachability", names, "TCP between nodes"),
    ]
    blockers = []
    for check, nodes, label in wanted:
        bad = [name for name in nodes if log.status(check, name) not in (Status.PASS, Status.WARN)]
        if bad:
            blockers.append(f"{label} on {', '.join(bad)}")
    return blockers


def _sentence(name: str, exc: BaseException) -> str:
    if isinstance(exc, ClusterError):
        return str(exc)
    return f"{name}: unexpected error (a bug in corral, please report it): {exc!r}"


def _tail(text: str, count: int = 2) -> str:
    return " / ".join(text.strip().splitlines()[-count:]) or "no output"
