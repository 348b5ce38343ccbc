"""Pure argv builders for the programs corral drives (mpirun, mlx.launch); no I/O, easy to unit test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import ClusterError
from cluster.inventory import Inventory, covering_subnet


@dataclass(frozen=True)
class MpirunPlan:
    """What an mpirun invocation needs beyond the program: files, world size, networks."""

    hostfile: Path
    ssh_config: Path
    world_size: int
    # Where mpirun's control channel (launcher ↔ orted) runs: the subnet this computer reaches nodes on.
    control_network: str | None
    # Where MPI's data (btl tcp) runs: the cluster's chosen network, e.g. a Thunderbolt bridge.
    data_network: str | None
    allow_run_as_root: bool = False


def plan_mpirun(inventory: Inventory, hostfile: Path, ssh_config: Path, *, as_root: bool) -> MpirunPlan:
    if not inventory.nodes:
        raise ClusterError("The cluster has no nodes yet; add one with `corral node add ADDRESS`.")
    for path in (hostfile, ssh_config):
        # Open MPI splits plm_rsh_args on whitespace, so a path with a space would be cut in two.
        if any(ch.isspace() for ch in str(path)):
            raise ClusterError(
                f"{path} contains a space, which Open MPI cannot pass to ssh; export to a directory "
                "whose path has no spaces."
            )
    return MpirunPlan(
        hostfile=hostfile,
        ssh_config=ssh_config,
        world_size=inventory.total_slots(),
        control_network=covering_subnet(node.address for node in inventory.nodes),
        data_network=inventory.effective_network(),
        allow_run_as_root=as_root,
    )


def mpirun_argv(plan: MpirunPlan, program: Sequence[str], *, tag_output: bool = True) -> list[str]:
    """``mpirun`` with corral's hostfile and ssh config; runs ``program`` on every slot of every node."""
    argv = ["mpirun"]
    if plan.allow_run_as_root:
        argv.append("--allow-run-as-root")
    argv += ["--hostfile", str(plan.hostfile), "-np", str(plan.world_size)]
    argv += ["--mca", "plm_rsh_args", f"-F {plan.ssh_config}"]
    # Every ssh starts from this computer: with tree spawn, nodes would run ssh with a -F path that
    # exists only here.
    argv += ["--mca", "plm_rsh_no_tree_spawn", "1"]
    if plan.control_network:
        argv += ["--mca", "oob_tcp_if_include", plan.control_network]
    if plan.data_network:
        argv += ["--mca", "btl_tcp_if_include", plan.data_network]
    if tag_output:
        argv.append("--tag-output")
    return argv + list(program)


def mlx_launch_argv(hosts_json: Path, program: Sequence[str], *, python: str = "python3") -> list[str]:
    """``mlx.launch`` with the ring backend over the exported hosts JSON (it uses plain ``ssh HOST``)."""
    return ["mlx.launch", "--backend", "ring", "--hostfile", str(hosts_json), "--python", python, "--", *program]

