"""Export the cluster as plain files that work without corral: hostfile, hosts JSON, ssh config, mpirun.sh."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from cluster.atomic import write_atomic
from cluster.commands import mlx_launch_argv, mpirun_argv, plan_mpirun
from cluster.home import CorralHome
from cluster.hostfile import format_mlx_hosts_json, format_openmpi_hostfile
from cluster.inventory import Inventory
from cluster.ssh_config import write_client_ssh_config

PROGRAM_PLACEHOLDER = ["PROGRAM", "ARGS..."]


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    files: tuple[Path, ...]
    mpirun_command: str
    mlx_launch_command: str


def mpirun_script(argv_prefix: list[str]) -> str:
    """A script that runs mpirun with the exported files on the program given as its arguments."""
    return (
        "#!/bin/sh\n"
        "# Written by `corral export`: runs a program on every node of the cluster with Open MPI.\n"
        "# Usage: ./mpirun.sh PROGRAM [ARGS...]    e.g. ./mpirun.sh hostname\n"
        'if [ "$#" -eq 0 ]; then echo "usage: $0 PROGRAM [ARGS...]" >&2; exit 2; fi\n'
        f'exec {shlex.join(argv_prefix)} "$@"\n'
    )


def export_cluster(inventory: Inventory, home: CorralHome, directory: Path) -> ExportResult:
    """Write the four files into ``directory`` (atomically each) and return the equivalent commands."""
    directory = directory.expanduser().absolute()
    hostfile, hosts_json = directory / "hostfile", directory / "hosts.json"
    ssh_config, script = directory / "ssh_config", directory / "mpirun.sh"
    plan = plan_mpirun(inventory, hostfile, ssh_config, as_root=os.geteuid() == 0)
    nodes = list(inventory.nodes)

    write_atomic(hostfile, format_openmpi_hostfile(nodes))
    write_atomic(hosts_json, format_mlx_hosts_json(nodes))
    write_client_ssh_config(nodes, home, ssh_config)
    prefix = mpirun_argv(plan, [])
    write_atomic(script, mpirun_script(prefix), mode=0o755)

    return ExportResult(
        directory=directory,
        files=(hostfile, hosts_json, ssh_config, script),
        mpirun_command=shlex.join(prefix + PROGRAM_PLACEHOLDER),
        mlx_launch_command=shlex.join(mlx_launch_argv(hosts_json, ["SCRIPT.py"])),
    )
