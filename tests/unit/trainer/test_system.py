"""Host and process memory, read from /proc on Linux and sysctl + vm_stat on macOS."""

from __future__ import annotations

import sys

import pytest

from trainer.system import ProcessMemory, host_memory, parse_meminfo, parse_vm_stat

MEMINFO = """MemTotal:       24684084 kB
MemFree:        22145396 kB
MemAvailable:   23001260 kB
Buffers:           12345 kB
"""

VM_STAT = """Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               10000.
Pages active:                            200000.
Pages inactive:                           30000.
Pages speculative:                         5000.
Pages wired down:                         60000.
"""


def test_parse_meminfo_counts_available_memory_as_free():
    used, total = parse_meminfo(MEMINFO)
    assert total == 24684084 * 1024
    assert used == (24684084 - 23001260) * 1024


def test_parse_vm_stat_uses_the_reported_page_size():
    used, total = parse_vm_stat(VM_STAT, total=16 * 1024**3)
    assert total == 16 * 1024**3
    assert used == 16 * 1024**3 - (10000 + 30000 + 5000) * 16384


def test_process_and_host_memory_are_plausible():
    memory = ProcessMemory()
    rss = memory.rss_bytes()
    memory.close()
    assert 10 * 1024**2 < rss < 64 * 1024**3
    if sys.platform not in ("linux", "darwin"):
        pytest.skip("host memory is read on Linux and macOS only")
    used, total = host_memory()
    assert 0 < used < total
