"""One SSH round trip per node: a ``sh -c`` script gathers every fact the per-node checks need; pure parsers read it."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field

# Places mpirun often lives that a non-interactive SSH session's PATH does not include.
MPIRUN_ELSEWHERE = (
    "/opt/homebrew/bin/mpirun",
    "/usr/local/bin/mpirun",
    "/opt/local/bin/mpirun",
    "/usr/lib64/openmpi/bin/mpirun",
    "/opt/openmpi/bin/mpirun",
)

# Runs in the venv's Python with -I (no cwd on sys.path, so a stray mlx.py in the home cannot shadow mlx).
# Importing mpi4py.MPI would initialise MPI outside mpirun; importing the package proves it is installed.
# "blas": the OpenBLAS the trainer would load in place of the mlx-cpu wheel's reference BLAS (trainer/blas.py).
VENV_PROBE_PY = r"""
import json, platform, sys
out = {"python": platform.python_version(), "platform": sys.platform}
if sys.platform.startswith("linux"):
    import ctypes, ctypes.util
    out["blas"] = None
    for name in ("libopenblas.so.0", "libopenblas.so", "libopenblasp.so.0", ctypes.util.find_library("openblas")):
        try:
            if name and hasattr(ctypes.CDLL(name), "cblas_sgemm"):
                out["blas"] = name
                break
        except OSError:
            pass
try:
    import mlx.core as mx
    out["mlx"] = getattr(mx, "__version__", None)
    try:
        out["mlx_mpi"] = bool(mx.distributed.is_available(backend="mpi"))
    except Exception:
        out["mlx_mpi"] = None
except Exception as exc:
    out["mlx_error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    import mpi4py
    out["mpi4py"] = mpi4py.__version__
except Exception as exc:
    out["mpi4py_error"] = "%s: %s" % (type(exc).__name__, exc)
print("CORRAL-VENV " + json.dumps(out))
"""

# $1 code dir, $2 venv python (both relative to the home; empty when no project), $3 the venv probe.
# Each section starts with an "@name" line; every command's failure is data, never an abort.
NODE_PROBE_SCRIPT = r"""
cd || exit 97
echo "@hostname"; hostname 2>/dev/null
echo "@code"
if [ -n "$1" ]; then
  if [ -d "$1" ]; then
    if [ -n "$(ls -A "$1" 2>/dev/null | head -n 1)" ]; then echo nonempty; else echo empty; fi
  else echo missing; fi
fi
echo "@disk"; df -Pk . 2>/dev/null | tail -n 1
echo "@memory"
if [ -r /proc/meminfo ]; then grep -E '^(MemTotal|MemAvailable):' /proc/meminfo
else echo "hw.memsize: $(sysctl -n hw.memsize 2>/dev/null)"; vm_stat 2>/dev/null; fi
echo "@mpirun"; command -v mpirun 2>/dev/null
echo "@mpirun-version"
if command -v mpirun >/dev/null 2>&1; then mpirun --version 2>&1 | head -n 5; fi
echo "@mpirun-elsewhere"
shift 3
for p in "$@"; do [ -x "$p" ] && echo "$p"; done
echo "@addresses"
if command -v ip >/dev/null 2>&1; then ip -o -4 addr show 2>/dev/null; else ifconfig 2>/dev/null; fi
echo "@venv"
if [ -n "$VENV" ]; then
  if [ -x "$VENV" ]; then "$VENV" -I -c "$PROBE" 2>&1 | tail -n 20; else echo missing; fi
fi
echo "@end"
"""


def node_probe_argv(code_dir: str | None, venv_python: str | None) -> list[str]:
    """The argv of the probe: paths travel as positional arguments, never inside the script."""
    # VENV and PROBE are set from positional arguments before `shift` drops them.
    script = 'VENV="$2"; PROBE="$3"\n' + NODE_PROBE_SCRIPT
    return ["sh", "-c", script, "corral-doctor", code_dir or "", venv_python or "", VENV_PROBE_PY,
            *MPIRUN_ELSEWHERE]


@dataclass(frozen=True)
class Address:
    interface: str
    ip: str


@dataclass
class VenvFacts:
    """What the venv's Python said; ``missing`` when there is no executable Python at the path."""

    missing: bool = False
    python: str | None = None
    mlx: str | None = None
    mlx_mpi: bool | None = None
    mlx_error: str | None = None
    mpi4py: str | None = None
    mpi4py_error: str | None = None
    platform: str | None = None  # sys.platform of the venv's Python
    blas: str | None = None  # Linux: the OpenBLAS the trainer loads, None when the node has none
    # Output that was not the probe's JSON line (e.g. a Python that does not start).
    raw: str = ""


@dataclass
class NodeFacts:
    """Everything the node probe found on one node."""

    hostname: str = ""
    code: str | None = None  # "nonempty", "empty", "missing", or None when no project was asked about
    disk_free_bytes: int | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    mpirun_path: str | None = None
    mpirun_version_text: str = ""
    mpirun_elsewhere: list[str] = field(default_factory=list)
    addresses: list[Address] = field(default_factory=list)
    venv: VenvFacts | None = None
    complete: bool = False  # the script reached its end marker


def split_sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@") and re.fullmatch(r"@[a-z-]+", line.strip()):
            current = sections.setdefault(line.strip()[1:], [])
            continue
        if current is not None:
            current.append(line)
    return sections


def parse_node_probe(text: str) -> NodeFacts:
    sections = split_sections(text)
    facts = NodeFacts(complete="end" in sections)
    facts.hostname = next((line.strip() for line in sections.get("hostname", []) if line.strip()), "")
    code = [line.strip() for line in sections.get("code", []) if line.strip()]
    facts.code = code[0] if code else None
    facts.disk_free_bytes = parse_df_available(sections.get("disk", []))
    facts.memory_total_bytes, facts.memory_available_bytes = parse_memory(sections.get("memory", []))
    mpirun = [line.strip() for line in sections.get("mpirun", []) if line.strip()]
    facts.mpirun_path = mpirun[0] if mpirun else None
    facts.mpirun_version_text = "\n".join(sections.get("mpirun-version", [])).strip()
    facts.mpirun_elsewhere = [line.strip() for line in sections.get("mpirun-elsewhere", []) if line.strip()]
    facts.addresses = parse_addresses("\n".join(sections.get("addresses", [])))
    if "venv" in sections and any(line.strip() for line in sections["venv"]):
        facts.venv = parse_venv_probe(sections["venv"])
    return facts


def parse_df_available(lines: list[str]) -> int | None:
    """Available bytes from the data line of ``df -Pk`` (1024-byte blocks), on Linux and macOS alike."""
    for line in reversed(lines):
        # blocks, used, available, capacity%: the mount point after it may hold spaces.
        match = re.search(r"\s(\d+)\s+(\d+)\s+(\d+)\s+\d+%", line)
        if match:
            return int(match.group(3)) * 1024
    return None


def parse_memory(lines: list[str]) -> tuple[int | None, int | None]:
    """(total, available) bytes from /proc/meminfo lines, or macOS ``sysctl hw.memsize`` + ``vm_stat``."""
    values: dict[str, int] = {}
    page_size = 4096
    for line in lines:
        meminfo = re.match(r"(MemTotal|MemAvailable):\s+(\d+)\s*kB", line)
        if meminfo:
            values[meminfo.group(1)] = int(meminfo.group(2)) * 1024
            continue
        memsize = re.match(r"hw\.memsize:\s*(\d+)", line)
        if memsize:
            values["MemTotal"] = int(memsize.group(1))
            continue
        page = re.search(r"page size of (\d+) bytes", line)
        if page:
            page_size = int(page.group(1))
            continue
        pages = re.match(r"Pages (free|inactive|speculative):\s+(\d+)\.?", line)
        if pages:
            values[f"pages_{pages.group(1)}"] = int(pages.group(2))
    available = values.get("MemAvailable")
    if available is None and "pages_free" in values:
        # What macOS can hand out without swapping: free, inactive (reclaimable) and speculative pages.
        pages = sum(values.get(f"pages_{kind}", 0) for kind in ("free", "inactive", "speculative"))
        available = pages * page_size
    return values.get("MemTotal"), available


_IP_O_LINE = re.compile(r"^\d+:\s+(\S+?)\s+inet\s+(\d+\.\d+\.\d+\.\d+)")
_IFCONFIG_HEADER = re.compile(r"^([A-Za-z0-9._-]+):?\s+(?:flags|Link)")
_INET = re.compile(r"\binet (?:addr:)?(\d+\.\d+\.\d+\.\d+)")


def parse_addresses(text: str) -> list[Address]:
    """IPv4 addresses per interface from ``ip -o -4 addr show`` or ``ifconfig`` (Linux or macOS)."""
    found: list[Address] = []
    interface = "?"
    for line in text.splitlines():
        one_line = _IP_O_LINE.match(line)
        if one_line:
            found.append(Address(one_line.group(1).split("@")[0], one_line.group(2)))
            continue
        header = _IFCONFIG_HEADER.match(line)
        if header:
            interface = header.group(1)
        inet = _INET.search(line)
        if inet:
            found.append(Address(interface, inet.group(1)))
    return found


def address_in(addresses: list[Address], cidr: str) -> Address | None:
    """The first address inside ``cidr`` (loopback never counts: MPI cannot use it between nodes)."""
    network = ipaddress.ip_network(cidr, strict=False)
    for address in addresses:
        ip = ipaddress.ip_address(address.ip)
        if ip in network and not ip.is_loopback:
            return address
    return None


def parse_mpirun_version(text: str) -> tuple[str | None, str | None]:
    """(implementation, version) from ``mpirun --version``: ("Open MPI", "4.1.4"), ("MPICH", "4.0"), …"""
    match = re.search(r"\(Open MPI\)\s+(\S+)", text) or re.search(r"Open MPI\)?\s+v?(\d+\.\d+\S*)", text)
    if match:
        return "Open MPI", match.group(1)
    if "HYDRA" in text or "MPICH" in text.upper():
        version = re.search(r"Version:\s+(\S+)", text)
        return "MPICH", version.group(1) if version else None
    if "Intel(R) MPI" in text:
        version = re.search(r"Version\s+(\S+)", text)
        return "Intel MPI", version.group(1) if version else None
    return None, None


def parse_venv_probe(lines: list[str]) -> VenvFacts:
    text = "\n".join(lines).strip()
    if text == "missing":
        return VenvFacts(missing=True)
    for line in lines:
        if line.startswith("CORRAL-VENV "):
            try:
                data = json.loads(line[len("CORRAL-VENV "):])
            except ValueError:
                break
            return VenvFacts(
                python=data.get("python"),
                mlx=data.get("mlx"),
                mlx_mpi=data.get("mlx_mpi"),
                mlx_error=data.get("mlx_error"),
                mpi4py=data.get("mpi4py"),
                mpi4py_error=data.get("mpi4py_error"),
                platform=data.get("platform"),
                blas=data.get("blas"),
                raw=text,
            )
    return VenvFacts(raw=text)
