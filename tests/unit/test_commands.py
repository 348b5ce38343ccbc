"""The mpirun and mlx.launch argv builders."""

from pathlib import Path

import pytest

from cluster.commands import mlx_launch_argv, mpirun_argv, plan_mpirun
from cluster.errors import ClusterError
from cluster.inventory import Inventory, Node

NODES = (Node("n1", "10.77.0.11", user="lab1", slots=2), Node("n2", "10.77.0.12", user="lab2"))


def test_mpirun_uses_files_world_size_and_networks():
    plan = plan_mpirun(Inventory(NODES, network="169.254.0.0/16"), Path("/x/hostfile"), Path("/x/ssh_config"), as_root=False)
    argv = mpirun_argv(plan, ["python3", "train.py", "--lr", "1e-3"])
    assert argv[:5] == ["mpirun", "--hostfile", "/x/hostfile", "-np", "3"]
    assert ["--mca", "plm_rsh_args", "-F /x/ssh_config"] == argv[5:8]
    assert "plm_rsh_no_tree_spawn" in argv
    # Control traffic on the subnet this computer reaches the nodes on, data on the chosen network.
    assert argv[argv.index("oob_tcp_if_include") + 1] == "10.77.0.0/24"
    assert argv[argv.index("btl_tcp_if_include") + 1] == "169.254.0.0/16"
    assert argv[-5:] == ["--tag-output", "python3", "train.py", "--lr", "1e-3"]
    assert "--allow-run-as-root" not in argv


def test_root_gets_allow_run_as_root():
    plan = plan_mpirun(Inventory(NODES), Path("/x/h"), Path("/x/c"), as_root=True)
    assert mpirun_argv(plan, ["hostname"])[1] == "--allow-run-as-root"


def test_paths_with_spaces_are_refused_because_open_mpi_splits_them():
    with pytest.raises(ClusterError, match="contains a space"):
        plan_mpirun(Inventory(NODES), Path("/my dir/hostfile"), Path("/my dir/ssh_config"), as_root=False)


def test_empty_cluster_says_what_to_do():
    with pytest.raises(ClusterError, match="corral node add"):
        plan_mpirun(Inventory(), Path("/x/h"), Path("/x/c"), as_root=False)


def test_mlx_launch_line():
    assert mlx_launch_argv(Path("/x/hosts.json"), ["train.py"]) == [
        "mlx.launch", "--backend", "ring", "--hostfile", "/x/hosts.json", "--python", "python3", "--", "train.py"]

