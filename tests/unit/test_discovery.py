"""Unit tests of discovery: banner parsing, merging, subnets, and the sweep against real loopback servers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import socket
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import pytest

from cluster import discovery
from cluster.discovery import (
    FoundHost,
    banner_from_line,
    discover,
    format_found_hosts,
    found_hosts_to_json,
    merge_found_hosts,
    parse_banner,
    parse_subnet,
    probe_ssh,
    subnet_to_sweep,
    sweep,
    sweep_addresses,
)
from cluster.errors import ClusterError

T = TypeVar("T")

# --- banners ---------------------------------------------------------------------------------------

# (banner, protocol, software, comment, os hint); None for protocol means "not a banner".
BANNER_CASES = [
    ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", "2.0", "OpenSSH_9.2p1", "Debian-2+deb12u3", "Debian"),
    ("SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10", "2.0", "OpenSSH_8.9p1", "Ubuntu-3ubuntu0.10", "Ubuntu"),
    ("SSH-2.0-OpenSSH_7.9p1 Raspbian-10+deb10u2", "2.0", "OpenSSH_7.9p1", "Raspbian-10+deb10u2", "Raspbian"),
    ("SSH-2.0-OpenSSH_9.8", "2.0", "OpenSSH_9.8", None, None),  # macOS names nothing
    ("SSH-2.0-OpenSSH_9.3 FreeBSD-20230719", "2.0", "OpenSSH_9.3", "FreeBSD-20230719", "FreeBSD"),
    ("SSH-2.0-OpenSSH_for_Windows_8.1", "2.0", "OpenSSH_for_Windows_8.1", None, "Windows"),
    ("SSH-2.0-dropbear_2022.83", "2.0", "dropbear_2022.83", None, None),
    ("SSH-1.99-Cisco-1.25", "1.99", "Cisco-1.25", None, None),
    ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", "2.0", "OpenSSH_9.2p1", "Debian-2+deb12u3", "Debian"),
    ("HTTP/1.1 400 Bad Request", None, None, None, None),
    ("SSH-", None, None, None, None),
    ("", None, None, None, None),
]


@pytest.mark.parametrize(("banner", "protocol", "software", "comment", "os_hint"), BANNER_CASES)
def test_parse_banner(
    banner: str, protocol: str | None, software: str | None, comment: str | None, os_hint: str | None
) -> None:
    parsed = parse_banner(banner)
    if protocol is None:
        assert parsed is None
        return
    assert parsed is not None
    assert (parsed.protocol, parsed.software, parsed.comment) == (protocol, software, comment)
    assert parsed.os_hint == os_hint
    host = FoundHost("10.0.0.1", 22, banner.strip(), None, ("sweep",))
    assert (host.software, host.os_hint) == (software, os_hint)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"),
        (b"SSH-2.0-dropbear\n", "SSH-2.0-dropbear"),
        (b"SSH-2.0-x\xff\r\n", "SSH-2.0-x\ufffd"),
        (b"HTTP/1.1 400 Bad Request\r\n", None),
        (b"220 ftp ready\r\n", None),
        (b"", None),
    ],
)
def test_banner_from_line(line: bytes, expected: str | None) -> None:
    assert banner_from_line(line) == expected


# --- merging and output ----------------------------------------------------------------------------

BANNER = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"


def test_merge_combines_methods_and_takes_hostname_from_mdns() -> None:
    swept = FoundHost("10.0.0.10", 22, BANNER, None, ("sweep",))
    advertised = FoundHost("10.0.0.10", 22, None, "mac-mini.local", ("mdns",))
    for order in ([swept, advertised], [advertised, swept]):
        assert merge_found_hosts(order) == [FoundHost("10.0.0.10", 22, BANNER, "mac-mini.local", ("mdns", "sweep"))]


def test_merge_keeps_other_addresses_and_ports_apart_and_sorts_numerically() -> None:
    hosts = [
        FoundHost("10.0.0.10", 22, BANNER, None, ("sweep",)),
        FoundHost("10.0.0.9", 22, BANNER, None, ("sweep",)),
        FoundHost("10.0.0.9", 2222, None, "pi.local", ("mdns",)),
        FoundHost("10.0.0.100", 22, BANNER, None, ("sweep",)),
    ]
    merged = merge_found_hosts(hosts)
    assert [(h.address, h.port) for h in merged] == [
        ("10.0.0.9", 22),
        ("10.0.0.9", 2222),
        ("10.0.0.10", 22),
        ("10.0.0.100", 22),
    ]


def test_merge_of_the_same_method_twice_keeps_one_method() -> None:
    host = FoundHost("10.0.0.1", 22, None, "a.local", ("mdns",))
    assert merge_found_hosts([host, host]) == [host]


def test_format_found_hosts_aligns_columns() -> None:
    hosts = [
        FoundHost("10.0.0.9", 22, BANNER, "mac-mini.local", ("mdns", "sweep")),
        FoundHost("10.0.0.100", 2222, None, None, ("mdns",)),
    ]
    lines = format_found_hosts(hosts).splitlines()
    assert lines[0].split() == ["ADDRESS", "PORT", "HOSTNAME", "BANNER", "FOUND", "BY"]
    assert lines[1].split()[:3] == ["10.0.0.9", "22", "mac-mini.local"]
    assert lines[1].endswith("mdns+sweep")
    assert lines[2].split() == ["10.0.0.100", "2222", "-", "-", "mdns"]
    # Every column starts at the same offset on every line.
    for header in ("PORT", "HOSTNAME", "BANNER", "FOUND BY"):
        column = lines[0].index(header)
        assert all(line[column - 2 : column] == "  " and line[column] != " " for line in lines)


def test_format_found_hosts_says_so_when_empty() -> None:
    assert format_found_hosts([]) == "No SSH hosts found."


def test_found_hosts_to_json_is_plain_data() -> None:
    hosts = [FoundHost("10.0.0.9", 22, BANNER, "pi.local", ("mdns", "sweep"))]
    data = found_hosts_to_json(hosts)
    assert json.loads(json.dumps(data)) == [
        {
            "address": "10.0.0.9",
            "port": 22,
            "hostname": "pi.local",
            "banner": BANNER,
            "os_hint": "Debian",
            "methods": ["mdns", "sweep"],
        }
    ]


# --- subnets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["10.77.0.0/33", "not-a-subnet", "300.1.2.3/24", "", "10.77.0.0/24/8"])
def test_bad_subnet_is_a_cluster_error_naming_it(value: str) -> None:
    with pytest.raises(ClusterError) as error:
        parse_subnet(value)
    assert repr(value) in str(error.value)
    assert str(error.value).endswith(".")


@pytest.mark.parametrize(("value", "narrower"), [("10.0.0.0/16", "10.0.0.0/24"), ("192.168.0.0/21", "192.168.0.0/24")])
def test_huge_subnet_is_refused_with_a_narrower_suggestion(value: str, narrower: str) -> None:
    with pytest.raises(ClusterError) as error:
        parse_subnet(value)
    message = str(error.value)
    assert value in message and narrower in message and "/22" in message


def test_subnet_expansion() -> None:
    assert len(sweep_addresses(["10.77.0.0/24"])) == 254
    assert len(sweep_addresses(["10.77.0.0/22"])) == 1022
    assert sweep_addresses(["10.77.0.0/30"]) == ["10.77.0.1", "10.77.0.2"]
    # A bare address is a /32: that one host. Host bits are forgiven: 10.77.0.5/30 is 10.77.0.4/30.
    assert sweep_addresses(["10.77.0.12"]) == ["10.77.0.12"]
    assert sweep_addresses(["10.77.0.5/30"]) == ["10.77.0.5", "10.77.0.6"]
    # Overlaps and repeats are swept once, in order.
    assert sweep_addresses(["10.77.0.0/30", "10.77.0.2", "10.77.0.0/30"]) == ["10.77.0.1", "10.77.0.2"]


@pytest.mark.parametrize(
    ("address", "prefix", "expected"),
    [
        ("192.168.1.23", 24, "192.168.1.0/24"),
        ("10.1.2.3", 22, "10.1.0.0/22"),
        ("127.0.0.1", 8, None),
        ("169.254.12.3", 16, None),
        ("10.8.0.2", 32, None),  # a VPN tunnel: nobody else on it
        ("10.8.0.2", 31, None),
    ],
)
def test_subnet_to_sweep(address: str, prefix: int, expected: str | None) -> None:
    assert subnet_to_sweep(address, prefix) == expected


def test_wide_local_subnet_is_clamped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cluster.discovery"):
        assert subnet_to_sweep("172.17.3.4", 16) == "172.17.3.0/24"
    assert "172.17.0.0/16" in caplog.text and "172.17.3.0/24" in caplog.text


def test_local_subnets_are_sweepable() -> None:
    subnets = discovery.local_subnets()
    for subnet in subnets:
        network = parse_subnet(subnet)  # none is refused as too wide
        assert network.version == 4 and not network.is_loopback and not network.is_link_local


def test_import_is_cheap() -> None:
    """`corral` start-up should not pay for zeroconf or ifaddr until discovery runs."""
    import subprocess
    import sys

    code = "import sys, cluster.discovery; print(sorted(m for m in ('zeroconf', 'ifaddr') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- real loopback servers -------------------------------------------------------------------------


def run_clean(awaitable: Awaitable[T]) -> T:
    """Run on a fresh loop; fail on pending tasks, loop errors or unclosed sockets left behind."""
    loop_errors: list[dict[str, Any]] = []

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: loop_errors.append(context))
        result = await awaitable
        leftover = asyncio.all_tasks() - {asyncio.current_task()}
        assert not leftover, f"tasks still pending: {leftover}"
        return result

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = asyncio.run(main())
        gc.collect()
    assert not loop_errors, loop_errors
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    return result


SSH_ADDRESS, HTTP_ADDRESS, CLOSED_ADDRESS, SILENT_ADDRESS, LONG_ADDRESS = (
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.0.5",
    "127.0.0.6",
)
FAKE_BANNER = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"


def free_port_on_all(addresses: list[str]) -> int:
    """A port free on every one of the loopback addresses (so one sweep port reaches them all)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port: int = probe.getsockname()[1]
        try:
            for address in addresses:
                with socket.socket() as other:
                    other.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no port free on every loopback address")


@contextlib.asynccontextmanager
async def fake_servers(silent_reply_after_s: float | None = None) -> AsyncIterator[int]:
    """Loopback servers on one port: SSH on .2, HTTP on .3, nothing on .4, silent on .5, a flood on .6."""

    async def ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(FAKE_BANNER.encode() + b"\r\n")
        await writer.drain()
        # Like sshd: wait for the client's banner (or its goodbye).
        await reader.read(100)
        writer.close()

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-" + b"x" * 5000)
        with contextlib.suppress(OSError):
            await writer.drain()
        await reader.read(100)
        writer.close()

    handlers: set[asyncio.Task[Any]] = set()

    def tracked(handler: Any) -> Any:
        # asyncio's Server does not wait for its handlers on close (3.11): cancel them ourselves.
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            except (OSError, asyncio.CancelledError):
                writer.close()
            finally:
                handlers.discard(task)

        return run

    port = free_port_on_all([SSH_ADDRESS, HTTP_ADDRESS, SILENT_ADDRESS, LONG_ADDRESS])
    servers = [
        await asyncio.start_server(tracked(handler), address, port)
        for handler, address in (
            (ssh, SSH_ADDRESS), (http, HTTP_ADDRESS), (silent, SILENT_ADDRESS), (flood, LONG_ADDRESS)
        )
    ]
    try:
        yield port
    finally:
        for server in servers:
            server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in servers:
            await server.wait_closed()


@pytest.fixture(autouse=True)
def _loopback_aliases_exist() -> Iterator[None]:
    # Linux answers on all of 127.0.0.0/8; macOS only on 127.0.0.1 unless aliases were added.
    try:
        with socket.socket() as probe:
            probe.bind((SILENT_ADDRESS, 0))
    except OSError:
        pytest.skip("127.0.0.5 is not a local address here (Linux routes all of 127/8 to lo; macOS does not)")
    yield


def test_probe_tells_ssh_from_http_closed_silent_and_flood() -> None:
    async def scenario() -> dict[str, tuple[str | None, float]]:
        async with fake_servers() as port:
            results = {}
            for address in (SSH_ADDRESS, HTTP_ADDRESS, CLOSED_ADDRESS, SILENT_ADDRESS, LONG_ADDRESS):
                started = time.monotonic()
                banner = await probe_ssh(address, port, connect_timeout_s=0.5, banner_timeout_s=0.3)
                results[address] = (banner, time.monotonic() - started)
            return results

    results = run_clean(scenario())
    assert results[SSH_ADDRESS][0] == FAKE_BANNER
    assert results[HTTP_ADDRESS][0] is None
    assert results[CLOSED_ADDRESS][0] is None
    assert results[CLOSED_ADDRESS][1] < 0.1  # refused at once, no waiting
    assert results[SILENT_ADDRESS][0] is None
    assert 0.25 < results[SILENT_ADDRESS][1] < 0.6  # gave up on our own banner timeout
    assert results[LONG_ADDRESS][0] is None


def test_sweep_finds_only_the_ssh_server() -> None:
    reported: list[FoundHost] = []

    async def scenario() -> tuple[list[FoundHost], float]:
        async with fake_servers() as port:
            started = time.monotonic()
            hosts = await sweep(["127.0.0.0/29"], port=port, banner_timeout_s=0.3, on_found=reported.append)
            return hosts, time.monotonic() - started

    hosts, elapsed_s = run_clean(scenario())
    assert [(h.address, h.banner, h.methods, h.hostname) for h in hosts] == [
        (SSH_ADDRESS, FAKE_BANNER, ("sweep",), None)
    ]
    assert reported == hosts
    assert elapsed_s < 1.0


def test_sweep_with_tiny_concurrency_still_probes_everything() -> None:
    async def scenario() -> list[FoundHost]:
        async with fake_servers() as port:
            return await sweep(["127.0.0.0/29"], port=port, banner_timeout_s=0.2, max_concurrency=1)

    assert [h.address for h in run_clean(scenario())] == [SSH_ADDRESS]


def test_cancelled_sweep_closes_every_socket_and_leaves_no_task() -> None:
    async def scenario() -> None:
        async with fake_servers() as port:
            task = asyncio.ensure_future(sweep(["127.0.0.0/29"], port=port, banner_timeout_s=5))
            await asyncio.sleep(0.1)  # connected to the silent server, waiting for its banner
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run_clean(scenario())


def test_discover_without_mdns_reports_each_host_as_found() -> None:
    reported: list[FoundHost] = []

    async def scenario() -> list[FoundHost]:
        async with fake_servers() as port:
            return await discover(
                ["127.0.0.0/29"], port=port, use_mdns=False, timeout_s=0.8, on_found=reported.append
            )

    hosts = run_clean(scenario())
    assert [(h.address, h.methods) for h in hosts] == [(SSH_ADDRESS, ("sweep",))]
    assert reported == hosts


def test_discover_refuses_a_bad_subnet_before_any_waiting() -> None:
    with pytest.raises(ClusterError, match=re.escape("'10.0.0.0/99'")):
        asyncio.run(discover(["10.0.0.0/99"], use_mdns=False))
    with pytest.raises(ClusterError, match="positive"):
        asyncio.run(discover(["10.0.0.0/24"], timeout_s=0))


def test_discover_timeout_bounds_a_slow_sweep() -> None:
    """A sweep that cannot finish in time returns what it found by the deadline."""

    async def scenario() -> tuple[list[FoundHost], float]:
        async with fake_servers() as port:
            started = time.monotonic()
            # The silent server holds its probe open until the deadline ends it.
            hosts = await discover(["127.0.0.0/29"], port=port, use_mdns=False, timeout_s=0.6)
            return hosts, time.monotonic() - started

    hosts, elapsed_s = run_clean(scenario())
    assert elapsed_s < 0.6 + 0.35
    assert SSH_ADDRESS in [h.address for h in hosts]


# --- mDNS, in this process -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def advertised_ssh(*services: tuple[str, int, str]) -> AsyncIterator[None]:
    """Advertise ``_ssh._tcp`` services (address, port, server name), as macOS Remote Login does."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    aiozc = AsyncZeroconf(ip_version=IPVersion.V4Only)
    try:
        registrations = []
        for address, port, server in services:
            name = f"corral-test-{uuid.uuid4().hex[:8]}._ssh._tcp.local."
            info = AsyncServiceInfo(
                "_ssh._tcp.local.", name, addresses=[socket.inet_aton(address)], port=port, server=f"{server}."
            )
            registrations.append(await aiozc.async_register_service(info))
        await asyncio.gather(*registrations)  # probing and announcing, concurrently
        yield
    finally:
        await aiozc.async_close()


# A responder multicasts a record at most once a second (RFC 6762 §6), so a browse that starts
# just after someone else's can wait a second for its answer: the window must be longer than that.
MDNS_WINDOW_S = 2.0


def test_mdns_finds_an_advertised_service_and_discover_merges_it_with_the_sweep() -> None:
    server = f"corral-{uuid.uuid4().hex[:6]}.local"
    elsewhere = f"corral-{uuid.uuid4().hex[:6]}.local"

    async def scenario() -> tuple[int, list[FoundHost], list[FoundHost], list[FoundHost]]:
        reported: list[FoundHost] = []
        async with fake_servers() as port, advertised_ssh((SSH_ADDRESS, port, server), ("10.99.0.5", 22, elsewhere)):
            browsed, found = await asyncio.gather(
                discovery.browse_mdns(MDNS_WINDOW_S),
                discover(["127.0.0.0/29"], port=port, timeout_s=MDNS_WINDOW_S, on_found=reported.append),
            )
        return port, browsed, found, reported

    port, browsed, found, reported = run_clean(scenario())
    # Other test runs on this machine may advertise too: look at ours only.
    ours = {(h.address, h.port, h.hostname, h.methods) for h in browsed if h.hostname in (server, elsewhere)}
    assert ours == {(SSH_ADDRESS, port, server, ("mdns",)), ("10.99.0.5", 22, elsewhere, ("mdns",))}
    # The sweep's banner and mDNS's hostname in one record; the address outside the subnet is left out.
    found_here = [(h.address, h.hostname, h.banner, h.methods) for h in found if h.port == port]
    assert found_here == [(SSH_ADDRESS, server, FAKE_BANNER, ("mdns", "sweep"))]
    assert not [h for h in found if h.hostname == elsewhere]
    assert [h for h in reported if h.port == port][-1] == found[[h.port for h in found].index(port)]
