"""Pure builders for a run's launch: hostfile, hosts JSON, the rank command, and the mpirun / mlx.launch argv.

Each rank runs ``sh -c RANK_SCRIPT corral-rank BASE DIR PYTHON LIB PROGRAM...``: it changes to its
node's directory and execs its node's Python. Paths are relative to BASE, which is empty on a node
(the node user's ``$HOME``, different on every node, expanded by the rank's own shell) and an absolute
directory in local mode; every value arrives as a positional argument, never inside the script.
``-X corral-run=<id>`` in the program is accepted silently by Python and lets the sweep find every
rank of a run with ``pkill -f corral-run=<id>``, on Linux and macOS, for ``--script`` programs too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cluster.inventory import Node

RUN_MARK = "corral-run="
# $1 base (empty: $HOME), $2 working dir, $3 python, $4 extra PYTHONPATH entry; relative ones follow the base.
RANK_SCRIPT = r"""
b=${1:-$HOME}
d=$2 py=$3 lib=$4
shift 4
case $d in /*) ;; *) d="$b/$d" ;; esac
case $py in /*) ;; *) py="$b/$py" ;; esac
case $lib in /*) ;; *) lib="$b/$lib" ;; esac
cd "$d" || { echo "corral: cannot enter $d on $(hostname)" >&2; exit 97; }
PYTHONPATH="$lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" "$@"
"""

# Sweep of one node: every process of the run by its mark (TERM, then KILL), then Open MPI daemons of this
# user left without any rank (a cut link strands them; a live orted always has its ranks). $1 is the run id,
# $2 "orted" to include those daemons.
SWEEP_SCRIPT = r"""
mark="corral-run=$1"
n=0
parents=""
pids=$(pgrep -f "$mark" 2>/dev/null)
if [ -n "$pids" ]; then
  # The Open MPI daemons that started these ranks belong to this run: note them before the ranks go.
  for pid in $pids; do parents="$parents $(ps -o ppid= -p "$pid" 2>/dev/null)"; done
  pkill -TERM -f "$mark" 2>/dev/null
  i=0
  while [ $i -lt 20 ] && pgrep -f "$mark" >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
  pkill -KILL -f "$mark" 2>/dev/null
  n=1
fi
if [ "$2" = orted ]; then
  for pid in $parents; do
    [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = orted ] && kill -KILL "$pid" 2>/dev/null && n=1
  done
  # Daemons whose ranks died earlier (a cut link): this user's orted with no live child. A killed child
  # is a zombie until its daemon reaps it, so give the daemons a moment first.
  sleep 0.3
  for pid in $(pgrep -u "$(id -u)" -x orted 2>/dev/null); do
    live=0
    for child in $(pgrep -P "$pid" 2>/dev/null); do
      case "$(ps -o stat= -p "$child" 2>/dev/null)" in Z*|"") ;; *) live=1 ;; esac
    done
    [ "$live" = 0 ] && kill -KILL "$pid" 2>/dev/null && n=1
  done
fi
echo "CORRAL-SWEPT $n"
"""

# Per node before a launch: make the run directory, check the venv, write the config from stdin
# atomically, and say how many CPUs there are. $1 run dir, $2 venv python, $3 env stamp ("" skips the check).
PREPARE_SCRIPT = r"""
cd || exit 97
mkdir -p "$1" || exit 98
if [ -n "$3" ] && { [ ! -x "$2" ] || [ ! -f "$3" ]; }; then echo "CORRAL-NO-VENV"; fi
cat > "$1/config.toml.tmp" && mv -f "$1/config.toml.tmp" "$1/config.toml" || exit 98
echo "CORRAL-NPROC $(getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 0)"
"""

# Writes stdin to $1 (relative to the home) atomically, making its directory.
WRITE_FILE_SCRIPT = r"""
cd || exit 97
mkdir -p "$(dirname "$1")" || exit 98
cat > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
"""


@dataclass(frozen=True)
class RankCommand:
    """What every rank runs: where (relative to BASE), with which Python, and the program after the Python."""

    base: str  # "" on nodes ($HOME); an absolute directory in local mode
    workdir: str
    python: str
    pythonpath: str
    program: tuple[str, ...]

    def argv(self) -> list[str]:
        return ["sh", "-c", RANK_SCRIPT, "corral-rank", self.base, self.workdir, self.python, self.pythonpath,
                *self.program]


def run_mark(run_id: str) -> str:
    return f"{RUN_MARK}{run_id}"


def trainer_program(run_id: str, world_size: int, *, config: str = "config.toml", extra: Sequence[str] = ()) -> tuple[str, ...]:
    return ("-X", run_mark(run_id), "-m", "trainer", "--config", config, "--expect_world_size", str(world_size),
            *extra)


def script_program(run_id: str, script: str, args: Sequence[str]) -> tuple[str, ...]:
    return ("-X", run_mark(run_id), script, *args)


def hostfile_text(nodes: Sequence[Node]) -> str:
    """Open MPI hostfile, head first: ``user@address slots=K`` (mpirun fills slots in this order)."""
    return "".join(f"{node.user}@{node.address} slots={node.slots}\n" for node in nodes)


def ring_hosts_json(nodes: Sequence[Node]) -> str:
    """mlx.launch hosts JSON: one entry per rank, reached by node name (the nodes' ssh config has every name)."""
    return json.dumps([{"ssh": node.name, "ips": [node.address]} for node in nodes for _ in range(node.slots)])


def needs_oversubscribe(nodes: Sequence[Node], cpus: dict[str, int]) -> bool:
    """Only when a node is given more ranks than it has CPUs (an unknown count, 0, never forces it)."""
    return any(cpus.get(node.name, 0) and node.slots > cpus[node.name] for node in nodes)


def mpirun_argv(*, hostfile: str | None, world_size: int, network: str | None, oversubscribe: bool,
                allow_root: bool, rank: RankCommand) -> list[str]:
    argv = ["mpirun"]
    if hostfile is not None:
        argv += ["--hostfile", hostfile]
    argv += ["-np", str(world_size)]
    if network:
        argv += ["--mca", "oob_tcp_if_include", network, "--mca", "btl_tcp_if_include", network]
    if hostfile is not None:
        # The head starts every node's daemon itself: nodes need not reach each other for the launch.
        argv += ["--mca", "plm_rsh_no_tree_spawn", "1"]
    if oversubscribe:
        argv.append("--oversubscribe")
    if allow_root:
        argv.append("--allow-run-as-root")
    return [*argv, "--tag-output", *rank.argv()]


def ring_argv(*, launcher: str, hosts_json: str, rank: RankCommand) -> list[str]:
    return [launcher, "--backend", "ring", "--hostfile", hosts_json, "--", *rank.argv()]


def supervise_start_argv(python: str, supervise: str, run_dir: str, launcher_argv: Sequence[str]) -> list[str]:
    return [python, supervise, "start", run_dir, "--", *launcher_argv]


def effective_accumulation(effective_batch: int, batch_size: int, world_size: int) -> int:
    """Gradient accumulation that keeps ``effective_batch`` (batch × accumulation × world) on ``world_size`` ranks."""
    per_step = batch_size * world_size
    if effective_batch % per_step:
        raise ValueError(f"the effective batch of {effective_batch} sequences is not a multiple of batch_size "
                         f"{batch_size} × {world_size} ranks")
    return effective_batch // per_step


_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def check_run_id(run_id: str) -> str:
    if not _SAFE_ID.match(run_id):
        raise ValueError(f"unsafe run id {run_id!r}")
    return run_id
