"""Discovery against a real test cluster: the sweep finds every node's sshd, mDNS finds an advertised one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.discovery import FoundHost, browse_mdns, discover
from tests.integration.node_site import NODE_PYTHON, shared_site
from tests.testbed.cluster import TestCluster, TestNode, can_build_clusters, read_ssh_banner

pytestmark = pytest.mark.integration

CORRAL = Path(sys.executable).parent / "corral"
# A responder multicasts a record at most once a second (RFC 6762 §6): a window of two seconds
# survives a browse that starts just after the node's own announcements.
MDNS_WINDOW_S = 2.0

# Runs inside a node: advertise its sshd as macOS Remote Login does, until SIGTERM.
ADVERTISER = r"""
import signal, socket, sys
from zeroconf import IPVersion, ServiceInfo, Zeroconf

address, host = sys.argv[1], sys.argv[2]
zc = Zeroconf(ip_version=IPVersion.V4Only)
info = ServiceInfo(
    "_ssh._tcp.local.", f"{host}._ssh._tcp.local.",
    addresses=[socket.inet_aton(address)], port=22, server=f"{host}.local.",
)
zc.register_service(info)
print("registered", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
zc.unregister_service(info)
zc.close()
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[TestCluster]:
    """Eight nodes on one /24, shared by this module (tests that stop an sshd start it again)."""
    ok, reason = can_build_clusters()
    if not ok:
        pytest.skip(f"cannot build a test cluster: {reason}")
    with TestCluster(n=8) as built:
        yield built


def expected_addresses(cluster: TestCluster) -> list[str]:
    """The nodes' addresses, plus the bridge's only if something outside this test serves SSH there."""
    addresses = [node.address for node in cluster.nodes]
    if read_ssh_banner(cluster.gateway, timeout_s=0.5) is not None:
        addresses.insert(0, cluster.gateway)  # an sshd in the root namespace listening on 0.0.0.0
    return addresses


def test_sweep_finds_exactly_the_nodes_with_their_banners(cluster: TestCluster) -> None:
    reported: list[FoundHost] = []
    started = time.monotonic()
    hosts = asyncio.run(discover([cluster.subnet], use_mdns=False, on_found=reported.append))
    elapsed_s = time.monotonic() - started

    assert [h.address for h in hosts] == expected_addresses(cluster)
    for host in hosts:
        assert host.port == 22 and host.methods == ("sweep",) and host.hostname is None
        assert host.banner is not None and host.banner.startswith("SSH-2.0-OpenSSH_")
        assert host.os_hint == "Debian"
    assert sorted(reported, key=lambda h: tuple(int(p) for p in h.address.split("."))) == hosts
    # Not a benchmark (see bench/bench_discovery.py), only a guard against waiting on the OS.
    assert elapsed_s < 1.5


def test_node_with_sshd_stopped_is_not_listed(cluster: TestCluster) -> None:
    stopped = cluster.nodes[4]
    stopped.stop_sshd()
    try:
        hosts = asyncio.run(discover([cluster.subnet], use_mdns=False))
    finally:
        stopped.start_sshd()
    assert [h.address for h in hosts] == [a for a in expected_addresses(cluster) if a != stopped.address]


def _advertise(node: TestNode) -> str:
    """Start the advertiser in the node, wait until it has announced, and return its pid there."""
    site = shared_site("zeroconf", "zeroconf")
    script = 'PYTHONPATH="$4" exec "$0" -c "$1" "$2" "$3" >/tmp/mdns-advertiser.log 2>&1 </dev/null & echo $!'
    argv = ["sh", "-c", script, NODE_PYTHON, ADVERTISER, node.address, node.hostname, str(site)]
    pid = node.run(argv).stdout.strip()
    deadline = time.monotonic() + 15
    while True:
        log = node.run(["cat", "/tmp/mdns-advertiser.log"]).stdout
        if "registered" in log:
            return pid
        if time.monotonic() > deadline or node.run(["kill", "-0", pid], check=False).returncode != 0:
            raise AssertionError(f"the mDNS advertiser in {node.name} did not start:\n{log}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def advertising_node(cluster: TestCluster) -> Iterator[TestNode]:
    """Node 3 advertising ``_ssh._tcp`` from inside its own namespaces, from first use to module end."""
    node = cluster.nodes[2]
    pid = _advertise(node)
    try:
        yield node
    finally:
        node.run(["kill", pid], check=False)


def test_mdns_finds_a_node_advertising_ssh(cluster: TestCluster, advertising_node: TestNode) -> None:
    mdns_hostname = f"{advertising_node.hostname}.local"
    browsed = asyncio.run(browse_mdns(MDNS_WINDOW_S))
    # Other test runs on this machine may advertise too: look for this node only.
    assert [(h.address, h.port, h.methods) for h in browsed if h.hostname == mdns_hostname] == [
        (advertising_node.address, 22, ("mdns",))
    ]

    hosts = asyncio.run(discover([cluster.subnet], timeout_s=MDNS_WINDOW_S))
    assert [h.address for h in hosts] == expected_addresses(cluster)
    by_address = {h.address: h for h in hosts}
    advertised = by_address.pop(advertising_node.address)
    assert (advertised.hostname, advertised.methods) == (mdns_hostname, ("mdns", "sweep"))
    assert advertised.banner is not None and advertised.banner.startswith("SSH-2.0-")
    assert all(h.methods == ("sweep",) and h.hostname is None for h in by_address.values())


def test_mdns_alone_still_reads_the_banner(cluster: TestCluster, advertising_node: TestNode) -> None:
    hosts = asyncio.run(discover([cluster.subnet], timeout_s=MDNS_WINDOW_S, use_sweep=False))
    assert [(h.address, h.methods) for h in hosts] == [(advertising_node.address, ("mdns",))]
    assert hosts[0].banner is not None and hosts[0].banner.startswith("SSH-2.0-OpenSSH_")


def run_corral(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    if not CORRAL.exists():
        pytest.skip(f"the corral entry point is not installed at {CORRAL}")
    return subprocess.run(
        [str(CORRAL), "--home", str(home), *args], capture_output=True, text=True, timeout=30
    )


def test_cli_discover_json(cluster: TestCluster, tmp_path: Path) -> None:
    result = run_corral("discover", "--subnet", cluster.subnet, "--no-mdns", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert [h["address"] for h in hosts] == expected_addresses(cluster)
    assert all(h["methods"] == ["sweep"] and h["banner"].startswith("SSH-2.0-") for h in hosts)


def test_cli_discover_table_shows_how_each_was_found(
    cluster: TestCluster, advertising_node: TestNode, tmp_path: Path
) -> None:
    result = run_corral("discover", "--subnet", cluster.subnet, "--timeout-s", str(MDNS_WINDOW_S), home=tmp_path)
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("\n\n")[0].splitlines()
    assert table[0].split() == ["ADDRESS", "PORT", "HOSTNAME", "BANNER", "FOUND", "BY"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert sorted(rows, key=lambda a: int(a.rsplit(".", 1)[1])) == expected_addresses(cluster)
    advertised = rows[advertising_node.address]
    assert f"{advertising_node.hostname}.local" in advertised and advertised.endswith("mdns+sweep")
    assert all(line.endswith("  sweep") for address, line in rows.items() if address != advertising_node.address)


def test_cli_discover_rejects_a_bad_subnet(tmp_path: Path) -> None:
    result = run_corral("discover", "--subnet", "10.77.0.0/33", home=tmp_path)
    assert result.returncode != 0
    assert "'10.77.0.0/33'" in result.stderr and "Traceback" not in result.stderr
