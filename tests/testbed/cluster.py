"""Build a fake home lab of N SSH hosts on this machine out of Linux namespaces, for integration tests."""

# Each node is a network namespace behind a veth on one bridge, plus private mount, UTS and PID
# namespaces whose PID 1 (a small bash script) bind-mounts the node's own /etc/passwd, shadow,
# group, hosts, hostname, /etc/ssh, /home, /run and /tmp, sets the hostname and runs its sshd:
#
#     root namespace                                 node i (netns crl<tag>n<i>)
#     crl<tag>b 10.77.K.1/24 (bridge) -- crl<tag>h<i> ==veth== eth0 10.77.K.(10+i)/24
#                                                     PID 1 init.sh -> sshd -D -e
#
# Everything of one cluster is named crl<tag>..., the tag unique to the creating process, so
# clean_leftovers() (`python -m tests.testbed clean`) finds what a killed run left behind.
# docs/testing.md tells the whole story.

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

__all__ = [
    "NodeCommandError",
    "TestCluster",
    "TestClusterError",
    "TestNode",
    "can_build_clusters",
    "clean_leftovers",
    "read_ssh_banner",
]

PREFIX = "crl"
SSHD = "/usr/sbin/sshd"
SSH_PORT = 22
BASE_UID = 2000
DEFAULT_SUBNET_PATTERN = "10.77.{}.0/24"
SUBNET_LOCK = Path("/run/lock/corral-testbed.lock")
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin"
REQUIRED_TOOLS = ("ip", "unshare", "nsenter", "setpriv", "setsid", "env", "ssh-keygen", "openssl")
# The tag is 7 base-36 characters: 5 for our pid, 2 for a per-process counter.  Names stay at
# most 3 + 7 + 4 = 14 characters, under the kernel's 15-character limit for link names:
# bridge crl<tag>b, host veth ends crl<tag>h<i>, namespaces crl<tag>n<i>, work dir crl<tag>-*.
NAME_RE = re.compile(rf"^{PREFIX}([0-9a-z]{{7}})(?:b|h\d{{1,3}}|n\d{{1,3}}|-.*)$")
MAX_NODES = 244  # .11 .. .254 of a /24

# sshd_config is first-match-wins, so extra options are merged into this dict, not appended.
SSHD_DEFAULTS: dict[str, str] = {
    "Port": str(SSH_PORT),
    "AddressFamily": "inet",
    "HostKey": "/etc/ssh/ssh_host_ed25519_key",
    "PidFile": "/run/sshd.pid",
    "PasswordAuthentication": "yes",
    "KbdInteractiveAuthentication": "no",
    "UsePAM": "no",
    "PermitRootLogin": "no",
    "PubkeyAuthentication": "yes",
    "AuthorizedKeysFile": ".ssh/authorized_keys",
    "StrictModes": "yes",
    "Subsystem": "sftp internal-sftp",
    "PrintMotd": "no",
    "PrintLastLog": "no",
    "UseDNS": "no",
}

_live_clusters: set[TestCluster] = set()
_tag_counter = itertools.count()


class TestClusterError(RuntimeError):
    """The test cluster could not be built, reached or torn down; the message says why."""

    __test__ = False  # not a pytest test class despite the name


class NodeCommandError(subprocess.CalledProcessError):
    """A command run with ``TestNode.run(check=True)`` exited non-zero; str() shows its stderr."""

    def __init__(self, node: str, returncode: int, cmd: Sequence[str], output: str, stderr: str):
        super().__init__(returncode, list(cmd), output, stderr)
        self.node = node

    def __str__(self) -> str:
        tail = (self.stderr or "").strip()[-2000:]
        return f"{self.node}: {shlex.join(self.cmd)} exited {self.returncode}" + (
            f": {tail}" if tail else ""
        )


@functools.cache
def can_build_clusters() -> tuple[bool, str]:
    """Return (True, "") if this machine can build test clusters, else (False, the reason)."""
    if sys.platform != "linux":
        return False, f"the test cluster needs Linux namespaces; this is {sys.platform}"
    if os.geteuid() != 0:
        return False, "the test cluster needs root (network namespaces, bridges, bind mounts)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        return False, (
            f"the test cluster needs {', '.join(missing)} "
            "(apt-get install iproute2 util-linux openssh-server openssh-client openssl)"
        )
    # Root inside an unprivileged container may still be refused namespaces: try once.
    probe = subprocess.run(
        ["unshare", "--net", "--mount", "--uts", "--pid", "--fork", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return False, f"cannot create namespaces here: {probe.stderr.strip()}"
    return True, ""


def read_ssh_banner(address: str, port: int = SSH_PORT, timeout_s: float = 1.0) -> str | None:
    """Return the identification line an SSH server sends, or None while nothing answers."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s) as sock:
            data = b""
            while b"\n" not in data and len(data) < 512:
                chunk = sock.recv(512)
                if not chunk:
                    break
                data += chunk
            # Saying hello back keeps sshd's log free of "did not receive identification".
            with contextlib.suppress(OSError):
                sock.sendall(b"SSH-2.0-corral_testbed_probe\r\n")
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    return line if line.startswith("SSH-") else None


def _port_refuses(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _poll_until(done: Callable[[], bool], timeout_s: float, interval_s: float = 0.01) -> bool:
    """Call done() until it is true or timeout_s passes; return its last verdict."""
    deadline = time.monotonic() + timeout_s
    while True:
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def _run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), input=input, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise TestClusterError(
            f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def _ip_batch(lines: Sequence[str], *, netns: str | None = None, force: bool = False) -> None:
    """Run many ip commands in one process: a cluster needs dozens and each exec costs."""
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    _run(argv, input="\n".join(lines) + "\n", check=not force)


def _b36(value: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(width):
        value, rest = divmod(value, 36)
        out = digits[rest] + out
    return out


def _tag_of(name: str) -> str | None:
    match = NAME_RE.match(name)
    return match.group(1) if match else None


def _tag_owner_pid(tag: str) -> int:
    return int(tag[:5], 36)


def _netns_names() -> list[str]:
    result = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _link_names() -> list[str]:
    result = _run(["ip", "-j", "link", "show"], check=False)
    return [link["ifname"] for link in json.loads(result.stdout or "[]")]


def _host_networks() -> list[ipaddress.IPv4Network]:
    result = _run(["ip", "-j", "-4", "addr", "show"])
    return [
        ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
        for link in json.loads(result.stdout or "[]")
        for info in link.get("addr_info", [])
        if info.get("family") == "inet"
    ]


def _pick_free_subnet() -> ipaddress.IPv4Network:
    taken = _host_networks()
    for k in range(256):
        candidate = ipaddress.ip_network(DEFAULT_SUBNET_PATTERN.format(k))
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise TestClusterError("no free 10.77.K.0/24 subnet left; run `python -m tests.testbed clean`")


def _new_tag() -> str:
    """A tag no link, namespace or work dir uses yet (a reused pid may meet a crashed run's)."""
    used = {_tag_of(name) for name in _link_names() + _netns_names()}
    used |= {_tag_of(path.name) for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*")}
    while True:
        tag = _b36(os.getpid(), 5) + _b36(next(_tag_counter), 2)
        if tag not in used:
            return tag


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """Serialise picking and claiming a subnet between concurrent test runs."""
    SUBNET_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(SUBNET_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _is_gone(pid: int) -> bool:
    """True if pid has exited; a zombie counts as gone since it holds nothing but its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _kill(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pids_in_netns(names: Sequence[str]) -> list[int]:
    """Processes whose network namespace is one of the named ones (like `ip netns pids`)."""
    wanted = set()
    for name in names:
        with contextlib.suppress(OSError):
            st = os.stat(f"/run/netns/{name}")
            wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{entry.name}/ns/net")
                if (st.st_dev, st.st_ino) in wanted:
                    pids.append(int(entry.name))
    return pids


def _init_pids_of(tag: str) -> list[int]:
    """Node PID 1s (and their unshare) of a tag, found even if their netns is already gone."""
    script = re.compile(rf"/{PREFIX}{tag}-[^/]+/node\d+/init\.sh$")
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                argv = raw.decode(errors="replace").split("\0")[:-1]
                # Only bash or unshare running the script: never an editor or grep naming it.
                if argv and Path(argv[0]).name in ("bash", "unshare") and script.search(argv[-1]):
                    pids.append(int(entry.name))
    return pids


def _remove_tag(tag: str, timeout_s: float = 10.0) -> list[str]:
    """Kill, unlink and delete everything named after tag; return what is still left."""
    prefix = PREFIX + tag
    netns = [name for name in _netns_names() if name.startswith(prefix)]
    victims = set(_pids_in_netns(netns)) | set(_init_pids_of(tag))
    victims.discard(os.getpid())
    for pid in victims:
        _kill(pid)
    _poll_until(lambda: all(_is_gone(pid) for pid in victims), timeout_s)
    links = [name for name in _link_names() if name.startswith(prefix)]
    # Deleting the host end of a veth deletes its peer too; -force goes on past links the
    # kernel removed meanwhile.
    if links:
        _ip_batch([f"link del {name}" for name in links], force=True)
    if netns:
        _ip_batch([f"netns del {name}" for name in netns], force=True)
    # A dying namespace takes its links with it asynchronously; wait for that.
    _poll_until(lambda: not any(n.startswith(prefix) for n in _link_names()), timeout_s, 0.02)
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}-*"):
        shutil.rmtree(path, ignore_errors=True)
    left = [f"process {pid}" for pid in victims if not _is_gone(pid)]
    left += [f"netns {n}" for n in _netns_names() if n.startswith(prefix)]
    left += [f"link {n}" for n in _link_names() if n.startswith(prefix)]
    return left


def clean_leftovers(*, include_live: bool = False) -> list[str]:
    """Remove namespaces, links, processes and work dirs of test clusters; say what was done.

    A cluster whose creating process still runs is kept unless include_live is true, so a
    clean never pulls the floor from under a test run in progress.
    """
    tags = {_tag_of(name) for name in _netns_names() + _link_names()}
    tags |= {_tag_of(path.name) for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}*")}
    report = []
    for tag in sorted(t for t in tags if t):
        owner = _tag_owner_pid(tag)
        if not include_live and owner != os.getpid() and not _is_gone(owner):
            report.append(f"kept {PREFIX}{tag}: its process {owner} still runs (--all removes it too)")
            continue
        left = _remove_tag(tag)
        report.append(f"removed {PREFIX}{tag}" + (f", but still left: {', '.join(left)}" if left else ""))
    return report


def _fingerprint(public_key_line: str) -> str:
    """SHA256 fingerprint exactly as `ssh-keygen -lf` prints it."""
    blob = base64.b64decode(public_key_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _hash_passwords(passwords: Sequence[str]) -> list[str]:
    """SHA-512 crypt hashes for /etc/shadow, one openssl process for all nodes."""
    result = _run(["openssl", "passwd", "-6", "-stdin"], input="\n".join(passwords) + "\n")
    hashes = result.stdout.split()
    if len(hashes) != len(passwords):
        raise TestClusterError(
            f"openssl passwd returned {len(hashes)} hashes for {len(passwords)} passwords"
        )
    return hashes


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return text[-limit:] if text.strip() else "(log is empty)"


def _node_env(home: str, user: str, path: str) -> dict[str, str]:
    return {
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/bash",
        "PATH": path,
        "LANG": "C.UTF-8",
    }


class TestNode:
    """One fake host of a TestCluster: its namespaces, user, sshd and the cable to the bridge."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, cluster: TestCluster, index: int, address: str, password: str):
        self._cluster = cluster
        self.index = index
        self.name = f"node{index}"
        self.hostname = f"{self.name}-{cluster.tag}"
        self.address = address
        self.port = SSH_PORT
        self.user = f"lab{index}"
        self.uid = BASE_UID + index
        self.gid = self.uid
        self.home = f"/home/{self.user}"  # as seen inside the node
        self.password = password
        self.netns = f"{PREFIX}{cluster.tag}n{index}"
        self.veth = f"{PREFIX}{cluster.tag}h{index}"  # host end; the node end is eth0
        self.node_dir = cluster.workdir / self.name
        self.home_on_host = self.node_dir / "home" / self.user
        self.log_path = self.node_dir / "sshd.log"
        self.host_key_fingerprint = ""
        self.host_public_key_line = ""
        self.pid: int | None = None  # the node's PID 1 as the root namespace numbers it
        self._unshare: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"<TestNode {self.name} {self.user}@{self.address} pid={self.pid}>"

    @property
    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_public_key_line}"

    @property
    def alive(self) -> bool:
        return self.pid is not None and not _is_gone(self.pid)

    # --- running commands inside the node ---------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        as_user: bool = False,
        check: bool = True,
        input: str | None = None,
        timeout: float = 30,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the node, as root or as the node user; mirrors subprocess.run."""
        argv = [str(arg) for arg in argv]
        if as_user:
            prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]
            prefix += ["env", "-i", f"--chdir={self.home}", "--"]
            env = _node_env(self.home, self.user, USER_PATH)
        else:
            prefix = ["env", "-i", "--chdir=/", "--"]
            env = _node_env("/root", "root", ROOT_PATH)
        # env -i then the variables: nothing of the test process's environment leaks in.
        full = self._nsenter_argv() + prefix + [f"{k}={v}" for k, v in env.items()] + argv
        proc = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # so a timeout can kill nsenter and what it started
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            try:
                out, err = proc.communicate(timeout=1)
            except subprocess.TimeoutExpired:
                # Something that left our session (setsid, a daemon) still holds the pipes.
                out, err = "", ""
                proc.kill()
                proc.wait()
            raise subprocess.TimeoutExpired(argv, timeout, out, err) from None
        if check and proc.returncode != 0:
            raise NodeCommandError(self.name, proc.returncode, argv, out, err)
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _nsenter_argv(self) -> list[str]:
        if not self.alive:
            raise TestClusterError(f"{self.name} is not running (crashed or never booted)")
        return ["nsenter", f"--target={self.pid}", "--net", "--mount", "--uts", "--pid", "--"]

    # --- sshd ---------------------------------------------------------------------------------

    def start_sshd(self, timeout_s: float = 10.0) -> None:
        """Start the node's sshd and return once it answers on port 22."""
        with open(self.log_path, "ab") as log:
            # setsid -f: sshd leaves our session and, orphaned, is adopted by the node's PID 1.
            subprocess.run(
                self._nsenter_argv() + ["setsid", "-f", SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=_node_env("/root", "root", ROOT_PATH),
                check=True,
                timeout=timeout_s,
            )
        self.wait_until_ready(timeout_s)

    def stop_sshd(self, timeout_s: float = 10.0) -> None:
        """Stop the listening sshd (sessions already open live on, as on a real host)."""
        pid_file = self.node_dir / "run" / "sshd.pid"
        if not _poll_until(pid_file.exists, 2.0):
            raise TestClusterError(f"{self.name}: sshd is not running (no {pid_file})")
        self.run(["kill", pid_file.read_text().strip()])
        if not _poll_until(lambda: _port_refuses(self.address, self.port), timeout_s):
            raise TestClusterError(f"{self.name}: sshd still listens {timeout_s} s after SIGTERM")

    def wait_until_ready(self, timeout_s: float = 10.0) -> None:
        """Poll port 22 until sshd sends its banner; on timeout raise with the sshd log."""
        if not _poll_until(self._answers, timeout_s):
            raise self._not_ready_error(timeout_s)

    def _not_ready_error(self, timeout_s: float) -> TestClusterError:
        return TestClusterError(
            f"{self.name} ({self.address}) did not answer on port {self.port} within "
            f"{timeout_s} s; sshd log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def _answers(self) -> bool:
        if self._unshare is not None and self._unshare.poll() is not None:
            raise TestClusterError(
                f"{self.name} died while starting (exit {self._unshare.returncode}); "
                f"log {self.log_path}:\n{_tail(self.log_path)}"
            )
        return read_ssh_banner(self.address, self.port, timeout_s=0.5) is not None

    def regenerate_host_key(self) -> None:
        """Give the node a new host key, as a reinstalled machine would have, and restart sshd."""
        self.stop_sshd()
        for path in self.node_dir.glob("ssh/ssh_host_*"):
            path.unlink()
        self._make_host_key()
        self._cluster._write_client_files()
        self.start_sshd()

    def _keygen_argv(self) -> list[str]:
        key = self.node_dir / "ssh" / "ssh_host_ed25519_key"
        return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.hostname}", "-f", str(key)]

    def _make_host_key(self) -> None:
        _run(self._keygen_argv())
        self._read_host_key()

    def _read_host_key(self) -> None:
        fields = (self.node_dir / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
        self.host_public_key_line = f"{fields[0]} {fields[1]}"
        self.host_key_fingerprint = _fingerprint(self.host_public_key_line)

    # --- faults -------------------------------------------------------------------------------

    def link_down(self) -> None:
        """Cut the node's cable: packets to and from it vanish, nothing is refused."""
        _run(["ip", "link", "set", self.veth, "down"])

    def link_up(self) -> None:
        """Plug the cable back in; connections stalled meanwhile carry on."""
        _run(["ip", "link", "set", self.veth, "up"])

    def crash(self, timeout_s: float = 10.0) -> None:
        """Kill every process of the node at once, like pulling its plug.

        The network namespace stays, so peers see closed sockets and refused connections;
        call link_down() first for a node that falls silent instead.
        """
        self._kill(timeout_s)

    def boot(self, timeout_s: float = 10.0) -> None:
        """Start the node again after crash(): PID 1, its mounts and sshd; wait for sshd."""
        if self.alive:
            raise TestClusterError(f"{self.name} is already running")
        self._spawn()
        self.wait_until_ready(timeout_s)

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self._unshare = subprocess.Popen(
                [
                    "ip", "netns", "exec", self.netns,
                    "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
                    "--propagation", "private", "--kill-child=SIGKILL",
                    str(self.node_dir / "init.sh"),
                ],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=_node_env("/root", "root", ROOT_PATH),
                start_new_session=True,  # the node is its own session, like `setsid`
            )
        # unshare forks the node's PID 1 at once; nsenter needs its pid.
        unshare = self._unshare
        if not _poll_until(lambda: bool(_child_pids(unshare.pid)) or unshare.poll() is not None, 5.0, 0.002):
            raise TestClusterError(f"{self.name}: unshare started no PID 1 within 5 s")
        children = _child_pids(unshare.pid)
        self.pid = children[0] if children else None
        if self.pid is None:
            raise TestClusterError(
                f"{self.name} failed to start (exit {unshare.returncode}); log {self.log_path}:\n"
                f"{_tail(self.log_path)}"
            )

    def _kill(self, timeout_s: float = 10.0) -> None:
        # unshare --fork ignores SIGTERM; SIGKILL it and --kill-child takes the node down.
        # Killing PID 1 ourselves as well does not depend on that.
        pid, unshare = self.pid, self._unshare
        if unshare is not None:
            _kill(unshare.pid)
        _kill(pid)
        if unshare is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                unshare.wait(timeout_s)
        # PID 1 of a PID namespace exits only after all its processes have: waiting for it
        # waits for the whole node.
        if pid is not None and not _poll_until(lambda: _is_gone(pid), timeout_s):
            raise TestClusterError(f"{self.name}: PID 1 ({pid}) still alive {timeout_s} s after SIGKILL")
        self._unshare = None


class TestCluster:
    """N fake SSH hosts on one bridge; a context manager that builds and removes them."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        n: int = 3,
        *,
        subnet: str | None = None,
        start_timeout_s: float = 15.0,
        sshd_options: Mapping[str, str] | None = None,
    ):
        if not 1 <= n <= MAX_NODES:
            raise ValueError(f"a test cluster has 1 to {MAX_NODES} nodes, not {n}")
        self.n = n
        self.start_timeout_s = start_timeout_s
        self.sshd_options = {**SSHD_DEFAULTS, **(sshd_options or {})}
        self._requested_subnet = subnet
        self.tag = ""
        self.subnet = ""
        self.gateway = ""
        self.bridge = ""
        self.workdir = Path()
        self.nodes: list[TestNode] = []
        self._state = "new"  # new -> started -> stopped

    def __repr__(self) -> str:
        return f"<TestCluster {PREFIX}{self.tag} {self.subnet} n={self.n} {self._state}>"

    def __enter__(self) -> TestCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def node_uids(self) -> list[int]:
        return [node.uid for node in self.nodes]

    @property
    def known_hosts_path(self) -> Path:
        """A known_hosts file with every node's current host key."""
        return self.workdir / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        """An ssh_config naming each node (``ssh -F <this> node1``), trusting known_hosts_path."""
        return self.workdir / "ssh_config"

    def start(self) -> None:
        """Build the nodes and return once every sshd answers; on failure, undo everything."""
        if self._state != "new":
            raise TestClusterError(f"{self!r} can only be started once")
        ok, reason = can_build_clusters()
        if not ok:
            raise TestClusterError(reason)
        self._state = "started"
        _live_clusters.add(self)
        try:
            self.tag = _new_tag()
            self.bridge = f"{PREFIX}{self.tag}b"
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.tag}-"))
            with _subnet_lock():
                network = self._choose_subnet()
                self.subnet = str(network)
                self.gateway = str(network[1])
                self._create_bridge()
            passwords = [secrets.token_urlsafe(12) for _ in range(self.n)]
            self.nodes = [
                TestNode(self, i, str(network[10 + i]), passwords[i - 1]) for i in range(1, self.n + 1)
            ]
            self._write_node_files()
            self._create_node_links()
            for node in self.nodes:
                node._spawn()
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every node and remove its namespaces, links and files; safe to call twice."""
        if self._state != "started":
            return
        self._state = "stopped"
        _live_clusters.discard(self)
        problems = []
        for node in self.nodes:
            try:
                node._kill()
            except TestClusterError as exc:
                problems.append(str(exc))
        if self.tag:
            problems += _remove_tag(self.tag)
        if problems:
            raise TestClusterError(f"tearing down {PREFIX}{self.tag} left: {'; '.join(problems)}")

    # --- building -----------------------------------------------------------------------------

    def _choose_subnet(self) -> ipaddress.IPv4Network:
        if self._requested_subnet is None:
            return _pick_free_subnet()
        network = ipaddress.ip_network(self._requested_subnet)
        if not isinstance(network, ipaddress.IPv4Network) or network.num_addresses < 12 + self.n:
            raise TestClusterError(f"subnet {network} is too small for {self.n} nodes at .11 upward")
        if any(network.overlaps(taken) for taken in _host_networks()):
            raise TestClusterError(f"subnet {network} is already used on this host")
        return network

    def _create_bridge(self) -> None:
        prefixlen = ipaddress.ip_network(self.subnet).prefixlen
        _ip_batch(
            [
                f"link add {self.bridge} type bridge",
                f"addr add {self.gateway}/{prefixlen} dev {self.bridge}",
                f"link set {self.bridge} up",
            ]
        )

    def _create_node_links(self) -> None:
        prefixlen = ipaddress.ip_network(self.subnet).prefixlen
        lines = []
        for node in self.nodes:
            lines += [
                f"netns add {node.netns}",
                f"link add {node.veth} type veth peer name eth0 netns {node.netns}",
                f"link set {node.veth} master {self.bridge}",
                f"link set {node.veth} up",
            ]
        _ip_batch(lines)
        # No default route: the node reaches the bridge and its peers, nothing else.
        for node in self.nodes:
            _ip_batch(
                ["link set lo up", f"addr add {node.address}/{prefixlen} dev eth0", "link set eth0 up"],
                netns=node.netns,
            )

    def _write_node_files(self) -> None:
        self._check_users_free()
        keygens = []
        for node in self.nodes:
            self._write_node_dirs(node)
            # All nodes' keys at once: ssh-keygen is most of the cost of building files.
            keygens.append(
                subprocess.Popen(
                    node._keygen_argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
            )
        hashes = _hash_passwords([node.password for node in self.nodes])
        for node, password_hash, keygen in zip(self.nodes, hashes, keygens):
            self._write_accounts(node, password_hash)
            self._write_sshd_config(node)
            self._write_init(node)
            _, err = keygen.communicate()
            if keygen.returncode != 0:
                raise TestClusterError(f"ssh-keygen for {node.name} failed: {err.strip()}")
            node._read_host_key()
        self._write_client_files()

    def _check_users_free(self) -> None:
        import pwd  # noqa: PLC0415  # Unix-only, and only needed here

        taken = {entry.pw_uid for entry in pwd.getpwall()} | {entry.pw_name for entry in pwd.getpwall()}
        for node in self.nodes:
            if node.uid in taken or node.user in taken:
                raise TestClusterError(
                    f"user {node.user} or uid {node.uid} already exists on this host; "
                    "the test users need them free"
                )

    def _write_node_dirs(self, node: TestNode) -> None:
        dirs = {"etc": 0o755, "ssh": 0o755, "home": 0o755, "run": 0o755, "run/sshd": 0o755, "tmp": 0o1777}
        for sub, mode in dirs.items():
            path = node.node_dir / sub
            path.mkdir(parents=True)
            path.chmod(mode)  # mkdir obeys the umask; sshd's StrictModes does not forgive
        node.home_on_host.mkdir(mode=0o700)
        os.chown(node.home_on_host, node.uid, node.gid)
        node.log_path.touch()

    def _write_accounts(self, node: TestNode, password_hash: str) -> None:
        etc = node.node_dir / "etc"
        days = int(time.time() // 86400)  # a last-change day of 0 would force a password change
        files = {
            "passwd": f"{node.user}:x:{node.uid}:{node.gid}:corral test user:{node.home}:/bin/bash\n",
            "shadow": f"{node.user}:{password_hash}:{days}:0:99999:7:::\n",
            "group": f"{node.user}:x:{node.gid}:\n",
        }
        for name, line in files.items():
            host = Path("/etc", name).read_text()
            (etc / name).write_text(host + ("" if host.endswith("\n") else "\n") + line)
        (etc / "shadow").chmod(0o600)
        # A stock Debian box resolves its own name; tools like Open MPI ask for it.
        hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else "127.0.0.1 localhost\n"
        (etc / "hosts").write_text(hosts + f"127.0.1.1 {node.hostname}\n")
        (etc / "hostname").write_text(node.hostname + "\n")

    def _write_sshd_config(self, node: TestNode) -> None:
        ssh = node.node_dir / "ssh"
        lines = [f"# sshd_config of {node.name}, written by tests/testbed/cluster.py"]
        lines += [f"{key} {value}" for key, value in self.sshd_options.items()]
        (ssh / "sshd_config").write_text("\n".join(lines) + "\n")
        # The client config and DH moduli the host has, so ssh from inside a node behaves normally.
        for name in ("ssh_config", "moduli"):
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(Path("/etc/ssh", name), ssh / name)

    def _write_init(self, node: TestNode) -> None:
        d = shlex.quote(str(node.node_dir))
        binds = [f"mount --bind {d}/etc/{name} /etc/{name}" for name in ("passwd", "shadow", "group")]
        binds += [
            f"mount --bind {d}/etc/{name} /etc/{name}"
            for name in ("hosts", "hostname")
            if Path("/etc", name).exists()
        ]
        script = f"""#!/bin/bash
# PID 1 of test node {node.name}: private files, then sshd, then reap orphans forever.
set -eu
# Drop this mount namespace's private copies of /run/netns/*: each would keep another
# cluster's (emptied) network namespace alive until this node dies.
umount --lazy /run/netns 2>/dev/null || true
{chr(10).join(binds)}
mount --bind {d}/ssh /etc/ssh
mount --bind {d}/home /home
mount --bind {d}/run /run
mount --bind {d}/tmp /tmp  # last: {d} itself lives under /tmp
echo {shlex.quote(node.hostname)} > /proc/sys/kernel/hostname
# Check the config first: a bad one then ends this script, which the caller notices at once
# instead of waiting for a port that never opens.
{SSHD} -t -f /etc/ssh/sshd_config
{SSHD} -D -e -f /etc/ssh/sshd_config </dev/null &
set +e
# bash reaps adopted orphans on SIGCHLD, so a stopped or restarted sshd leaves no zombie.
while :; do sleep 3600 & wait $!; done
"""
        path = node.node_dir / "init.sh"
        path.write_text(script)
        path.chmod(0o755)

    def _write_client_files(self) -> None:
        self.known_hosts_path.write_text("".join(node.known_hosts_line + "\n" for node in self.nodes))
        blocks = [
            f"Host {node.name}\n    HostName {node.address}\n    User {node.user}\n" for node in self.nodes
        ]
        blocks.append(
            f"Host *\n    UserKnownHostsFile {self.known_hosts_path}\n    StrictHostKeyChecking yes\n"
            "    ConnectTimeout 5\n"
        )
        self.ssh_config_path.write_text("\n".join(blocks))

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        pending = list(self.nodes)
        while pending:
            pending = [node for node in pending if not node._answers()]
            if pending and time.monotonic() >= deadline:
                raise pending[0]._not_ready_error(self.start_timeout_s)
            if pending:
                time.sleep(0.01)


@atexit.register
def _stop_live_clusters() -> None:
    """Safety net: a test run that forgot stop() (or died in it) still leaves nothing behind."""
    for cluster in list(_live_clusters):
        with contextlib.suppress(Exception):
            cluster.stop()
