"""Start a test cluster by hand (`python -m tests.testbed up`) or remove leftovers (`... clean`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from tests.testbed.cluster import (
    PREFIX,
    TestCluster,
    TestClusterError,
    can_build_clusters,
    clean_leftovers,
)


def _print_cluster(cluster: TestCluster) -> None:
    print(
        f"test cluster {PREFIX}{cluster.tag}: {len(cluster.nodes)} nodes on {cluster.subnet}, "
        f"this machine is {cluster.gateway}"
    )
    print(f"work dir {cluster.workdir}\n")
    rows = [("NAME", "ADDRESS", "USER", "PASSWORD", "HOST KEY", "PID 1")]
    rows += [(n.name, n.address, n.user, n.password, n.host_key_fingerprint, str(n.pid)) for n in cluster.nodes]
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    first = cluster.nodes[0]
    print(f"""
Log in (password from the table; -F keeps your own ~/.ssh/config and known_hosts out of it):
  ssh -F {cluster.ssh_config_path} {first.name}
  ssh -o UserKnownHostsFile={cluster.known_hosts_path} {first.user}@{first.address}
A root shell inside a node:
  nsenter --target {first.pid} --net --mount --uts --pid -- bash
sshd logs: {cluster.workdir}/<node>/sshd.log

Ctrl-C tears the cluster down.""", flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _up(nodes: int, subnet: str | None) -> int:
    # A closed terminal or `kill` must tear down as Ctrl-C does; SIGINT is set too because a
    # shell starts background jobs with it ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    started = time.monotonic()
    try:
        with TestCluster(n=nodes, subnet=subnet) as cluster:
            print(f"up in {time.monotonic() - started:.2f} s\n")
            _print_cluster(cluster)
            try:
                while True:
                    signal.pause()
            except KeyboardInterrupt:
                print("\ntearing down ...", flush=True)
                stopping = time.monotonic()
        print(f"down in {time.monotonic() - stopping:.2f} s")
    except TestClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _clean(include_live: bool) -> int:
    report = clean_leftovers(include_live=include_live)
    print("\n".join(report) if report else "nothing to clean")
    return 1 if any("still left" in line for line in report) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.testbed",
        description="A fake home lab of SSH hosts in network namespaces (needs root). See docs/testing.md.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a cluster, show how to reach it, tear it down on Ctrl-C")
    up.add_argument("--nodes", "-n", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--subnet", help="IPv4 subnet, e.g. 10.88.0.0/24 (default: first free 10.77.K.0/24)")
    clean = commands.add_parser("clean", help="remove namespaces, links, processes, work dirs of dead runs")
    clean.add_argument("--all", action="store_true", help="also remove clusters whose process still runs")
    args = parser.parse_args(argv)

    ok, reason = can_build_clusters()
    if not ok:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.command == "up":
        return _up(args.nodes, args.subnet)
    return _clean(args.all)


if __name__ == "__main__":
    sys.exit(main())
