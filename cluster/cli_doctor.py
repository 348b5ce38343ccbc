"""``corral doctor [--json]``: print the doctor's node × check table and every failure's sentence."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from cluster.doctor import DoctorEvent, DoctorReport
    from cluster.home import CorralHome

EXIT_OK, EXIT_FAILED = 0, 1
SYMBOLS = {"pass": "✓", "fail": "✗", "skip": "–", "warn": "!"}
ASCII_SYMBOLS = {"pass": "ok", "fail": "X", "skip": "-", "warn": "!"}
LEGEND = "✓ passed   ✗ failed   ! warning (does not fail the doctor)   – skipped (an earlier check failed)"
ASCII_LEGEND = "ok passed   X failed   ! warning (does not fail the doctor)   - skipped (an earlier check failed)"


def run_doctor_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.errors import ClusterError
    from cluster.state import load_cluster

    inventory = load_cluster(home)
    if not inventory.nodes:
        raise ClusterError("No nodes yet: add one with `corral node add ADDRESS`, then run `corral doctor` again.")
    report = asyncio.run(_run(home, inventory, progress=None if args.json else sys.stderr))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_report(report, unicode=_can_print_unicode(sys.stdout)))
    return EXIT_OK if report.ok else EXIT_FAILED


async def _run(home: CorralHome, inventory, progress: TextIO | None) -> DoctorReport:  # noqa: ANN001 - Inventory
    from cluster.doctor import CheckFinished, DoctorStarted, run_doctor
    from cluster.known_hosts import KnownHosts
    from cluster.ssh import Credentials, SessionPool

    def on_event(event: DoctorEvent) -> None:
        # A short live trace on a terminal only; the table comes at the end either way.
        if progress is None or not progress.isatty():
            return
        if isinstance(event, DoctorStarted):
            progress.write(f"Checking {len(event.nodes)} node(s)…\n")
        elif isinstance(event, CheckFinished) and event.result.status.value == "fail":
            progress.write(f"  {event.result.node}: {event.result.title} failed\n")
        progress.flush()

    credentials = Credentials(private_key_path=home.private_key_path)
    async with SessionPool(credentials, KnownHosts(home.known_hosts_path)) as pool:
        return await run_doctor(inventory, pool, on_event=on_event)


def format_report(report: DoctorReport, *, unicode: bool = True) -> str:
    """The table (rows = checks, columns = nodes, plus a cluster column when needed), then the sentences."""
    from cluster.doctor import CHECKS, CLUSTER

    symbols = SYMBOLS if unicode else ASCII_SYMBOLS
    columns = list(report.nodes)
    if any(result.node == CLUSTER for result in report.results):
        columns.append(CLUSTER)
    headers = ["CHECK"] + [("cluster" if c == CLUSTER else c) for c in columns]
    rows = []
    for check in CHECKS:
        cells = []
        for column in columns:
            result = report.result(check.id, column)
            cells.append(symbols[result.status.value] if result else "")
        if any(cells):
            rows.append([check.title, *cells])
    lines = [_table(headers, rows), "", LEGEND if unicode else ASCII_LEGEND]
    failures, warnings = report.failures(), report.warnings()
    if failures:
        lines += ["", f"{len(failures)} failed:"]
        lines += [f"  {result.fix}" for result in failures]
    if warnings:
        lines += ["", f"{len(warnings)} warning(s):"]
        lines += [f"  {result.fix}" for result in warnings]
    if report.ok:
        lines += ["", f"All checks passed in {report.elapsed_s:.1f} s: the cluster is ready to train."]
    else:
        skipped = sum(1 for result in report.results if result.status.value == "skip")
        extra = f" ({skipped} check(s) were skipped because of them)" if skipped else ""
        lines += ["", f"Fix the failures above{extra}, then run `corral doctor` again."]
    return "\n".join(lines)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(headers)] + [list(row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells)


def _can_print_unicode(stream: TextIO) -> bool:
    try:
        "✓✗–".encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
