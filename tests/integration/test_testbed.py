"""The namespace test cluster itself: real sshd per node, isolation, faults and clean teardown."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import asyncssh
import pytest

from tests.testbed.cluster import (
    PREFIX,
    TestCluster,
    TestClusterError,
    TestNode,
    read_ssh_banner,
)

pytestmark = pytest.mark.integration

# Runs inside a node with the node's own /usr/bin/python3; prints the errno name per target.
CONNECT_PROBE = """
import errno, socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(target, "OK")
    except OSError as exc:
        print(target, errno.errorcode.get(exc.errno, str(exc)))
"""


async def _login(node: TestNode, password: str) -> str | None:
    """Return `id -un; hostname` from a password login, or None if the login is refused."""
    try:
        async with asyncssh.connect(
            node.address,
            port=node.port,
            username=node.user,
            password=password,
            known_hosts=None,  # this test checks password auth; host keys are checked below
            client_keys=None,
            agent_path=None,
            preferred_auth="password",
        ) as conn:
            assert conn.get_server_host_key().get_fingerprint("sha256") == node.host_key_fingerprint
            return (await conn.run("id -un; hostname", check=True)).stdout
    except asyncssh.PermissionDenied:
        return None


def _host_fingerprint(node: TestNode) -> str:
    async def fetch() -> str:
        key = await asyncssh.get_server_host_key(node.address, node.port)
        assert key is not None
        return key.get_fingerprint("sha256")

    return asyncio.run(fetch())


def _outside_address(cluster: TestCluster) -> str | None:
    """An address of this machine that is not on any test bridge, if it has one."""
    links = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True).stdout)
    for link in links:
        if link["ifname"].startswith(PREFIX) or link["ifname"] == "lo":
            continue
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                return info["local"]
    return None


def _ns_inode(pid: int, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


class Proc(NamedTuple):
    pid: int
    start: int  # start time in clock ticks: with pid, names a process even if the pid is reused
    uid: int
    netns: int
    pidns: int


def _processes() -> list[Proc]:
    """Every live process we can see, with its namespaces."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            pid = int(entry.name)
            start = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[19])
            uid = os.stat(entry.path).st_uid
            found.append(Proc(pid, start, uid, _ns_inode(pid, "net"), _ns_inode(pid, "pid")))
        except OSError:
            continue  # exited meanwhile, or a zombie without namespaces
    return found


def _members(cluster: TestCluster) -> set[tuple[int, int]]:
    """(pid, start) of every process in the cluster's network or PID namespaces right now."""
    netns = {_ns_inode(node.pid, "net") for node in cluster.nodes if node.pid and node.alive}
    pidns = {_ns_inode(node.pid, "pid") for node in cluster.nodes if node.pid and node.alive}
    return {(p.pid, p.start) for p in _processes() if p.netns in netns or p.pidns in pidns}


def _other_clusters_netns() -> set[int]:
    """Network namespaces of clusters other test runs may have up right now."""
    inodes = set()
    for path in Path("/run/netns").glob(f"{PREFIX}*"):
        try:
            inodes.add(os.stat(path).st_ino)
        except OSError:
            continue
    return inodes


def _names_of(tag: str) -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in (netns + links).splitlines() if line.startswith(PREFIX + tag)]


def _start_sleeper(node: TestNode) -> None:
    """Leave a process of the node user running, detached, as a login would."""
    # Its output must not be our pipe, or run() would wait for the sleeper to close it.
    node.run(["sh", "-c", "setsid -f sleep 300 </dev/null >/dev/null 2>&1"], as_user=True)


# --- the shared cluster: read-only checks --------------------------------------------------


def test_every_node_answers_with_an_ssh_banner(test_cluster: TestCluster) -> None:
    for node in test_cluster.nodes:
        banner = read_ssh_banner(node.address, node.port)
        assert banner is not None and banner.startswith("SSH-2.0-OpenSSH"), node


def test_cluster_shape(test_cluster: TestCluster) -> None:
    assert len(test_cluster.nodes) == 3
    assert test_cluster.gateway.endswith(".1")
    assert [node.name for node in test_cluster.nodes] == ["node1", "node2", "node3"]
    assert [node.address.rsplit(".", 1)[1] for node in test_cluster.nodes] == ["11", "12", "13"]
    assert test_cluster.node_uids == [2001, 2002, 2003]
    assert len({node.password for node in test_cluster.nodes}) == 3
    assert len({node.host_key_fingerprint for node in test_cluster.nodes}) == 3
    for node in test_cluster.nodes:
        assert node.host_public_key_line.startswith("ssh-ed25519 AAAA")
        assert node.home_on_host.is_dir() and node.home_on_host.stat().st_uid == node.uid


def test_fingerprint_matches_ssh_keygen(test_cluster: TestCluster) -> None:
    node = test_cluster.nodes[0]
    pub = node.node_dir / "ssh" / "ssh_host_ed25519_key.pub"
    printed = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True)
    assert printed.stdout.split()[1] == node.host_key_fingerprint
    assert _host_fingerprint(node) == node.host_key_fingerprint


def test_password_login_works_with_own_password_only(test_cluster: TestCluster) -> None:
    nodes = test_cluster.nodes

    async def attempts() -> list[str | None]:
        own = [_login(node, node.password) for node in nodes]
        neighbours = [_login(node, nodes[(i + 1) % len(nodes)].password) for i, node in enumerate(nodes)]
        return await asyncio.gather(*own, *neighbours)

    results = asyncio.run(attempts())
    own, neighbours = results[: len(nodes)], results[len(nodes) :]
    for node, output in zip(nodes, own):
        assert output == f"{node.user}\n{node.hostname}\n"
    assert neighbours == [None] * len(nodes)


def test_hostnames_differ_per_node(test_cluster: TestCluster) -> None:
    printed = [node.run(["hostname"]).stdout.strip() for node in test_cluster.nodes]
    assert printed == [node.hostname for node in test_cluster.nodes]
    assert len(set(printed)) == len(printed)
    assert socket.gethostname() not in printed


def test_node_user_exists_only_in_its_node(test_cluster: TestCluster) -> None:
    for node in test_cluster.nodes:
        with pytest.raises(KeyError):
            pwd.getpwnam(node.user)
        for other in test_cluster.nodes:
            found = other.run(["getent", "passwd", node.user], check=False)
            assert (found.returncode == 0) == (other is node), (node.user, other.name)


def test_commands_run_as_root_or_as_the_node_user(test_cluster: TestCluster) -> None:
    node = test_cluster.nodes[1]
    assert node.run(["id", "-u"]).stdout.strip() == "0"
    as_user = node.run(["sh", "-c", 'id -u; echo "$HOME"; pwd; echo hi > note'], as_user=True)
    assert as_user.stdout.split() == [str(node.uid), node.home, node.home]
    note = node.home_on_host / "note"
    assert note.read_text() == "hi\n" and note.stat().st_uid == node.uid
    assert node.run(["cat"], input="piped", as_user=True).stdout == "piped"
    # The node has its own PID namespace: its PID 1 is the init script.
    assert "init.sh" in node.run(["cat", "/proc/1/cmdline"]).stdout
    with pytest.raises(subprocess.CalledProcessError, match="exited 3"):
        node.run(["sh", "-c", "exit 3"])
    with pytest.raises(subprocess.TimeoutExpired):
        node.run(["sleep", "5"], timeout=0.2)


def test_nodes_reach_the_lan_but_nothing_beyond(test_cluster: TestCluster) -> None:
    node, peer = test_cluster.nodes[0], test_cluster.nodes[1]
    with socket.create_server((test_cluster.gateway, 0)) as listener:
        gateway_port = listener.getsockname()[1]
        targets = [f"{peer.address}:22", f"{test_cluster.gateway}:{gateway_port}", "1.1.1.1:53"]
        outside = _outside_address(test_cluster)
        if outside:
            targets.append(f"{outside}:22")
        probe = node.run(["/usr/bin/python3", "-c", CONNECT_PROBE, *targets], as_user=True)
    verdicts = dict(line.split() for line in probe.stdout.splitlines())
    assert verdicts.pop(f"{peer.address}:22") == "OK"
    assert verdicts.pop(f"{test_cluster.gateway}:{gateway_port}") == "OK"
    assert set(verdicts.values()) == {"ENETUNREACH"}, verdicts
    assert "default" not in node.run(["ip", "route"]).stdout


def test_client_files_list_every_node(test_cluster: TestCluster) -> None:
    known_hosts = test_cluster.known_hosts_path.read_text().splitlines()
    assert known_hosts == [node.known_hosts_line for node in test_cluster.nodes]
    assert "Host node1" in test_cluster.ssh_config_path.read_text()


# --- faults and restarts: clusters of their own ----------------------------------------------


def test_stop_and_start_sshd(cluster_factory: Callable[..., TestCluster]) -> None:
    node = cluster_factory(1).nodes[0]
    node.stop_sshd()
    assert read_ssh_banner(node.address, node.port) is None
    assert node.alive, "stopping sshd must not take the node down"
    node.start_sshd()
    assert read_ssh_banner(node.address, node.port) is not None
    assert asyncio.run(_login(node, node.password)) is not None
    # Restarts leave no zombie behind: PID 1 reaps the old sshd.
    states = node.run(["ps", "-eo", "stat="]).stdout.split()
    assert not [s for s in states if s.startswith("Z")]


def test_regenerate_host_key_changes_the_fingerprint(cluster_factory: Callable[..., TestCluster]) -> None:
    cluster = cluster_factory(1)
    node = cluster.nodes[0]
    old_fingerprint, old_line = node.host_key_fingerprint, node.host_public_key_line
    node.regenerate_host_key()
    assert node.host_key_fingerprint != old_fingerprint
    assert node.host_public_key_line != old_line
    assert _host_fingerprint(node) == node.host_key_fingerprint
    assert cluster.known_hosts_path.read_text() == node.known_hosts_line + "\n"


def test_crash_kills_the_node_and_boot_brings_it_back(cluster_factory: Callable[..., TestCluster]) -> None:
    cluster = cluster_factory(2)
    node, other = cluster.nodes
    _start_sleeper(node)
    netns = _ns_inode(node.pid or 0, "net")
    victims = {(p.pid, p.start) for p in _processes() if p.netns == netns and p.uid == node.uid}
    assert victims, "the sleeper should run as the node user"
    node.crash()
    assert not node.alive
    assert not victims & {(p.pid, p.start) for p in _processes()}
    assert read_ssh_banner(node.address, node.port, timeout_s=0.5) is None
    assert read_ssh_banner(other.address, other.port) is not None
    with pytest.raises(TestClusterError, match="not running"):
        node.run(["true"])
    node.boot()
    assert node.run(["hostname"]).stdout.strip() == node.hostname


def test_link_down_cuts_the_cable(cluster_factory: Callable[..., TestCluster]) -> None:
    node = cluster_factory(1).nodes[0]
    node.link_down()
    started = time.monotonic()
    with pytest.raises(OSError) as raised:
        socket.create_connection((node.address, node.port), timeout=0.5).close()
    # A cut cable is silence (timeout) or no ARP answer, never a refusal.
    assert not isinstance(raised.value, ConnectionRefusedError)
    assert time.monotonic() - started >= 0.4
    node.link_up()
    node.wait_until_ready(timeout_s=10)


@pytest.mark.usefixtures("requires_clusters")
def test_bad_sshd_config_fails_fast_and_leaves_nothing() -> None:
    cluster = TestCluster(n=2, sshd_options={"NoSuchOption": "yes"})
    started = time.monotonic()
    with pytest.raises(TestClusterError, match="NoSuchOption"):
        cluster.start()
    assert time.monotonic() - started < 5, "a dead node must be noticed without waiting the timeout"
    assert _names_of(cluster.tag) == []
    assert not cluster.workdir.exists()


# --- teardown ------------------------------------------------------------------------------


def _assert_gone(cluster: TestCluster, members: set[tuple[int, int]]) -> None:
    """Nothing of the cluster is left: names, files, its processes, its users' processes."""
    assert _names_of(cluster.tag) == []
    assert not cluster.workdir.exists()
    now = _processes()
    assert not members & {(p.pid, p.start) for p in now}, "processes of the cluster survived"
    # Other test runs may have clusters up, with the same uids, inside their own namespaces.
    others = _other_clusters_netns()
    strays = [p for p in now if p.uid in cluster.node_uids and p.netns not in others]
    assert not strays, f"processes of node users outside any live test cluster: {strays}"


@pytest.mark.usefixtures("requires_clusters")
def test_teardown_leaves_no_process_namespace_or_link() -> None:
    cluster = TestCluster(n=2)
    cluster.start()
    for node in cluster.nodes:
        _start_sleeper(node)
    assert asyncio.run(_login(cluster.nodes[0], cluster.nodes[0].password))
    members = _members(cluster)
    member_uids = {p.uid for p in _processes() if (p.pid, p.start) in members}
    assert set(cluster.node_uids) <= member_uids, "each node should have a user process to kill"
    assert len(_names_of(cluster.tag)) == 2 * 2 + 1  # netns + host veth per node, one bridge
    cluster.stop()
    _assert_gone(cluster, members)
    cluster.stop()  # idempotent


def test_two_clusters_tear_down_independently(cluster_factory: Callable[..., TestCluster]) -> None:
    first = TestCluster(n=2)
    first.start()
    try:
        # Stopping the first while the second runs must remove all of the first and leave the
        # second alone.
        second = cluster_factory(2)
        assert first.subnet != second.subnet
        members = _members(first)
    finally:
        first.stop()
    _assert_gone(first, members)
    assert all(read_ssh_banner(node.address, node.port) for node in second.nodes)


@pytest.mark.usefixtures("requires_clusters")
def test_eight_nodes_come_up_and_down() -> None:
    started = time.monotonic()
    with TestCluster(n=8) as cluster:
        up_s = time.monotonic() - started
        assert all(read_ssh_banner(node.address, node.port) for node in cluster.nodes)
        assert len({node.run(["hostname"]).stdout for node in cluster.nodes}) == 8
        stopping = time.monotonic()
    down_s = time.monotonic() - stopping
    assert _names_of(cluster.tag) == []
    print(f"8 nodes: up {up_s:.2f} s, down {down_s:.2f} s")
