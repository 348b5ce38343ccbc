"""Find SSH hosts on the LAN by mDNS (``_ssh._tcp``) and by a concurrent banner sweep of port 22."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cluster.errors import ClusterError
from cluster.inventory import DEFAULT_SSH_PORT

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
OnFound = Callable[["FoundHost"], None]

DEFAULT_TIMEOUT_S = 2.0
# A wired LAN answers a SYN in about a millisecond and a dozing Wi-Fi client within a few hundred,
# while an absent address answers never (ARP gives up after ~3 s): 0.5 s keeps both in view and
# bounds a /24 sweep to about half a second.
DEFAULT_CONNECT_TIMEOUT_S = 0.5
# sshd sends its banner as soon as it accepts; a busy Raspberry Pi can take a few hundred ms.
DEFAULT_BANNER_TIMEOUT_S = 1.0
# A /22: wider subnets (a /16 holds 65,536 addresses) are refused or clamped, never swept whole.
MAX_SWEEP_ADDRESSES = 1024
# Auto-detected subnets wider than the limit are clamped to the /24 around this machine's address.
CLAMP_PREFIX_V4 = 24
# RFC 4253 caps the identification line at 255 bytes; a first line past this limit is not SSH.
_BANNER_LIMIT_BYTES = 1024
_CLIENT_IDENT = b"SSH-2.0-corral_discovery\r\n"
# Time allowed past the deadline for closing zeroconf's sockets.
_CLOSE_GRACE_S = 0.25
MDNS_SERVICE_TYPES = ("_ssh._tcp.local.", "_sftp-ssh._tcp.local.")
METHOD_MDNS = "mdns"
METHOD_SWEEP = "sweep"
_METHOD_ORDER = (METHOD_MDNS, METHOD_SWEEP)

# Distributions that put their name in OpenSSH's version comment (macOS and most BSDs do not).
_OS_HINTS = (
    ("raspbian", "Raspbian"),
    ("ubuntu", "Ubuntu"),
    ("debian", "Debian"),
    ("freebsd", "FreeBSD"),
    ("netbsd", "NetBSD"),
    ("for_windows", "Windows"),
)
_BANNER_RE = re.compile(r"^SSH-(?P<protocol>[^-\s]+)-(?P<software>\S+)(?:\s+(?P<comment>.*))?$")


@dataclass(frozen=True)
class SshBanner:
    """The parts of an SSH identification line: ``SSH-protoversion-softwareversion SP comments``."""

    protocol: str
    software: str
    comment: str | None

    @property
    def os_hint(self) -> str | None:
        """The operating system named in the banner, e.g. "Debian" or "Ubuntu", if any."""
        text = f"{self.software} {self.comment or ''}".lower()
        for needle, name in _OS_HINTS:
            if needle in text:
                return name
        return None


def parse_banner(banner: str | None) -> SshBanner | None:
    """Split an SSH identification line into its parts; None if it is not one."""
    if not banner:
        return None
    match = _BANNER_RE.match(banner.strip())
    if match is None:
        return None
    return SshBanner(match["protocol"], match["software"], match["comment"] or None)


def banner_from_line(line: bytes) -> str | None:
    """The banner text of a server's first line, or None if that line does not announce SSH."""
    if not line.startswith(b"SSH-"):
        return None
    return line.rstrip(b"\r\n").decode("ascii", errors="replace")


@dataclass(frozen=True)
class FoundHost:
    """One SSH server found on the network, and how it was found."""

    address: str
    port: int
    banner: str | None
    hostname: str | None
    methods: tuple[str, ...]

    @property
    def software(self) -> str | None:
        """The server software from the banner, e.g. "OpenSSH_9.2p1"."""
        parsed = parse_banner(self.banner)
        return parsed.software if parsed else None

    @property
    def os_hint(self) -> str | None:
        """The operating system the banner names ("Debian", "Ubuntu", …), if it names one."""
        parsed = parse_banner(self.banner)
        return parsed.os_hint if parsed else None


def _host_sort_key(host: FoundHost) -> tuple[int, int, int]:
    address = ipaddress.ip_address(host.address)
    return (address.version, int(address), host.port)


def merge_two(first: FoundHost, second: FoundHost) -> FoundHost:
    """One record for a server two methods found: methods combined, the first known banner and name."""
    methods = tuple(m for m in _METHOD_ORDER if m in first.methods or m in second.methods)
    methods += tuple(sorted(set(first.methods + second.methods) - set(methods)))
    return replace(
        first,
        banner=first.banner or second.banner,
        hostname=first.hostname or second.hostname,
        methods=methods,
    )


def merge_found_hosts(hosts: Iterable[FoundHost]) -> list[FoundHost]:
    """Merge records of the same address and port, sorted by address."""
    merged: dict[tuple[str, int], FoundHost] = {}
    for host in hosts:
        key = (host.address, host.port)
        merged[key] = merge_two(merged[key], host) if key in merged else host
    return sorted(merged.values(), key=_host_sort_key)


# --- subnets ---------------------------------------------------------------------------------------


def parse_subnet(value: str) -> IPNetwork:
    """A subnet from CIDR text (a bare address is a /32); refuses bad text and huge subnets."""
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise ClusterError(f"{value!r} is not a subnet; write it like 192.168.1.0/24.") from exc
    if network.num_addresses > MAX_SWEEP_ADDRESSES:
        narrower = next(network.subnets(new_prefix=network.max_prefixlen - 8))
        raise ClusterError(
            f"Subnet {value} holds {network.num_addresses:,} addresses, more than the "
            f"{MAX_SWEEP_ADDRESSES:,} corral sweeps at once (a /22); give a narrower one, such as {narrower}."
        )
    return network


def parse_subnets(values: Iterable[str]) -> list[IPNetwork]:
    """Parse several subnets, dropping repeats and keeping their order."""
    return list(dict.fromkeys(parse_subnet(v) for v in values))


def sweep_addresses(subnets: Iterable[str | IPNetwork]) -> list[str]:
    """Every host address of the subnets (no network or broadcast address), each once, in order."""
    addresses: dict[str, None] = {}
    for subnet in subnets:
        network = parse_subnet(subnet) if isinstance(subnet, str) else subnet
        for address in network.hosts():
            addresses[str(address)] = None
    return list(addresses)


def subnet_to_sweep(address: str, prefix_len: int) -> str | None:
    """The subnet worth sweeping for an interface address, clamped if wide; None if none is."""
    interface = ipaddress.ip_interface(f"{address}/{prefix_len}")
    ip = interface.ip
    if ip.version != 4 or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return None
    network = interface.network
    if network.num_addresses <= 2:
        # A /31 or /32 (a VPN tunnel, a point-to-point link) has no neighbours worth sweeping.
        return None
    if network.num_addresses > MAX_SWEEP_ADDRESSES:
        clamped = ipaddress.ip_interface(f"{ip}/{CLAMP_PREFIX_V4}").network
        log.warning(
            "The interface at %s is on %s (%s addresses); sweeping only %s around it. "
            "Pass --subnet to sweep elsewhere.",
            ip,
            network,
            f"{network.num_addresses:,}",
            clamped,
        )
        network = clamped
    return str(network)


def local_subnets() -> list[str]:
    """The IPv4 subnets of this machine's interfaces, without loopback and link-local ones.

    A subnet wider than a /22 is clamped to the /24 around this machine's address, with a warning.
    Link-local peers (169.254/16, e.g. a Thunderbolt bridge) pick random addresses across the /16,
    so no sweep finds them; mDNS does.
    """
    import ifaddr  # imported here: `corral` start-up should not pay for it

    subnets: dict[str, None] = {}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 entries are tuples; a v6 /64 cannot be swept anyway
            subnet = subnet_to_sweep(ip.ip, ip.network_prefix)
            if subnet is not None:
                subnets[subnet] = None
    return list(subnets)


# --- the sweep -------------------------------------------------------------------------------------


def default_max_concurrency() -> int:
    """How many connections to hold open at once: half the open-file limit, at most 1024."""
    try:
        import resource
    except ImportError:  # Windows has no RLIMIT_NOFILE; its default socket limit is generous.
        return 512
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1024
    # macOS starts processes with a limit of 256 files: leave half for asyncssh, zeroconf and logs.
    return max(16, min(1024, soft // 2))


async def probe_ssh(
    address: str,
    port: int = DEFAULT_SSH_PORT,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    banner_timeout_s: float = DEFAULT_BANNER_TIMEOUT_S,
) -> str | None:
    """The SSH banner at address:port, or None if nothing answers in time or what answers is not SSH."""
    try:
        # Our own timeout, not the OS's: an absent address may never answer at all.
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, limit=_BANNER_LIMIT_BYTES), connect_timeout_s
        )
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), banner_timeout_s)
        banner = banner_from_line(line)
        if banner is not None:
            # Greeting back makes sshd log a plain "Connection closed" rather than "did not receive
            # identification string", which fail2ban's aggressive mode bans.
            writer.write(_CLIENT_IDENT)
        return banner
    except (OSError, asyncio.TimeoutError, ValueError):
        # ValueError: a first line longer than any banner.
        return None
    finally:
        writer.close()
        # The peer may already have reset the connection; the banner is all we wanted.
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def sweep(
    subnets: Iterable[str | IPNetwork],
    *,
    port: int = DEFAULT_SSH_PORT,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    banner_timeout_s: float = DEFAULT_BANNER_TIMEOUT_S,
    max_concurrency: int | None = None,
    on_found: OnFound | None = None,
) -> list[FoundHost]:
    """Try every host address of the subnets on ``port`` at once and keep those that greet with SSH."""
    addresses = sweep_addresses(subnets)
    limit = asyncio.Semaphore(max_concurrency or default_max_concurrency())
    found: list[FoundHost] = []

    async def probe(address: str) -> None:
        async with limit:
            banner = await probe_ssh(
                address, port, connect_timeout_s=connect_timeout_s, banner_timeout_s=banner_timeout_s
            )
        if banner is None:
            return
        host = FoundHost(address, port, banner, None, (METHOD_SWEEP,))
        found.append(host)
        if on_found is not None:
            on_found(host)

    await _run_all(probe(address) for address in addresses)
    return sorted(found, key=_host_sort_key)


async def _run_all(coroutines: Iterable[Any]) -> None:
    """Run coroutines concurrently; on error or cancellation, cancel the rest and wait for them."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    finally:
        # gather does not cancel its siblings when one fails, nor wait when it is cancelled itself.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- mDNS ------------------------------------------------------------------------------------------


def _hostname_from_server(server: str | None) -> str | None:
    """The server name without its root dot ("mac-mini.local"), as ssh and other tools accept it."""
    name = (server or "").rstrip(".")
    return name or None


async def browse_mdns(
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    service_types: Sequence[str] = MDNS_SERVICE_TYPES,
    interfaces: Any = None,
    on_found: OnFound | None = None,
) -> list[FoundHost]:
    """Listen ``timeout_s`` seconds for mDNS SSH services (macOS Remote Login advertises ``_ssh._tcp``).

    ``interfaces`` is passed to zeroconf (default: every interface); each IPv4 address a service
    resolves to becomes a host, named by the service's server name (e.g. "mac-mini.local").
    """
    # Imported here: zeroconf costs ~0.1 s to import and only discovery needs it.
    from zeroconf import DNSQuestionType, InterfaceChoice, IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    found: dict[tuple[str, int], FoundHost] = {}
    resolving: set[asyncio.Task[None]] = set()

    def note(host: FoundHost) -> None:
        key = (host.address, host.port)
        if key in found:
            return  # the same server under _ssh._tcp and _sftp-ssh._tcp
        found[key] = host
        if on_found is not None:
            on_found(host)

    async def resolve(zc: Any, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        remaining_ms = max(0.0, deadline - loop.time()) * 1000
        if not await info.async_request(zc, remaining_ms, question_type=DNSQuestionType.QM) or info.port is None:
            return
        hostname = _hostname_from_server(info.server)
        for address in info.parsed_addresses(IPVersion.V4Only):
            note(FoundHost(address, info.port, None, hostname, (METHOD_MDNS,)))

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            task = loop.create_task(resolve(zeroconf, service_type, name))
            resolving.add(task)
            task.add_done_callback(resolving.discard)

    try:
        aiozc = AsyncZeroconf(
            interfaces=InterfaceChoice.All if interfaces is None else interfaces, ip_version=IPVersion.V4Only
        )
    except (OSError, RuntimeError) as exc:
        # RuntimeError: zeroconf found no interface with an IPv4 address to listen on.
        raise ClusterError(f"mDNS cannot listen on this machine's network ({exc}); sweeping only.") from exc
    try:
        # zeroconf asks its first question for a unicast (QU) reply to port 5353; when another
        # mDNS stack holds that port too (mDNSResponder on a Mac, or a second zeroconf), the
        # reply can land on the other socket and the answers come only with the QM retry a second
        # later. Multicast questions are answered within ~0.1 s.
        browser = AsyncServiceBrowser(
            aiozc.zeroconf, list(service_types), handlers=[on_change], question_type=DNSQuestionType.QM
        )
        try:
            # mDNS has no "that was everyone": responders answer within ~0.1 s (Wi-Fi within
            # a beacon interval or three), so the browse lasts the whole window it is given.
            await asyncio.sleep(max(0.0, deadline - loop.time()))
        finally:
            await browser.async_cancel()
            # The window is over: answers still being resolved come too late.
            for task in resolving:
                task.cancel()
            await asyncio.gather(*resolving, return_exceptions=True)
    finally:
        await aiozc.async_close()
    return sorted(found.values(), key=_host_sort_key)


# --- both ------------------------------------------------------------------------------------------


class _Merger:
    """Merges hosts as they arrive and reports each new or improved record."""

    def __init__(self, on_found: OnFound | None) -> None:
        self.hosts: dict[tuple[str, int], FoundHost] = {}
        self._on_found = on_found

    def add(self, host: FoundHost) -> None:
        key = (host.address, host.port)
        known = self.hosts.get(key)
        merged = host if known is None else merge_two(known, host)
        if merged == known:
            return
        self.hosts[key] = merged
        if self._on_found is not None:
            self._on_found(merged)


def _in_any(address: str, networks: Sequence[IPNetwork]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in network for network in networks)


class _Discovery:
    """One run of discover(): the sweep and the mDNS browse against a shared deadline."""

    def __init__(
        self, networks: list[IPNetwork], *, explicit: bool, timeout_s: float, port: int, on_found: OnFound | None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + timeout_s
        self.networks = networks
        self.explicit = explicit
        self.port = port
        self.merger = _Merger(on_found)
        # A longer --timeout-s buys patience with slow networks, not only a longer mDNS window.
        self.connect_timeout_s = min(timeout_s, max(DEFAULT_CONNECT_TIMEOUT_S, timeout_s / 4))
        self.banner_timeout_s = min(timeout_s, max(DEFAULT_BANNER_TIMEOUT_S, timeout_s / 4))
        self.swept: set[tuple[str, int]] = set()
        self.sweep_done = asyncio.Event()
        self.probes: set[asyncio.Task[None]] = set()

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - self.loop.time())

    async def run(self, *, use_sweep: bool, use_mdns: bool) -> list[FoundHost]:
        jobs = []
        if use_sweep and self.networks:
            jobs.append(self.run_sweep())
        else:
            self.sweep_done.set()
        if use_mdns:
            jobs.append(self.run_mdns())
        try:
            # The grace lets zeroconf say goodbye after its window; the sweep never needs it.
            await asyncio.wait_for(_run_all(jobs), self.remaining_s() + _CLOSE_GRACE_S)
        except asyncio.TimeoutError:
            log.info("Discovery stopped at its deadline; hosts not answering by then were left out.")
        # Banner probes of mDNS hosts get what is left of the window, and no more.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(_run_all(list(self.probes)), self.remaining_s())
        return sorted(self.merger.hosts.values(), key=_host_sort_key)

    async def run_sweep(self) -> None:
        try:
            await sweep(
                self.networks,
                port=self.port,
                connect_timeout_s=self.connect_timeout_s,
                banner_timeout_s=self.banner_timeout_s,
                on_found=self.on_swept,
            )
        finally:
            self.sweep_done.set()

    def on_swept(self, host: FoundHost) -> None:
        self.swept.add((host.address, host.port))
        self.merger.add(host)

    async def run_mdns(self) -> None:
        try:
            await browse_mdns(self.remaining_s(), on_found=self.on_mdns)
        except ClusterError as exc:
            log.warning("%s", exc)  # the sweep goes on without it

    def on_mdns(self, host: FoundHost) -> None:
        if self.explicit and not _in_any(host.address, self.networks):
            return
        self.merger.add(host)
        task = self.loop.create_task(self.probe_mdns_host(host))
        self.probes.add(task)
        task.add_done_callback(self.probes.discard)

    async def probe_mdns_host(self, host: FoundHost) -> None:
        """Read the banner of a host mDNS found, unless the sweep already has."""
        if host.port == self.port and _in_any(host.address, self.networks):
            await self.sweep_done.wait()  # the sweep reads this banner anyway, unless the host was slow
        if (host.address, host.port) in self.swept or self.remaining_s() <= 0:
            return
        # mDNS vouches for the host (perhaps a sleeping Mac being woken): wait as long as we may.
        banner = await probe_ssh(
            host.address, host.port, connect_timeout_s=self.remaining_s(), banner_timeout_s=self.banner_timeout_s
        )
        if banner is not None:
            self.merger.add(replace(host, banner=banner))


async def discover(
    subnets: Sequence[str] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    port: int = DEFAULT_SSH_PORT,
    use_mdns: bool = True,
    use_sweep: bool = True,
    on_found: OnFound | None = None,
) -> list[FoundHost]:
    """SSH hosts found by mDNS and by sweeping ``subnets`` (default: the local ones) within ``timeout_s``.

    Results are merged per address and port (methods combined, hostname from mDNS) and sorted by
    address. ``on_found`` is called with each new host as it is found, and again with the merged
    record when a second method adds to it. mDNS listens for the whole ``timeout_s``; the sweep
    usually ends long before, and a longer ``timeout_s`` makes its timeouts more patient too.
    When ``subnets`` are given, mDNS hosts outside them are left out. Hosts only mDNS found are
    probed for their banner before the time is up. If mDNS cannot run here, a warning is logged and
    the sweep goes on.
    """
    if timeout_s <= 0:
        raise ClusterError(f"The discovery timeout must be positive, not {timeout_s}.")
    # Parsed first, so a bad --subnet fails before any waiting.
    networks = parse_subnets(subnets) if subnets else parse_subnets(local_subnets())
    if use_sweep and not networks:
        log.warning("This machine has no IPv4 subnet to sweep; pass --subnet to name one.")
    run = _Discovery(networks, explicit=bool(subnets), timeout_s=timeout_s, port=port, on_found=on_found)
    return await run.run(use_sweep=use_sweep, use_mdns=use_mdns)


# --- output ----------------------------------------------------------------------------------------

_COLUMNS = ("ADDRESS", "PORT", "HOSTNAME", "BANNER", "FOUND BY")


def _row(host: FoundHost) -> tuple[str, ...]:
    return (
        host.address,
        str(host.port),
        host.hostname or "-",
        host.banner or "-",
        "+".join(host.methods),
    )


def format_found_hosts(hosts: Sequence[FoundHost]) -> str:
    """An aligned text table of the hosts: address, port, hostname, banner, and how each was found."""
    if not hosts:
        return "No SSH hosts found."
    from cluster.table import format_table

    return format_table(_COLUMNS, [_row(h) for h in hosts])


def found_hosts_to_json(hosts: Iterable[FoundHost]) -> list[dict[str, Any]]:
    """The hosts as plain dicts for ``--json``: address, port, hostname, banner, os_hint, methods."""
    return [
        {
            "address": host.address,
            "port": host.port,
            "hostname": host.hostname,
            "banner": host.banner,
            "os_hint": host.os_hint,
            "methods": list(host.methods),
        }
        for host in hosts
    ]
