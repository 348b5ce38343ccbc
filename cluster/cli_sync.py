"""``corral sync``: live per-node progress while the core syncs, then a summary table and retry hint."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from cluster.fleet import NodeOutcome
    from cluster.home import CorralHome
    from cluster.sync import SyncProgress, SyncResult

EXIT_OK, EXIT_FAILED = 0, 1
# A terminal redraw at most this often: eight nodes × thousands of files would flood it otherwise.
REDRAW_INTERVAL_S = 0.1


def run_sync_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.layout import RemoteLayout
    from cluster.state import load_cluster
    from cluster.sync import check_ready, sync_project

    inventory = load_cluster(home)
    project, nodes = check_ready(home, inventory, args.path or inventory.project or Path.cwd(), args.to)
    excludes = list(args.exclude or [])
    names = [node.name for node in nodes]
    code_dir = RemoteLayout.for_project(project).code_dir
    print(f"Syncing {project} to {len(nodes)} node(s) into ~/{code_dir}")
    sys.stdout.flush()
    view = LiveView(names, sys.stdout) if sys.stdout.isatty() else PlainView(sys.stdout)
    outcomes = asyncio.run(sync_project(home, inventory, project, names=args.to, excludes=excludes,
                                        on_progress=view.show, home_arg=args.home))
    view.close()
    return print_summary(outcomes, excludes, sys.stdout, sys.stderr, home_arg=args.home)


def format_bytes(count: int) -> str:
    """1234567 → ``1.2 MB`` (powers of 1000, as rsync's and Finder's sizes)."""
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def describe_progress(event: SyncProgress) -> str:
    """``transferring  120 sent, 1,450/5,012 checked  1.2 MB  45%``: one node's state in a line."""
    from cluster.sync import SyncPhase

    if event.phase is SyncPhase.STARTING:
        return "connecting"
    if event.phase is SyncPhase.FAILED:
        return "failed"
    total = f"{event.files_total:,}" if event.files_total is not None else "?"
    text = f"{event.files_sent:,} sent, {event.files_done:,}/{total} checked, {format_bytes(event.bytes_done)}"
    if event.phase is SyncPhase.DONE:
        return f"done: {text}"
    if event.percent is not None:
        text += f", {event.percent}%"
    return f"{event.phase.value}: {text}"


class LiveView:
    """One line per node, redrawn in place (a terminal): the GUI shows the same events as bars."""

    def __init__(self, names: Sequence[str], out: TextIO) -> None:
        self._names = list(names)
        self._width = max((len(name) for name in names), default=0)
        self._lines = {name: "waiting" for name in names}
        self._out = out
        self._drawn = False
        self._last_draw = 0.0

    def show(self, event: SyncProgress) -> None:
        from cluster.sync import SyncPhase

        self._lines[event.node] = describe_progress(event)
        # Phase changes always show; counters only as fast as a person can read them.
        now = time.monotonic()
        if event.phase is SyncPhase.TRANSFERRING and now - self._last_draw < REDRAW_INTERVAL_S:
            return
        self._last_draw = now
        self._draw()

    def _draw(self) -> None:
        if self._drawn:
            self._out.write(f"\x1b[{len(self._names)}F")  # back to the first node's line
        for name in self._names:
            self._out.write(f"\x1b[2K{name:<{self._width}}  {self._lines[name]}\n")
        self._out.flush()
        self._drawn = True

    def close(self) -> None:
        self._draw()


class PlainView:
    """Lines for logs and pipes: one when a node starts, one when it ends; no counters in between."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def show(self, event: SyncProgress) -> None:
        from cluster.sync import SyncPhase

        if event.phase is SyncPhase.TRANSFERRING:
            return
        self._out.write(f"{event.node}: {describe_progress(event)}\n")
        self._out.flush()

    def close(self) -> None:
        pass


def summary_rows(outcomes: Sequence[NodeOutcome[SyncResult]]) -> list[list[str]]:
    rows = []
    for outcome in outcomes:
        if outcome.ok and outcome.value is not None:
            stats = outcome.value.stats
            rows.append([outcome.node.name, f"{stats.files_transferred:,}", format_bytes(stats.bytes_transferred),
                         f"{stats.files_deleted:,}", format_bytes(stats.bytes_sent), f"{outcome.elapsed_s:.1f} s", "ok"])
        else:
            rows.append([outcome.node.name, "-", "-", "-", "-", f"{outcome.elapsed_s:.1f} s", "FAILED"])
    return rows


def print_summary(outcomes: Sequence[NodeOutcome[SyncResult]], excludes: Sequence[str],
                  out: TextIO, err: TextIO, *, home_arg: str | None = None) -> int:
    from cluster.table import format_table
    from cluster.sync import retry_command

    out.write("\n" + format_table(["NODE", "FILES SENT", "DATA", "DELETED", "ON THE WIRE", "TIME", "RESULT"],
                                  summary_rows(outcomes)) + "\n")
    out.flush()
    failed = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failed:
        err.write(f"corral: {outcome.message}\n")
    if failed:
        err.write(f"corral: {len(outcomes) - len(failed)} of {len(outcomes)} node(s) synced; retry the others with:\n"
                  f"  {retry_command([o.node.name for o in failed], excludes, home_arg=home_arg)}\n")
    return EXIT_FAILED if failed else EXIT_OK


__all__ = ["run_sync_command", "format_bytes", "describe_progress", "print_summary", "summary_rows",
           "LiveView", "PlainView"]
