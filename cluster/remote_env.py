"""Make (or reuse) the project's venv on each node: MLX, mpi4py and the requirements, installed once per recipe.

Per node: one probe (Python, platform, stamp); an unchanged recipe stops there. Otherwise, with pushed
wheels, the node's group wheelhouse is downloaded here once and rsynced over; then one remote script
creates the venv, installs (uv when pushed or present, pip otherwise), imports MLX and mpi4py, and only
then writes the stamp (see ``cluster.env_recipe`` for its fields). Every node runs concurrently and
reports its own outcome.
"""

from __future__ import annotations

import datetime
import enum
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cluster.env_probe import NodeProbe, check_python_implementation, mlx_requirement, probe_node
from cluster.env_recipe import RECIPE_VERSION, STAMP_SCHEMA, EnvStamp, Requirements, recipe_hash
from cluster.errors import NodeError
from cluster.fleet import NodeOutcome, for_each_node
from cluster.home import CorralHome
from cluster.inventory import Node
from cluster.layout import RemoteLayout
from cluster.ssh import NodeSession, SessionPool
from cluster.wheels import (
    LocalWheelhouse,
    PreparedWheels,
    WheelDownloadFailed,
    WheelGroup,
    push_wheels,
    wheelhouse_root,
)

WheelsMode = Literal["online", "push"]
InstallerChoice = Literal["auto", "uv", "pip"]

MPI4PY = "mpi4py"
# Measured on Linux: MLX (CPU) + mpi4py take ~45 MB in the venv, pushed wheels + uv ~65 MB; the user's
# requirements come on top, so ask for ample headroom rather than fail halfway.
MIN_FREE_BYTES = 1 << 30
INSTALL_TIMEOUT_S = 1800.0


class EnvStep(str, enum.Enum):
    """Where one node is; the GUI and the CLI show the same steps."""

    PROBING = "probing"
    DOWNLOADING = "downloading wheels"
    COPYING = "copying wheels"
    CREATING_VENV = "creating venv"
    INSTALLING = "installing"
    VERIFYING = "verifying"
    DONE = "installed"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class EnvProgress:
    """One step of one node; ``detail`` adds e.g. the wheel group or the failure sentence."""

    node: str
    step: EnvStep
    detail: str = ""


OnEnvProgress = Callable[[EnvProgress], None]


@dataclass(frozen=True)
class EnvRequest:
    """What to build: the project's layout, the requirements, and how packages reach the nodes."""

    layout: RemoteLayout
    requirements: Requirements = field(default_factory=Requirements)
    python: str | None = None
    wheels: WheelsMode = "online"
    # "auto": uv when pushed or present on the node, pip otherwise; the others force one (for measuring).
    installer: InstallerChoice = "auto"


@dataclass(frozen=True)
class NodeEnv:
    """A node's finished environment: what runs in it and whether this run installed anything."""

    node: str
    python_path: str
    python_version: str
    mlx_version: str
    mpi4py_version: str
    installer: str
    action: Literal["installed", "unchanged"]
    platform: str


@dataclass(frozen=True)
class NodePlan:
    """The recipe for one node, from its probe."""

    probe: NodeProbe
    packages: tuple[str, ...]
    hash: str
    stamp: EnvStamp | None

    @property
    def unchanged(self) -> bool:
        return (
            self.stamp is not None
            and self.stamp.hash == self.hash
            and self.probe.venv_ok
            and self.installed_as_stamped
        )

    @property
    def installed_as_stamped(self) -> bool:
        """The venv still holds the mlx and mpi4py versions the stamp verified (nobody replaced them)."""
        assert self.stamp is not None
        return all(
            self.probe.installed_versions.get(name) == self.stamp.versions.get(name) for name in ("mlx", "mpi4py")
        )

    @property
    def group(self) -> WheelGroup:
        return WheelGroup(self.probe.python_minor, self.probe.abi, tuple(self.probe.platform_tags))


def plan_node(probe: NodeProbe, requirements: Requirements) -> NodePlan:
    """The packages and recipe hash for a node; unsupported Pythons and platforms are refused here."""
    check_python_implementation(probe)
    packages = (mlx_requirement(probe), MPI4PY)
    digest = recipe_hash(requirements, packages, probe.python_path, probe.python_version, probe.platform_tags)
    return NodePlan(probe, packages, digest, EnvStamp.parse(probe.stamp_text))


# Runs in the new venv: proves MLX and mpi4py import (MPI itself is the doctor's job), then writes the stamp
# atomically, so a node without a valid stamp is always rebuilt.
VERIFY_PY = r"""
import json, os, sys
stamp_path, stamp = sys.argv[1], json.loads(sys.argv[2])
import mlx.core
import mpi4py
versions = {"python": "%d.%d.%d" % sys.version_info[:3], "mlx": mlx.core.__version__, "mpi4py": mpi4py.__version__}
stamp["versions"] = versions
partial = stamp_path + ".partial"
with open(partial, "w") as handle:
    json.dump(stamp, handle, indent=2)
    handle.flush()
    os.fsync(handle.fileno())
os.replace(partial, stamp_path)
print("@@corral-versions " + json.dumps(versions), flush=True)
"""

# The whole install in one SSH command; values arrive as positional arguments, the requirements on stdin.
INSTALL_SH = r"""
set -eu
venv=$1 python=$2 recreate=$3 installer=$4 uv=$5 wheels=$6 stamp=$7 stamp_json=$8 verify=$9
shift 9
step() { echo "@@corral-step $1"; }
case $venv in ""|/*|*..*) echo "refusing venv path '$venv'" >&2; exit 2 ;; esac
rm -f "$stamp"
if [ "$recreate" = 1 ] || [ ! -x "$venv/bin/python" ]; then
    step venv
    rm -rf "$venv"
    mkdir -p "$venv"
    if [ "$installer" = uv ]; then
        UV_PYTHON_DOWNLOADS=never "$uv" venv --quiet --no-project --python "$python" "$venv"
    else
        "$python" -m venv "$venv"
    fi
fi
requirements="$venv/corral-requirements.txt"
cat > "$requirements"
step install
if [ "$installer" = uv ]; then
    [ -z "$wheels" ] || set -- --offline --no-index --find-links "$wheels" "$@"
    UV_PYTHON_DOWNLOADS=never "$uv" pip install --quiet --no-progress --python "$venv/bin/python" "$@" -r "$requirements"
else
    [ -z "$wheels" ] || set -- --no-index --find-links "$wheels" "$@"
    "$venv/bin/python" -m pip --version >/dev/null 2>&1 || "$venv/bin/python" -m ensurepip --default-pip >/dev/null
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@" -r "$requirements"
fi
step verify
exec "$venv/bin/python" -I -c "$verify" "$stamp" "$stamp_json"
"""

_NO_NETWORK = re.compile(r"Network is unreachable|Failed to establish a new connection|Temporary failure in name "
                         r"resolution|error sending request|dns error|failed to lookup address")
_STEP_MARKERS = {"venv": EnvStep.CREATING_VENV, "install": EnvStep.INSTALLING, "verify": EnvStep.VERIFYING}


@dataclass(frozen=True)
class InstallPlan:
    """How one node installs: which installer (and uv binary), from where, into a fresh venv or not."""

    installer: Literal["uv", "pip"]
    uv_path: str | None
    wheels_dir: str | None  # on the node; None means online
    recreate: bool


def choose_installer(plan: NodePlan, request: EnvRequest, prepared: PreparedWheels | None) -> InstallPlan:
    """uv when pushed or already on the node (2× faster offline here), pip otherwise; pip needs ensurepip."""
    probe, node = plan.probe, plan.probe.node
    pushed_uv = f"{request.layout.wheelhouse_dir}/bin/uv" if prepared is not None and prepared.uv_included else None
    uv_path = pushed_uv or probe.uv_path
    wheels_dir = f"{request.layout.wheelhouse_dir}/wheels" if prepared is not None else None
    installer: Literal["uv", "pip"]
    if request.installer == "pip" or (request.installer == "auto" and uv_path is None):
        installer = "pip"
    elif uv_path is None:
        raise NodeError(node, f"{node}: uv was asked for, but it is not on the node and no uv wheel matched its "
                              "platform; install uv there, or let corral choose.")
    else:
        installer = "uv"
    stamp = plan.stamp
    # A new base Python, a broken venv or packages changed behind corral's back (a hand-installed mlx would
    # still satisfy "mlx[cpu]") need a fresh one; new requirements install in place (a venv made by uv has
    # no pip, so the script adds it with ensurepip when pip takes over).
    same_base = (stamp is not None and probe.venv_ok and plan.installed_as_stamped
                 and stamp.raw.get("python") == {"path": probe.python_path, "version": probe.python_version})
    needs_ensurepip = installer == "pip" and (not same_base or stamp is None or stamp.installer != "pip")
    if needs_ensurepip and not probe.has_ensurepip:
        raise NodeError(node, f"{node}: {probe.python_path} cannot create a venv with pip (its `ensurepip` is "
                              "missing). On Debian/Ubuntu run `sudo apt install python3-venv` there; or install uv "
                              "on the node; or use `--wheels push`, which brings uv along.")
    return InstallPlan(installer, uv_path if installer == "uv" else None, wheels_dir, recreate=not same_base)


def stamp_fields(plan: NodePlan, request: EnvRequest, install: InstallPlan) -> dict[str, object]:
    """The stamp before verification adds ``versions`` (fields documented in ``cluster.env_recipe``)."""
    probe = plan.probe
    return {
        "schema": STAMP_SCHEMA,
        "recipe": RECIPE_VERSION,
        "hash": plan.hash,
        "python": {"path": probe.python_path, "version": probe.python_version},
        "platform": {"sys_platform": probe.sys_platform, "machine": probe.machine, "tags": probe.platform_tags},
        "packages": list(plan.packages),
        "requirements": {"file": str(request.requirements.source) if request.requirements.source else None,
                         "sha256": request.requirements.sha256},
        "installer": install.installer,
        "wheels": request.wheels,
        "venv_python": request.layout.venv_python,
        "installed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def install_argv(plan: NodePlan, request: EnvRequest, install: InstallPlan) -> list[str]:
    layout = request.layout
    return ["sh", "-c", INSTALL_SH, "corral-env", layout.venv_dir, plan.probe.python_path,
            "1" if install.recreate else "0", install.installer, install.uv_path or "", install.wheels_dir or "",
            layout.env_stamp, json.dumps(stamp_fields(plan, request, install)), VERIFY_PY, *plan.packages]


def install_failure(node: str, step: EnvStep, stderr: str, request: EnvRequest, install: InstallPlan) -> NodeError:
    """The failed install as a sentence: a missing package, no network, no venv module, or the tail of stderr."""
    retry = f"then retry with `corral env --to {node}`"
    missing = (re.search(r"No matching distribution found for (\S+)", stderr)
               or re.search(r"(\S+) was not found in the (?:package registry|provided package locations)", stderr))
    offline_hint = ("" if install.wheels_dir else
                    "; if the node has no internet, use `--wheels push` (this computer downloads and copies the wheels)")
    # Checked before a missing package: pip offline ends with "No matching distribution" for every package.
    if not install.wheels_dir and _NO_NETWORK.search(stderr):
        return NodeError(node, f"{node} could not reach the package index; use `--wheels push` (this computer "
                               f"downloads the wheels and copies them over), {retry}.")
    if missing:
        source = f" in {request.requirements.source}" if request.requirements.source else ""
        return NodeError(node, f"{node}: no installable {missing.group(1).rstrip(',.')!r} was found "
                               f"(check its name and version{source}){offline_hint}; {retry}.")
    if step is EnvStep.CREATING_VENV and "ensurepip" in stderr:
        return NodeError(node, f"{node}: the venv could not be created because `ensurepip` is missing; on "
                               f"Debian/Ubuntu run `sudo apt install python3-venv` there, {retry}.")
    if "No space left on device" in stderr:
        return NodeError(node, f"{node} ran out of disk space while {step.value}; free some space, {retry}.")
    tail = " / ".join(line.strip() for line in stderr.strip().splitlines()[-3:]) or "no error output"
    return NodeError(node, f"{node}: {step.value} failed ({tail}); {retry}.")


async def build_environments(
    pool: SessionPool,
    nodes: Sequence[Node],
    request: EnvRequest,
    *,
    home: CorralHome,
    all_nodes: Sequence[Node] | None = None,
    wheelhouse: LocalWheelhouse | None = None,
    on_progress: OnEnvProgress | None = None,
) -> list[NodeOutcome[NodeEnv]]:
    """Build or reuse the venv on every node concurrently; each node's failure is its own outcome only.

    ``all_nodes`` (the whole inventory) goes into the regenerated ssh config rsync uses, so writing it never
    drops nodes this run leaves out.
    """
    emit = on_progress or (lambda event: None)
    pusher = _Pusher(home, list(all_nodes or nodes), request.layout.wheelhouse_dir)
    if request.wheels == "push" and wheelhouse is None:
        wheelhouse = LocalWheelhouse(wheelhouse_root(home))

    async def one(node: Node) -> NodeEnv:
        try:
            return await _build_one(pool, node, request, wheelhouse, pusher, emit)
        except Exception as exc:
            emit(EnvProgress(node.name, EnvStep.FAILED, str(exc)))
            raise

    return await for_each_node(nodes, one)


async def _build_one(pool: SessionPool, node: Node, request: EnvRequest, wheelhouse: LocalWheelhouse | None,
                     pusher: _Pusher, emit: OnEnvProgress) -> NodeEnv:
    emit(EnvProgress(node.name, EnvStep.PROBING))
    session = await pool.session(node)
    probe = await probe_node(session, request.layout, request.python)
    plan = plan_node(probe, request.requirements)
    if plan.unchanged:
        assert plan.stamp is not None
        emit(EnvProgress(node.name, EnvStep.UNCHANGED))
        return _node_env(plan, plan.stamp.versions, plan.stamp.installer, "unchanged")
    if probe.free_bytes is not None and probe.free_bytes < MIN_FREE_BYTES:
        raise NodeError(node.name, f"{node.name} has only {probe.free_bytes // (1 << 20)} MB free in its home; the "
                                   f"environment needs about {MIN_FREE_BYTES >> 20} MB. Free some space, then retry "
                                   f"with `corral env --to {node.name}`.")
    prepared = None
    if request.wheels == "push":
        assert wheelhouse is not None
        emit(EnvProgress(node.name, EnvStep.DOWNLOADING, plan.group.label))
        try:
            prepared = await wheelhouse.prepare(plan.group, plan.packages, request.requirements)
        except WheelDownloadFailed as exc:
            raise NodeError(node.name, f"{node.name}: {exc}") from exc
        emit(EnvProgress(node.name, EnvStep.COPYING))
        await pusher.push(node, prepared)
    install = choose_installer(plan, request, prepared)
    versions = await _install(session, plan, request, install, emit)
    emit(EnvProgress(node.name, EnvStep.DONE, install.installer))
    return _node_env(plan, versions, install.installer, "installed")


async def _install(session: NodeSession, plan: NodePlan, request: EnvRequest, install: InstallPlan,
                   emit: OnEnvProgress) -> dict[str, str]:
    node = session.node.name
    current = EnvStep.INSTALLING
    versions: dict[str, str] = {}

    def on_line(stream: str, line: str) -> None:
        nonlocal current
        if stream != "stdout":
            return
        if line.startswith("@@corral-step "):
            current = _STEP_MARKERS.get(line.split(" ", 1)[1], current)
            emit(EnvProgress(node, current, install.installer))
        elif line.startswith("@@corral-versions "):
            versions.update(json.loads(line.split(" ", 1)[1]))

    result = await session.run(install_argv(plan, request, install), check=False, input=request.requirements.text,
                               timeout_s=INSTALL_TIMEOUT_S, on_line=on_line)
    if result.exit_status != 0 or not versions:
        if current is EnvStep.VERIFYING:
            tail = " / ".join(result.stderr.strip().splitlines()[-2:]) or "no error output"
            raise NodeError(node, f"{node}: the new venv could not import MLX and mpi4py ({tail}); retry with "
                                  f"`corral env --to {node}`, or report it with the output of "
                                  f"`corral exec {node} -- {request.layout.venv_python} -c 'import mlx.core'`.")
        raise install_failure(node, current, result.stderr, request, install)
    return versions


def _node_env(plan: NodePlan, versions: dict[str, str], installer: str, action: Literal["installed", "unchanged"]
              ) -> NodeEnv:
    probe = plan.probe
    return NodeEnv(node=probe.node, python_path=probe.python_path,
                   python_version=versions.get("python", probe.python_version),
                   mlx_version=versions.get("mlx", "?"), mpi4py_version=versions.get("mpi4py", "?"),
                   installer=installer, action=action, platform=probe.platform_label)


class _Pusher:
    """rsyncs wheelhouses to nodes through the regenerated ssh config (written once, only when needed)."""

    def __init__(self, home: CorralHome, all_nodes: list[Node], remote_dir: str) -> None:
        self._home = home
        self._all_nodes = all_nodes
        self._remote_dir = remote_dir
        self._config: Path | None = None

    async def push(self, node: Node, prepared: PreparedWheels) -> None:
        if self._config is None:
            from cluster.ssh_config import write_client_ssh_config

            # rsync runs OpenSSH, which must see the same nodes, key and host keys as corral's own sessions.
            nodes = self._all_nodes if any(n.name == node.name for n in self._all_nodes) else [*self._all_nodes, node]
            self._config = write_client_ssh_config(nodes, self._home)
        await push_wheels(self._config, node.name, prepared, self._remote_dir)


async def run_env(
    home: CorralHome,
    nodes: Sequence[Node],
    request: EnvRequest,
    *,
    all_nodes: Sequence[Node] | None = None,
    on_progress: OnEnvProgress | None = None,
) -> list[NodeOutcome[NodeEnv]]:
    """``corral env`` end to end: a session pool with corral's key, then ``build_environments``."""
    from cluster.known_hosts import KnownHosts
    from cluster.ssh import Credentials

    credentials = Credentials(private_key_path=home.private_key_path)
    async with SessionPool(credentials, KnownHosts(home.known_hosts_path)) as pool:
        return await build_environments(pool, nodes, request, home=home, all_nodes=all_nodes,
                                        on_progress=on_progress)


__all__ = [
    "EnvProgress",
    "EnvRequest",
    "EnvStep",
    "NodeEnv",
    "build_environments",
    "run_env",
]
