"""``corral env``: build the project's venv on every node, show each node's progress, then a table of versions."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from cluster.fleet import NodeOutcome
    from cluster.home import CorralHome
    from cluster.remote_env import EnvProgress, NodeEnv

EXIT_OK, EXIT_FAILED = 0, 1


def run_env_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.env_recipe import read_requirements
    from cluster.errors import ClusterError
    from cluster.layout import RemoteLayout
    from cluster.remote_env import EnvRequest, run_env
    from cluster.state import load_cluster

    started = time.monotonic()
    inventory = load_cluster(home)
    nodes = inventory.select(args.to)
    if not nodes:
        raise ClusterError("No nodes yet: add one with `corral node add ADDRESS`.")
    if inventory.project:
        project = Path(inventory.project)
    else:
        project = Path.cwd()
        print(f"No project synced yet (`corral sync`); using the current directory {project}.")
    requirements_path = Path(args.requirements) if args.requirements else None
    if requirements_path is None and (project / "requirements.txt").is_file():
        requirements_path = project / "requirements.txt"
    request = EnvRequest(layout=RemoteLayout.for_project(project), requirements=read_requirements(requirements_path),
                         python=args.python, wheels=args.wheels)
    progress = ProgressView([node.name for node in nodes], sys.stdout)
    outcomes = asyncio.run(run_env(home, nodes, request, all_nodes=inventory.nodes, on_progress=progress.update))
    progress.close()
    print(format_results(outcomes))
    failed = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failed:
        print(f"corral: {outcome.message}", file=sys.stderr)
    changed = sum(1 for o in outcomes if o.ok and o.value is not None and o.value.action == "installed")
    summary = (f"{len(outcomes) - len(failed)} of {len(outcomes)} node(s) ready ({changed} installed, "
               f"{len(outcomes) - len(failed) - changed} unchanged) in {time.monotonic() - started:.1f} s.")
    if failed:
        print(summary, file=sys.stderr)
        print(f"Retry the failed node(s) with: {retry_command(args, [o.node.name for o in failed])}", file=sys.stderr)
        return EXIT_FAILED
    print(summary)
    return EXIT_OK


def retry_command(args: argparse.Namespace, names: Sequence[str]) -> str:
    """The same ``corral env`` for just the failed nodes, keeping every option the user gave."""
    argv = ["corral"]
    if getattr(args, "home", None):
        argv += ["--home", str(args.home)]
    argv.append("env")
    if args.requirements:
        argv += ["--requirements", str(Path(args.requirements).expanduser().absolute())]
    if args.python:
        argv += ["--python", args.python]
    if args.wheels != "online":
        argv += ["--wheels", args.wheels]
    for name in names:
        argv += ["--to", name]
    return shlex.join(argv)


def format_results(outcomes: Sequence[NodeOutcome[NodeEnv]]) -> str:
    from cluster.cli import format_table

    rows = []
    for outcome in outcomes:
        env = outcome.value
        if env is None:
            rows.append([outcome.node.name, "-", "-", "-", "-", "failed", f"{outcome.elapsed_s:.1f} s"])
        else:
            rows.append([env.node, env.python_version, env.mlx_version, env.mpi4py_version, env.installer,
                         env.action, f"{outcome.elapsed_s:.1f} s"])
    return format_table(["NODE", "PYTHON", "MLX", "MPI4PY", "INSTALLER", "ACTION", "TIME"], rows)


class ProgressView:
    """One live line per node on a terminal (redrawn in place); plain lines, one per step, otherwise."""

    def __init__(self, names: Sequence[str], stream: TextIO, *, live: bool | None = None) -> None:
        self._names = list(names)
        self._stream = stream
        self._live = stream.isatty() if live is None else live
        self._width = max((len(name) for name in names), default=0)
        self._lines = {name: "waiting" for name in names}
        self._drawn = False

    def update(self, event: EnvProgress) -> None:
        text = event.step.value + (f" ({event.detail})" if event.detail and event.step.name != "FAILED" else "")
        if event.step.name == "FAILED":
            text = "failed"
        self._lines[event.node] = text
        if not self._live:
            self._stream.write(f"{event.node:<{self._width}}  {text}\n")
            self._stream.flush()
            return
        self._redraw()

    def _redraw(self) -> None:
        out = []
        if self._drawn:
            out.append(f"\x1b[{len(self._names)}F")  # back to the first node's line
        for name in self._names:
            out.append(f"\x1b[2K{name:<{self._width}}  {self._lines[name]}\n")
        self._stream.write("".join(out))
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if not self._live:
            return
        self._stream.write("\n" if self._drawn else "")
        self._stream.flush()
