"""What the doctor checks and reports: the checks in table order, one result per node and check, progress events."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CLUSTER = "*"  # the ``node`` of a result about the cluster as a whole rather than one node


class Status(str, enum.Enum):
    """How one check went on one node; only PASS and WARN let the doctor exit 0."""

    PASS = "pass"
    FAIL = "fail"
    # Not run because something it needs failed first; ``detail`` says what ("skipped: SSH failed").
    SKIP = "skip"
    # Works, but something is low (disk, memory); reported, does not fail the doctor.
    WARN = "warn"


@dataclass(frozen=True)
class Check:
    """One row of the doctor's table."""

    id: str
    title: str


# Table order: each check's prerequisites come before it.
CHECKS: tuple[Check, ...] = (
    Check("ssh", "SSH login by key"),
    Check("host-key", "host key accepted"),
    Check("code", "project code present"),
    Check("venv", "venv present and importable"),
    Check("python-version", "same Python on all nodes"),
    Check("mlx-version", "same MLX on all nodes"),
    Check("resources", "free disk and memory"),
    Check("mpirun", "mpirun, same Open MPI on all nodes"),
    Check("node-ssh", "node-to-node SSH, no prompt"),
    Check("mpi-address", "address on the MPI network"),
    Check("reachability", "TCP between nodes on the MPI network"),
    Check("fabric", "mpirun: mpi4py allreduce and MLX all_sum"),
)
CHECK_IDS = tuple(check.id for check in CHECKS)
TITLES = {check.id: check.title for check in CHECKS}


@dataclass(frozen=True)
class CheckResult:
    """One cell of the table: how ``check`` went on ``node`` (or CLUSTER), what was seen, what to do."""

    node: str
    check: str
    status: Status
    # What was found ("mlx 0.32.4, mpi4py 4.1.2"), or for a skip why it was skipped.
    detail: str = ""
    # For FAIL and WARN: the sentence for the user, naming the node and the fix.
    fix: str | None = None

    @property
    def title(self) -> str:
        return TITLES.get(self.check, self.check)

    def to_json(self) -> dict[str, object]:
        return {
            "node": self.node,
            "check": self.check,
            "title": self.title,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def passed(node: str, check: str, detail: str = "") -> CheckResult:
    return CheckResult(node, check, Status.PASS, detail)


def failed(node: str, check: str, fix: str, detail: str = "") -> CheckResult:
    return CheckResult(node, check, Status.FAIL, detail, fix)


def warned(node: str, check: str, fix: str, detail: str = "") -> CheckResult:
    return CheckResult(node, check, Status.WARN, detail, fix)


def skipped(node: str, check: str, reason: str) -> CheckResult:
    return CheckResult(node, check, Status.SKIP, f"skipped: {reason}")


@dataclass(frozen=True)
class DoctorReport:
    """Every result of one doctor run, in table order."""

    nodes: tuple[str, ...]
    results: tuple[CheckResult, ...]
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True only when every check passed (warnings allowed): the doctor's exit code 0."""
        return all(result.status in (Status.PASS, Status.WARN) for result in self.results)

    def result(self, check: str, node: str) -> CheckResult | None:
        for result in self.results:
            if result.check == check and result.node == node:
                return result
        return None

    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.status is Status.FAIL]

    def warnings(self) -> list[CheckResult]:
        return [result for result in self.results if result.status is Status.WARN]

    def to_json(self) -> list[dict[str, object]]:
        return [result.to_json() for result in self.results]


# --- progress events: the CLI ignores or prints them, the GUI's Check page fills its table live ----


@dataclass(frozen=True)
class DoctorStarted:
    """The table's shape: its rows and columns, before any check runs."""

    checks: tuple[Check, ...]
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class CheckFinished:
    """One cell is known."""

    result: CheckResult


@dataclass(frozen=True)
class DoctorFinished:
    report: DoctorReport


DoctorEvent = DoctorStarted | CheckFinished | DoctorFinished
OnDoctorEvent = Callable[[DoctorEvent], None]


def sort_results(results: Sequence[CheckResult], nodes: Sequence[str]) -> list[CheckResult]:
    """Table order: by check, then by node (cluster-wide last)."""
    node_order = {name: index for index, name in enumerate(nodes)}
    check_order = {check_id: index for index, check_id in enumerate(CHECK_IDS)}
    return sorted(
        results,
        key=lambda r: (check_order.get(r.check, len(check_order)), node_order.get(r.node, len(node_order))),
    )


@dataclass
class ResultLog:
    """Collects results and tells the listener about each one as it arrives."""

    on_event: OnDoctorEvent | None = None
    results: list[CheckResult] = field(default_factory=list)

    def add(self, result: CheckResult) -> CheckResult:
        self.results.append(result)
        if self.on_event is not None:
            self.on_event(CheckFinished(result))
        return result

    def status(self, check: str, node: str) -> Status | None:
        for result in self.results:
            if result.check == check and result.node == node:
                return result.status
        return None
