"""Stop a run everywhere: INT, TERM, KILL to the launcher's process group on the head, then sweep every node.

The sweep finds the run's ranks by the ``-X corral-run=<id>`` mark on their command line, so it also
catches ranks a cut link orphaned (mpirun gone, ranks still there); nodes that cannot be reached are
remembered in the run record and swept by the next corral command that touches the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from cluster.errors import ClusterError
from cluster.home import CorralHome
from cluster.launch_plan import SWEEP_SCRIPT
from cluster.run_hosts import RunHosts
from cluster.runs import RunRecord, load_record, update_record

STOP_GRACE_S = 1.2  # per signal: INT, then TERM, then KILL
SWEEP_TIMEOUT_S = 10.0


@dataclass
class StopReport:
    """What ``stop_run`` did, per node."""

    run_id: str
    launcher_stopped: bool | None = None  # None: the head node could not be asked
    signals: list[str] = field(default_factory=list)
    swept: dict[str, bool] = field(default_factory=dict)  # node → whether any process of the run was found
    unreachable: dict[str, str] = field(default_factory=dict)  # node → why it could not be swept
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.unreachable

    @property
    def message(self) -> str:
        if self.unreachable:
            names = ", ".join(self.unreachable)
            return (f"Run {self.run_id} stopped where reachable; {names} could not be reached, and corral will clear "
                    f"the run there when it is back (`corral stop {self.run_id}` again, or `corral status`).")
        return f"Run {self.run_id} stopped on every node in {self.elapsed_s:.1f} s."


async def stop_launcher(hosts: RunHosts, record: RunRecord, report: StopReport) -> None:
    try:
        head = await hosts.host(record.head)
        python, supervise = record.supervisor
        result = await head.run([python, supervise, "stop", record.remote_run_dir, "--grace-s", str(STOP_GRACE_S)],
                                check=False, timeout_s=STOP_GRACE_S * 3 + 10)
    except ClusterError as exc:
        report.unreachable[record.head] = str(exc)
        return
    for line in result.stdout.splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        report.launcher_stopped = bool(data.get("stopped"))
        report.signals = list(data.get("signals", []))


async def sweep_nodes(hosts: RunHosts, record: RunRecord, names: Sequence[str], report: StopReport) -> None:
    """Kill what is left of the run on each named node, all at once; unreachable nodes are reported."""

    async def one(name: str) -> None:
        try:
            host = await hosts.host(name)
            # Open MPI daemons left without ranks are swept on nodes only: locally they may be anyone's.
            result = await host.run(["sh", "-c", SWEEP_SCRIPT, "corral-sweep", record.id,
                                     "" if record.local else "orted"], check=False, timeout_s=SWEEP_TIMEOUT_S)
        except ClusterError as exc:
            report.unreachable[name] = str(exc)
            return
        report.swept[name] = "CORRAL-SWEPT 1" in result.stdout

    await asyncio.gather(*(one(name) for name in dict.fromkeys(names)))


async def stop_run(home: CorralHome, run_id: str) -> StopReport:
    """End every process of the run on every node (within a few seconds), and record it as stopped."""
    started = time.monotonic()
    record = load_record(home, run_id)
    if not record.state_is_over():
        record = update_record(home, record.id, stop_requested=True)
    report = StopReport(record.id)
    others = [name for name in dict.fromkeys(record.nodes) if name != record.head]
    async with RunHosts.for_record(home, record) as hosts:
        # The other nodes are swept while mpirun winds down: their ranks end either way.
        await asyncio.gather(stop_launcher(hosts, record, report), sweep_nodes(hosts, record, others, report))
        if record.head not in report.unreachable:
            await sweep_nodes(hosts, record, [record.head], report)
    report.elapsed_s = time.monotonic() - started
    changes: dict = {"unreachable": tuple(report.unreachable)}
    if not record.state_is_over():
        changes.update(state="stopped", failure=None)
    update_record(home, record.id, **changes)
    return report


async def sweep_pending(hosts: RunHosts, record: RunRecord) -> tuple[str, ...]:
    """Retry the sweep on nodes that were unreachable before; returns those still unreachable."""
    if not record.unreachable:
        return ()
    report = StopReport(record.id)
    if record.head in record.unreachable:
        # The launcher there first, through its supervisor, which then records the end (exit.json): a sweep alone
        # would kill the supervisor too, and readers of the head's log would wait for that record forever.
        await stop_launcher(hosts, record, report)
    await sweep_nodes(hosts, record, [n for n in record.unreachable if n not in report.unreachable], report)
    return tuple(report.unreachable)


__all__ = ["StopReport", "stop_run", "sweep_nodes", "stop_launcher", "sweep_pending"]
