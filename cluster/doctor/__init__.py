"""``corral doctor``: checks node by node that the cluster can train, each failure with a sentence naming the fix.

    model         checks, results, events, the report
    node_probe    the one-round-trip probe script per node and its parsers
    node_checks   per-node verdicts and cross-node version agreement
    reachability  TCP between nodes on the MPI network, errno explained
    fabric        mpirun with mpi4py allreduce and MLX all_sum on every slot
    runner        runs them all over one SessionPool, emitting events
"""

from cluster.doctor.model import (
    CHECKS,
    CLUSTER,
    Check,
    CheckFinished,
    CheckResult,
    DoctorEvent,
    DoctorFinished,
    DoctorReport,
    DoctorStarted,
    OnDoctorEvent,
    Status,
)
from cluster.doctor.runner import DoctorOptions, run_doctor

__all__ = [
    "CHECKS",
    "CLUSTER",
    "Check",
    "CheckFinished",
    "CheckResult",
    "DoctorEvent",
    "DoctorFinished",
    "DoctorOptions",
    "DoctorReport",
    "DoctorStarted",
    "OnDoctorEvent",
    "Status",
    "run_doctor",
]
