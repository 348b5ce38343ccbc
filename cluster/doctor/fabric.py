"""The MPI fabric check: mpirun on the head node runs mpi4py's allreduce and MLX's all_sum on every slot."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cluster.doctor.model import CLUSTER, CheckResult, failed, passed, skipped
from cluster.doctor.node_checks import libmpi_fix
from cluster.errors import ClusterError
from cluster.inventory import Node
from cluster.mpi_output import TagReassembler
from cluster.ssh import NodeSession

DEFAULT_FABRIC_TIMEOUT_S = 60
DOCTOR_DIR = "corral/doctor"  # on the head node, relative to its user's home
HOSTFILE = f"{DOCTOR_DIR}/hostfile"
MARKER = "CORRAL-DOCTOR "

# Runs on every rank, in the node's venv, from the node user's home; argv[1] is the expected world size.
# MLX initialises MPI first (it aborts if MPI was initialised by someone else), then mpi4py joins the same
# MPI. MLX's all_sum only runs when every rank's MLX sees the whole world, agreed through mpi4py; otherwise
# the healthy ranks would wait forever for a rank whose MLX runs alone.
RANK_PROBE_PY = r"""
import json, socket, sys
expected = int(sys.argv[1])
out = {"host": socket.gethostname()}
group = None
try:
    import mlx.core as mx
    group = mx.distributed.init(backend="mpi")
    out["mlx_rank"], out["mlx_size"] = group.rank(), group.size()
except Exception as exc:
    out["mlx_error"] = "%s: %s" % (type(exc).__name__, exc)
comm = None
try:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    out["mpi4py_rank"], out["mpi4py_size"] = comm.Get_rank(), comm.Get_size()
    out["mpi4py_sum"] = comm.allreduce(1)
except Exception as exc:
    out["mpi4py_error"] = "%s: %s" % (type(exc).__name__, exc)
sizes = comm.allgather(out.get("mlx_size", 0)) if comm is not None else [out.get("mlx_size", 0)]
if group is not None and all(size == expected for size in sizes):
    try:
        out["mlx_sum"] = mx.distributed.all_sum(mx.ones(1), group=group).item()
    except Exception as exc:
        out["mlx_error"] = "%s: %s" % (type(exc).__name__, exc)
else:
    out["mlx_sum_skipped"] = sizes
print("CORRAL-DOCTOR " + json.dumps(out), flush=True)
"""

# $1 timeout (whole seconds), $2 -np, $3 network CIDR, $4 venv python, $5 rank probe, $6 world size;
# the hostfile arrives on stdin. A watchdog stops mpirun (TERM, then KILL) if it outlives the timeout,
# so nothing stays behind on the nodes even when the SSH connection that started it is gone.
FABRIC_SCRIPT = r"""
cd || exit 97
mkdir -p corral/doctor || exit 98
cat > corral/doctor/hostfile.tmp && mv -f corral/doctor/hostfile.tmp corral/doctor/hostfile || exit 98
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun --hostfile corral/doctor/hostfile -np "$2" \
  --mca oob_tcp_if_include "$3" --mca btl_tcp_if_include "$3" --mca plm_rsh_no_tree_spawn 1 \
  --tag-output sh -c 'cd && exec "$0" -I -c "$1" "$2"' "$4" "$5" "$6" </dev/null &
mp=$!
echo "CORRAL-MPIRUN-PID $mp"
( i=0
  while [ "$i" -lt "$1" ]; do sleep 1; kill -0 "$mp" 2>/dev/null || exit 0; i=$((i + 1)); done
  kill -TERM "$mp" 2>/dev/null; sleep 5; kill -KILL "$mp" 2>/dev/null ) >/dev/null 2>&1 &
wait "$mp"
echo "CORRAL-MPIRUN-EXIT $?"
"""


def hostfile_text(nodes: Sequence[Node]) -> str:
    """One line per node by address: each node's ~/.ssh/config (from `corral keys`) supplies user and key."""
    return "".join(f"{node.address} slots={node.slots}\n" for node in nodes)


def fabric_argv(*, timeout_s: int, world_size: int, network: str, venv_python: str) -> list[str]:
    return ["sh", "-c", FABRIC_SCRIPT, "corral-doctor", str(timeout_s), str(world_size), network,
            venv_python, RANK_PROBE_PY, str(world_size)]


@dataclass
class FabricRun:
    """What came back from the head node: per-rank probe records and mpirun's own words."""

    records: dict[int, dict] = field(default_factory=dict)
    other_lines: list[str] = field(default_factory=list)
    exit_status: int | None = None
    mpirun_pid: int | None = None
    timed_out: bool = False
    error: str | None = None  # the SSH session itself failed

    def tail(self, count: int = 3) -> str:
        lines = [line.strip() for line in self.other_lines if line.strip() and not set(line.strip()) <= set("-*")]
        return " / ".join(lines[-count:]) or "no output"


class FabricOutput:
    """Feeds the head node's output lines through the per-rank reassembly as they arrive."""

    def __init__(self) -> None:
        self.run = FabricRun()
        self._stdout = TagReassembler()

    def on_line(self, stream: str, line: str) -> None:
        if stream == "stdout" and line.startswith("CORRAL-MPIRUN-PID "):
            self.run.mpirun_pid = int(line.split()[1])
            return
        if stream == "stdout" and line.startswith("CORRAL-MPIRUN-EXIT "):
            self.run.exit_status = int(line.split()[1])
            return
        if stream != "stdout":
            self.run.other_lines.append(line)
            return
        self._take(self._stdout.feed(line + "\n"))

    def finish(self) -> FabricRun:
        self._take(self._stdout.flush())
        return self.run

    def _take(self, lines) -> None:  # noqa: ANN001 - RankLine list from cluster.mpi_output
        for rank_line in lines:
            text = rank_line.text.lstrip()
            if rank_line.rank is not None and text.startswith(MARKER):
                try:
                    self.run.records[rank_line.rank] = json.loads(text[len(MARKER):])
                    continue
                except ValueError:
                    pass
            self.run.other_lines.append(rank_line.text)


async def run_fabric(head: NodeSession, nodes: Sequence[Node], network: str, venv_python: str,
                     timeout_s: int = DEFAULT_FABRIC_TIMEOUT_S) -> FabricRun:
    """Run the probe under mpirun on the head node; on a timeout, stop mpirun there before returning."""
    output = FabricOutput()
    world_size = sum(node.slots for node in nodes)
    argv = fabric_argv(timeout_s=timeout_s, world_size=world_size, network=network, venv_python=venv_python)
    try:
        await head.run(argv, check=False, input=hostfile_text(nodes), timeout_s=timeout_s + 15,
                       on_line=output.on_line)
    except ClusterError as exc:
        output.run.timed_out = "did not finish within" in str(exc)
        output.run.error = str(exc)
        if output.run.mpirun_pid is not None and head.is_open:
            try:
                await head.run(["kill", "-TERM", str(output.run.mpirun_pid)], check=False, timeout_s=10)
            except ClusterError:
                pass  # the watchdog on the node stops it anyway
    return output.finish()


def rank_owners(nodes: Sequence[Node]) -> dict[int, str]:
    """Which node runs each rank: Open MPI fills each host's slots in hostfile order by default."""
    owners: dict[int, str] = {}
    rank = 0
    for node in nodes:
        for _ in range(node.slots):
            owners[rank] = node.name
            rank += 1
    return owners


def judge_fabric(run: FabricRun, nodes: Sequence[Node], head: str, hostnames: Mapping[str, str],
                 timeout_s: int = DEFAULT_FABRIC_TIMEOUT_S) -> list[CheckResult]:
    """Per-node verdicts from the ranks' records; one cluster-wide failure when mpirun produced none."""
    world = sum(node.slots for node in nodes)
    if not run.records:
        return [failed(CLUSTER, "fabric", _no_records_sentence(run, head, timeout_s), run.tail())]
    owners = rank_owners(nodes)
    by_hostname = {hostname: name for name, hostname in hostnames.items() if hostname}
    if len(by_hostname) == len(nodes):
        # Hostnames are unique: trust where each rank says it ran over the default placement.
        for rank, record in run.records.items():
            owners[rank] = by_hostname.get(record.get("host", ""), owners.get(rank, head))
    problems: dict[str, list[str]] = {node.name: [] for node in nodes}
    waiting: dict[str, list[str]] = {node.name: [] for node in nodes}
    seen: dict[str, list[dict]] = {node.name: [] for node in nodes}
    for rank, record in sorted(run.records.items()):
        node = owners.get(rank, head)
        seen.setdefault(node, []).append(record)
        found = _record_problems(node, rank, record, world)
        problems.setdefault(node, []).extend(found)
        if "mlx_sum_skipped" in record and not found:
            # Healthy here, but all_sum was held back because another rank's MLX was alone.
            waiting.setdefault(node, []).append(f"rank {rank}")
    broken = [name for name, found in problems.items() if found]
    results: list[CheckResult] = []
    for node in nodes:
        name = node.name
        if problems[name]:
            results.append(failed(name, "fabric", " ".join(dict.fromkeys(problems[name])), _detail(seen[name], world)))
        elif len(seen[name]) < node.slots:
            if broken:
                results.append(skipped(name, "fabric", f"the MPI job stopped when {', '.join(broken)} failed"))
            else:
                results.append(failed(name, "fabric", (
                    f"{name}: {node.slots - len(seen[name])} of its {node.slots} rank(s) printed nothing under mpirun "
                    f"(mpirun said: {run.tail()}); check {name}'s venv and run `corral doctor` again."),
                    _detail(seen[name], world)))
        elif waiting[name]:
            results.append(skipped(name, "fabric", f"MLX all_sum not run because MLX failed on {', '.join(broken) or 'another node'}"))
        else:
            results.append(passed(name, "fabric", _detail(seen[name], world)))
    if not broken and all(r.status.value == "pass" for r in results) and run.exit_status not in (0, None):
        results.append(failed(CLUSTER, "fabric", (
            f"mpirun on {head} exited with status {run.exit_status} after every rank succeeded ({run.tail()}); "
            "check the Open MPI installation on the nodes."), run.tail()))
    return results


def _record_problems(node: str, rank: int, record: Mapping[str, object], world: int) -> list[str]:
    problems = []
    if record.get("mpi4py_error"):
        problems.append(f"{node}: mpi4py failed under mpirun on rank {rank} ({record['mpi4py_error']}); "
                        f"run `corral env --to {node}` to reinstall it.")
    elif record.get("mpi4py_size") != world or record.get("mpi4py_sum") != world:
        problems.append(f"{node}: mpi4py's allreduce on rank {rank} saw {record.get('mpi4py_sum')} of a world of "
                        f"{record.get('mpi4py_size')} instead of {world}: the ranks did not join one MPI job; make "
                        "the Open MPI versions match (mpirun row).")
    if record.get("mlx_error"):
        problems.append(f"{node}: MLX's MPI backend failed on rank {rank} ({record['mlx_error']}); "
                        f"run `corral env --to {node}` to reinstall MLX.")
    elif record.get("mlx_size") == 1 and world > 1:
        seen = f"mpi4py saw all {world} ranks" if record.get("mpi4py_size") == world else "mpi4py failed too"
        problems.append(f"{node}: MLX ran as rank 0 of 1 under mpirun while {seen}, so MLX could not load "
                        f"libmpi.so there; {libmpi_fix(node)}")
    elif record.get("mlx_size") != world:
        problems.append(f"{node}: MLX saw a world of {record.get('mlx_size')} ranks on rank {rank} instead of {world}; "
                        f"run `corral env --to {node}` and check the Open MPI installation.")
    elif "mlx_sum" in record and record.get("mlx_sum") != world:
        problems.append(f"{node}: MLX's all_sum returned {record.get('mlx_sum')} on rank {rank} instead of {world}; "
                        "the ranks do not agree: make the MLX versions match (mlx-version row).")
    return problems


def _detail(records: Sequence[Mapping[str, object]], world: int) -> str:
    if not records:
        return "no output"
    parts = []
    for record in records:
        sum_text = f"all_sum {record['mlx_sum']:g}" if isinstance(record.get("mlx_sum"), (int, float)) else "all_sum not run"
        parts.append(f"rank {record.get('mpi4py_rank', record.get('mlx_rank'))}: mpi4py {record.get('mpi4py_size')}/{world}, "
                     f"MLX {record.get('mlx_size')}/{world}, {sum_text}")
    return "; ".join(parts)


def _no_records_sentence(run: FabricRun, head: str, timeout_s: int) -> str:
    said = run.tail()
    # 143 and 137: the watchdog on the head node stopped mpirun (TERM, then KILL) at the time limit.
    if run.timed_out or run.exit_status in (137, 143):
        return (f"mpirun on {head} did not finish within {timeout_s} s and was stopped: a node stalls, e.g. a firewall "
                "drops MPI traffic or a link is down (see the reachability row).")
    if run.error is not None:
        return f"could not run mpirun on {head}: {run.error}"
    text = " ".join(run.other_lines)
    if "orted" in text and ("not found" in text or "No such file" in text):
        return (f"mpirun on {head} could not start Open MPI's orted on another node: it is not on that node's "
                "non-interactive PATH; add Open MPI's bin folder to PATH in ~/.zshenv (macOS) or ~/.bashrc there "
                f"({said}).")
    if "unable to reliably start one or more daemons" in text or "ORTE was unable" in text:
        return (f"mpirun on {head} could not start its helpers on the other nodes ({said}); fix the node-to-node SSH "
                "and mpirun rows first, then run `corral doctor` again.")
    return (f"mpirun on {head} exited with status {run.exit_status} before any rank reported ({said}); fix the rows "
            "above, then run `corral doctor` again.")
