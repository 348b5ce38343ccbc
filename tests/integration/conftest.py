"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest

from tests.integration.corral_cli import CorralCli


@pytest.fixture(scope="module")
def keyed_cluster(test_cluster, tmp_path_factory):
    """The module's 3-node cluster with corral's keys installed (and node↔node access): (cluster, corral)."""
    corral = CorralCli(tmp_path_factory.mktemp("corral") / "home")
    corral.add_nodes(test_cluster.nodes)
    corral.install_keys(test_cluster.nodes)
    return test_cluster, corral
