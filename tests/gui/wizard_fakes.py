"""A stand-in for WizardCore with the same methods, scripted per test: events, failures, and gates to hold a step."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cluster.discovery import FoundHost
from cluster.doctor import CHECKS, CheckFinished, DoctorFinished, DoctorReport, DoctorStarted, Status
from cluster.doctor.model import CheckResult
from cluster.errors import AuthFailed, ClusterError
from cluster.fleet import NodeOutcome
from cluster.home import CorralHome
from cluster.inventory import Inventory, Node
from cluster.remote_env import EnvProgress, EnvStep, NodeEnv
from cluster.rsync_output import SyncStats
from cluster.sync import SyncPhase, SyncProgress, SyncResult, check_project_folder
from gui.setup_wizard.core import HostKeyStatus, HostKeyView, LocalNetwork, NodeStep, StepState


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Every GUI test gets its own settings file; the user's own are never read or written."""
    monkeypatch.setenv("CORRAL_SETTINGS_FILE", str(tmp_path / "settings.ini"))


@dataclass
class FakeCore:
    """Implements WizardCore's interface without a network; each step's behaviour is set by the test."""

    home: CorralHome
    found: list[FoundHost] = field(default_factory=list)
    networks: list[LocalNetwork] = field(default_factory=lambda: [LocalNetwork("en0", "192.168.1.5", "192.168.1.0/24"),
                                                                 LocalNetwork("bridge0", "169.254.3.4", "169.254.0.0/16")])
    host_key_status: dict[str, HostKeyStatus] = field(default_factory=dict)
    # name → failure sentences, consumed one per attempt (a node that fails once, then works).
    key_failures: dict[str, list[str]] = field(default_factory=dict)
    sync_failures: dict[str, list[str]] = field(default_factory=dict)
    doctor_failures: dict[str, str] = field(default_factory=dict)  # node → fix of a failing "venv" check
    hold: threading.Event | None = None  # set: steps wait on it (to test cancel); None: no waiting
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    passwords_seen: dict[str, str | None] = field(default_factory=dict)
    crash_on: str | None = None

    def default_subnets(self) -> list[str]:
        return ["192.168.1.0/24"]

    async def _maybe_wait(self, step: str) -> None:
        if self.crash_on == step:
            raise RuntimeError(f"a bug in {step}")
        while self.hold is not None and not self.hold.is_set():
            await asyncio.sleep(0.01)

    async def discover(self, subnets: Sequence[str], timeout_s: float, report) -> list[FoundHost]:  # noqa: ANN001
        self.calls.append(("discover", tuple(subnets)))
        for host in self.found:
            report(host)
            await asyncio.sleep(0)
        await self._maybe_wait("discover")
        return list(self.found)

    def local_networks(self) -> list[LocalNetwork]:
        return list(self.networks)

    async def host_keys(self, nodes: Sequence[Node], report) -> list[NodeOutcome[HostKeyView]]:  # noqa: ANN001
        outcomes = []
        for node in nodes:
            status = self.host_key_status.get(node.name, HostKeyStatus.NEW)
            message = (f"{node.describe()} presented host key SHA256:new-{node.name}, but corral accepted "
                       f"SHA256:old-{node.name} for it: the node was reinstalled, or someone is impersonating it. "
                       "Nothing was changed." if status is HostKeyStatus.CHANGED else "")
            report(NodeStep(node.name, StepState.OK, f"SHA256:fp-{node.name}"))
            outcomes.append(NodeOutcome(node, HostKeyView(node.name, f"SHA256:fp-{node.name}", status, message)))
        return outcomes

    async def install_keys(self, nodes, mesh_nodes, confirm, ask_password, report) -> dict[str, str | None]:  # noqa: ANN001
        self.calls.append(("keys", tuple(n.name for n in nodes)))
        results: dict[str, str | None] = {}
        for node in nodes:
            report(NodeStep(node.name, StepState.RUNNING, "installing corral's key"))
            if not await confirm(node, f"SHA256:fp-{node.name}"):
                results[node.name] = f"{node.describe()}: host key not trusted; compare it and trust it."
                continue
            self.passwords_seen[node.name] = await ask_password(node)
        await self._maybe_wait("keys")
        for node in nodes:
            if node.name in results:
                report(NodeStep(node.name, StepState.FAILED, results[node.name] or ""))
                continue
            failures = self.key_failures.get(node.name) or []
            if failures:
                results[node.name] = failures.pop(0)
                report(NodeStep(node.name, StepState.FAILED, results[node.name] or ""))
            else:
                results[node.name] = None
                report(NodeStep(node.name, StepState.OK, "key login works"))
        return results

    def check_project(self, folder: str) -> Path:
        return check_project_folder(folder)

    async def sync(self, inventory: Inventory, project: str, names, report) -> list[NodeOutcome[SyncResult]]:  # noqa: ANN001
        self.calls.append(("sync", tuple(names)))
        for name in names:
            report(SyncProgress(name, SyncPhase.STARTING))
            report(SyncProgress(name, SyncPhase.TRANSFERRING, files_sent=1, files_done=1, files_total=2,
                                bytes_done=10, percent=50))
        await self._maybe_wait("sync")
        outcomes = []
        for name in names:
            node = inventory.node(name)
            failures = self.sync_failures.get(name) or []
            if failures:
                message = failures.pop(0)
                report(SyncProgress(name, SyncPhase.FAILED, message=message))
                outcomes.append(NodeOutcome(node, error=ClusterError(message)))
            else:
                report(SyncProgress(name, SyncPhase.DONE, files_sent=2, files_total=2, percent=100))
                outcomes.append(NodeOutcome(node, SyncResult(name, "corral/projects/p", SyncStats(files_total=2,
                                                                                                   files_transferred=2))))
        from dataclasses import replace

        from cluster.state import load_cluster, save_cluster

        save_cluster(self.home, replace(load_cluster(self.home), project=project))
        return outcomes

    async def build_env(self, inventory: Inventory, names, wheels: str, report) -> list[NodeOutcome[NodeEnv]]:  # noqa: ANN001
        self.calls.append((f"env-{wheels}", tuple(names)))
        outcomes = []
        for name in names:
            for step in (EnvStep.PROBING, EnvStep.INSTALLING, EnvStep.DONE):
                report(EnvProgress(name, step))
            outcomes.append(NodeOutcome(inventory.node(name), NodeEnv(name, "/usr/bin/python3", "3.11.2", "0.32.4",
                                                                      "4.1.2", "uv", "installed", "linux x86_64")))
        await self._maybe_wait("env")
        return outcomes

    async def doctor(self, inventory: Inventory, report) -> DoctorReport:  # noqa: ANN001
        self.calls.append(("doctor", tuple(inventory.names())))
        await self._maybe_wait("doctor")
        names = tuple(inventory.names())
        report(DoctorStarted(CHECKS, names))
        results = []
        for check in CHECKS:
            for name in names:
                if check.id == "venv" and name in self.doctor_failures:
                    result = CheckResult(name, check.id, Status.FAIL, "missing", self.doctor_failures[name])
                else:
                    result = CheckResult(name, check.id, Status.PASS, "ok")
                results.append(result)
                report(CheckFinished(result))
        doctor_report = DoctorReport(names, tuple(results), 0.1)
        report(DoctorFinished(doctor_report))
        return doctor_report


def found_host(address: str, hostname: str | None = None, method: str = "sweep") -> FoundHost:
    return FoundHost(address, 22, "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3" if method == "sweep" else None,
                     hostname, (method,))


def auth_failed(name: str) -> str:
    return str(AuthFailed(name, f"{name} (lab@10.0.0.1:22) rejected the password for 'lab'; check the user name "
                                "and password, then try again."))
