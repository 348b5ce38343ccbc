"""Memory and load of this process and this machine, read with the standard library on Linux and macOS."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ProcessMemory:
    """Resident set size of this process; keeps /proc/self/statm open on Linux so each read is cheap."""

    def __init__(self) -> None:
        try:
            self._statm = open("/proc/self/statm", "rb", buffering=0)  # noqa: SIM115 (held for the whole run)
        except OSError:
            self._statm = None

    def rss_bytes(self) -> int:
        if self._statm is not None:
            self._statm.seek(0)
            return int(self._statm.read().split()[1]) * _PAGE_SIZE
        # No /proc (macOS): only the peak is available; ru_maxrss is bytes on macOS, KiB on Linux.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024

    def close(self) -> None:
        if self._statm is not None:
            self._statm.close()
            self._statm = None


def parse_meminfo(text: str) -> tuple[int, int]:
    """(used, total) bytes from /proc/meminfo text; used is total minus MemAvailable."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    total = values["MemTotal"]
    available = values.get("MemAvailable", values.get("MemFree", 0))
    return total - available, total


def parse_vm_stat(text: str, total: int) -> tuple[int, int]:
    """(used, total) bytes from macOS `vm_stat` output; free, inactive and speculative pages count as available."""
    page_size = 4096
    pages = {}
    for line in text.splitlines():
        if "page size of" in line:
            page_size = int(line.split("page size of")[1].split()[0])
            continue
        name, _, value = line.partition(":")
        value = value.strip().rstrip(".")
        if value.isdigit():
            pages[name.strip()] = int(value)
    available = sum(pages.get(k, 0) for k in ("Pages free", "Pages inactive", "Pages speculative")) * page_size
    return max(0, total - available), total


def host_memory() -> tuple[int, int]:
    """(used, total) bytes of RAM on this machine."""
    if sys.platform.startswith("linux"):
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            return parse_meminfo(meminfo.read())
    if sys.platform == "darwin":
        total = int(subprocess.run(["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, check=True).stdout)
        vm_stat = subprocess.run(["vm_stat"], capture_output=True, text=True, check=True).stdout
        return parse_vm_stat(vm_stat, total)
    raise OSError(f"host memory is not readable on {sys.platform}")


def load_1m() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
