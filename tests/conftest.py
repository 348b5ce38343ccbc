"""Shared pytest fixtures: fake home-lab clusters of SSH hosts in namespaces (see docs/testing.md)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.cluster import TestCluster, TestClusterError, can_build_clusters


def _skip_unless_clusters_can_be_built() -> None:
    ok, reason = can_build_clusters()
    if not ok:
        pytest.skip(f"cannot build a test cluster: {reason}")


@pytest.fixture
def requires_clusters() -> None:
    """Skip the test unless clusters can be built; for tests that build a TestCluster themselves."""
    _skip_unless_clusters_can_be_built()


@pytest.fixture(scope="module")
def test_cluster() -> Iterator[TestCluster]:
    """Three started nodes shared by a test module; tests that break nodes use cluster_factory."""
    _skip_unless_clusters_can_be_built()
    with TestCluster(n=3) as cluster:
        yield cluster


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., TestCluster]]:
    """Build started clusters on demand, ``cluster_factory(n, **options)``; all stop at test end."""
    _skip_unless_clusters_can_be_built()
    clusters: list[TestCluster] = []

    def build(n: int = 3, **options: Any) -> TestCluster:
        cluster = TestCluster(n, **options)
        clusters.append(cluster)
        cluster.start()
        return cluster

    yield build
    errors = []
    for cluster in reversed(clusters):
        try:
            cluster.stop()
        except TestClusterError as exc:  # stop the others first, then fail loudly
            errors.append(exc)
    if errors:
        raise errors[0]


def _runs_left_in(base: str) -> dict[int, str]:
    """Processes of a corral run (marked ``-X corral-run=ID``) working somewhere under ``base``."""
    left: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if any(arg.startswith(b"corral-run=") for arg in argv) and cwd.startswith(base):
            left[int(proc.name)] = b" ".join(argv).decode(errors="replace")
    return left


@pytest.fixture(scope="session", autouse=True)
def no_training_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail the session if a test left a local training run going (it would slow every test after it)."""
    yield
    if not Path("/proc").is_dir():
        return
    left = _runs_left_in(str(tmp_path_factory.getbasetemp()))
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"tests left local training runs going (now killed): {left}"
