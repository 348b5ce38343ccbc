"""Find out, in one SSH round trip, which Python and platform a node has and what its venv's stamp says."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from cluster.errors import NodeError
from cluster.layout import RemoteLayout
from cluster.ssh import NodeSession

MIN_PYTHON = (3, 10)
# Tried in order when no --python is given: the usual name first, then versioned names and Homebrew's.
DEFAULT_PYTHONS = ("python3", "python3.13", "python3.12", "python3.11", "python3.10",
                   "/opt/homebrew/bin/python3", "/usr/local/bin/python3")
# Where uv installs itself; a non-interactive SSH session's PATH rarely includes these.
UV_PLACES = ("~/.local/bin/uv", "~/.cargo/bin/uv", "/opt/homebrew/bin/uv", "/usr/local/bin/uv")
STAMP_READ_LIMIT = 65536

# Runs under the node's Python (3.10+) with -I -S: stdlib only, as few imports as possible, since the
# unchanged case is nothing but this probe.
PROBE_PY = r"""
import os, sys
path, venv_python, stamp_path, uv_places = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
info = {
    "python": {"path": path, "version": "%d.%d.%d" % sys.version_info[:3],
               "implementation": sys.implementation.name},
    "sys_platform": sys.platform,
    "machine": os.uname().machine,
    "glibc": None,
    "macos": None,
}
try:
    libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    if libc.startswith("glibc "):
        info["glibc"] = libc.split()[1]
except (AttributeError, ValueError, OSError):
    pass
if sys.platform == "darwin":
    import platform
    info["macos"] = platform.mac_ver()[0]
# Debian ships ensurepip separately (python3-venv); without it `python3 -m venv` fails.
info["ensurepip"] = os.path.isdir(os.path.join(os.path.dirname(os.__file__), "ensurepip"))
uv = None
on_path = [os.path.join(d, "uv") for d in os.environ.get("PATH", "").split(os.pathsep) if d]
for candidate in on_path + [os.path.expanduser(p) for p in uv_places]:
    if os.access(candidate, os.X_OK):
        uv = candidate
        break
info["uv"] = uv
try:
    st = os.statvfs(os.path.expanduser("~"))
    info["free_bytes"] = st.f_bavail * st.f_frsize
except OSError:
    info["free_bytes"] = None
stamp = None
try:
    with open(stamp_path) as handle:
        stamp = handle.read(STAMP_READ_LIMIT)
except OSError:
    pass
info["stamp"] = stamp
# The stamp is trusted only while the venv's interpreter resolves to a runnable file (its base Python may be
# gone); checked without starting it, which would double the cost of an unchanged run.
venv_dir = os.path.dirname(os.path.dirname(venv_python))
info["venv_ok"] = bool(stamp) and os.path.isfile(os.path.join(venv_dir, "pyvenv.cfg")) and os.access(
    os.path.realpath(venv_python), os.X_OK)
# What is installed now, from the dist-info folder names: someone may have pip-installed another mlx by hand
# since the stamp was written, and then the stamp alone would call the venv unchanged.
installed = {}
lib = os.path.join(venv_dir, "lib")
for version_dir in (os.listdir(lib) if os.path.isdir(lib) else ()):
    site = os.path.join(lib, version_dir, "site-packages")
    for name in (os.listdir(site) if os.path.isdir(site) else ()):
        if name.endswith(".dist-info"):
            dist, _, version = name[:-10].partition("-")
            if dist.lower() in ("mlx", "mpi4py"):
                installed[dist.lower()] = version
info["installed"] = installed
# repr, not json: importing json costs as much as the rest of this script.
print("@@corral-probe " + repr(info))
""".replace("STAMP_READ_LIMIT", str(STAMP_READ_LIMIT))

# Picks the first Python that is 3.10 or newer (`--version` is cheap: no interpreter start-up), then
# runs the probe with it; values arrive as positional arguments, never inside the script text.
PROBE_SH = r"""
explicit=$1; venv_python=$2; stamp=$3; probe=$4; shift 4
old=""
try_python() {
    candidate=$1; shift
    found=$(command -v -- "$candidate" 2>/dev/null) || return 0
    version=$("$found" --version 2>&1) || { old="${old:-broken $found}"; return 0; }
    case $version in
        "Python 3.1"[0-9]*|"Python 3."[2-9][0-9]*)
            exec "$found" -I -S -c "$probe" "$found" "$venv_python" "$stamp" "$@" ;;
    esac
    old="${old:-old ${version#Python } $found}"
}
if [ -n "$explicit" ]; then
    try_python "$explicit" "$@"
    echo "@@corral-python ${old:-missing $explicit}"
else
    for name in %s; do try_python "$name" "$@"; done
    echo "@@corral-python ${old:-missing}"
fi
""" % " ".join(DEFAULT_PYTHONS)


@dataclass(frozen=True)
class NodeProbe:
    """What one probe learned about a node."""

    node: str
    python_path: str
    python_version: str
    implementation: str
    sys_platform: str
    machine: str
    glibc: str | None
    macos: str | None
    has_ensurepip: bool
    uv_path: str | None
    free_bytes: int | None
    stamp_text: str | None
    venv_ok: bool
    # mlx and mpi4py versions found in the venv's site-packages right now.
    installed_versions: dict[str, str] = field(default_factory=dict)

    @property
    def python_minor(self) -> str:
        """``3.11``: what wheels are chosen by."""
        return ".".join(self.python_version.split(".")[:2])

    @property
    def abi(self) -> str:
        """``cp311``: the CPython ABI tag of binary wheels for this interpreter."""
        return "cp" + self.python_minor.replace(".", "")

    @property
    def platform_tags(self) -> list[str]:
        return platform_tags(self.sys_platform, self.machine, glibc=self.glibc, macos=self.macos)

    @property
    def platform_label(self) -> str:
        """``linux x86_64 glibc 2.36``: for messages."""
        extra = f" glibc {self.glibc}" if self.glibc else f" macOS {self.macos}" if self.macos else ""
        return f"{self.sys_platform} {self.machine}{extra}"


def probe_argv(layout: RemoteLayout, python: str | None) -> list[str]:
    # uv pushed by an earlier `--wheels push` counts as present for online installs too.
    return ["sh", "-c", PROBE_SH, "corral-probe", python or "", layout.venv_python, layout.env_stamp, PROBE_PY,
            *UV_PLACES, f"{layout.wheelhouse_dir}/bin/uv"]


async def probe_node(session: NodeSession, layout: RemoteLayout, python: str | None) -> NodeProbe:
    result = await session.run(probe_argv(layout, python), check=False, timeout_s=30)
    return parse_probe_output(session.node.name, result.stdout, result.stderr, python)


def parse_probe_output(node: str, stdout: str, stderr: str, python: str | None) -> NodeProbe:
    """The probe's answer, or an error naming the node and how to get a usable Python there."""
    for line in stdout.splitlines():
        if line.startswith("@@corral-probe "):
            return _probe_from_dict(node, ast.literal_eval(line.split(" ", 1)[1]))
        if line.startswith("@@corral-python "):
            raise python_problem(node, line.split(" ", 1)[1], python)
    detail = (stderr.strip().splitlines() or ["no output"])[-1]
    raise NodeError(node, f"{node}: the environment probe failed ({detail}); check that `sh` works there "
                          f"(`corral exec {node} -- sh -c true`).")


def python_problem(node: str, report: str, python: str | None) -> NodeError:
    kind, _, rest = report.partition(" ")
    fix = ("install Python 3.10 or newer there (macOS: `brew install python`; Debian/Ubuntu: "
           "`sudo apt install python3 python3-venv`) and pass its path with --python if it is not `python3`")
    if kind == "old":
        version, _, path = rest.partition(" ")
        return NodeError(node, f"{node}: {path} is Python {version}, but corral needs {MIN_PYTHON[0]}."
                               f"{MIN_PYTHON[1]} or newer; {fix}.")
    if kind == "broken":
        return NodeError(node, f"{node}: {rest} did not run (`{rest} --version` failed); {fix}.")
    if python:
        return NodeError(node, f"{node}: no Python at {python!r} (--python); {fix}.")
    return NodeError(node, f"{node}: no `python3` (3.10 or newer) was found on the PATH of a non-interactive SSH "
                           f"login (tried {', '.join(DEFAULT_PYTHONS)}); {fix}.")


def _probe_from_dict(node: str, data: dict[str, object]) -> NodeProbe:
    python = data["python"]
    assert isinstance(python, dict)
    free = data.get("free_bytes")
    stamp = data.get("stamp")
    return NodeProbe(
        node=node,
        python_path=str(python["path"]),
        python_version=str(python["version"]),
        implementation=str(python.get("implementation", "cpython")),
        sys_platform=str(data["sys_platform"]),
        machine=str(data["machine"]),
        glibc=str(data["glibc"]) if data.get("glibc") else None,
        macos=str(data["macos"]) if data.get("macos") else None,
        has_ensurepip=bool(data.get("ensurepip")),
        uv_path=str(data["uv"]) if data.get("uv") else None,
        free_bytes=int(free) if isinstance(free, int) else None,
        stamp_text=str(stamp) if isinstance(stamp, str) else None,
        venv_ok=bool(data.get("venv_ok")),
        installed_versions={str(k): str(v) for k, v in dict(data.get("installed") or {}).items()},
    )


def platform_tags(sys_platform: str, machine: str, *, glibc: str | None = None, macos: str | None = None) -> list[str]:
    """Wheel platform tags the node accepts, most specific first (what ``pip download --platform`` needs)."""
    if sys_platform == "linux":
        arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        tags: list[str] = []
        if glibc:
            major, minor = (int(part) for part in glibc.split(".")[:2])
            # manylinux starts at glibc 2.5 on x86 and 2.17 on everything else (PEP 600, as `packaging` does).
            oldest = 5 if arch in ("x86_64", "i686") else 17
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            for glibc_minor in range(minor if major == 2 else 0, oldest - 1, -1):
                tags.append(f"manylinux_2_{glibc_minor}_{arch}")
                if glibc_minor in legacy:
                    tags.append(f"{legacy[glibc_minor]}_{arch}")
        return tags + [f"linux_{arch}"]
    if sys_platform == "darwin" and macos:
        major = int(macos.split(".")[0])
        arches = [machine, "universal2"]
        versions = [f"{v}_0" for v in range(major, 10, -1)]
        if machine == "x86_64":
            versions += [f"10_{v}" for v in range(16, 3, -1)]
        return [f"macosx_{version}_{arch}" for version in versions for arch in arches]
    return []


def mlx_requirement(probe: NodeProbe) -> str:
    """The MLX package for the node: the Metal build on Apple Silicon, the CPU build on Linux."""
    if probe.sys_platform == "darwin" and probe.machine == "arm64":
        return "mlx"
    if probe.sys_platform == "linux" and probe.glibc:
        return "mlx[cpu]"
    if probe.sys_platform == "darwin":
        raise NodeError(probe.node, f"{probe.node}: {probe.python_path} runs as {probe.machine} on macOS, and MLX "
                                    "only has wheels for Apple Silicon (arm64). On an Intel Mac MLX cannot run; on "
                                    "Apple Silicon, pass an arm64 Python with --python (e.g. /opt/homebrew/bin/python3).")
    if probe.sys_platform == "linux":
        raise NodeError(probe.node, f"{probe.node}: its Linux has no glibc (musl, e.g. Alpine), and MLX publishes "
                                    "wheels for glibc-based Linux only; use a Debian, Ubuntu or Fedora node.")
    raise NodeError(probe.node, f"{probe.node}: MLX has no build for {probe.sys_platform} ({probe.machine}); "
                                "corral supports macOS on Apple Silicon and Linux.")


def check_python_implementation(probe: NodeProbe) -> None:
    if probe.implementation != "cpython":
        raise NodeError(probe.node, f"{probe.node}: {probe.python_path} is {probe.implementation}, but MLX needs "
                                    "CPython; pass a CPython 3.10+ with --python.")

