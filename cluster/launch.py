"""Start a training run on the cluster (or this computer) under a supervisor on the head node; the run API.

``start_run`` syncs the project and corral's trainer, writes the run's config on every node, and
starts ``mpirun`` (or ``mlx.launch`` for the ring backend) detached on the head node through
``supervise.py``, which writes the run's output there: the run outlives this computer's connection.
The async API the CLI and the GUI share (stable; no printing here):

    await start_run(home, TrainRequest(...), on_progress=...) -> RunRecord
    await follow_run(home, run_id, on_line=..., replay=True) -> RunStatus
    await run_status(home, run_id) -> RunStatus
    await stop_run(home, run_id) -> StopReport
    list_runs(home) -> list[RunRecord]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.errors import ClusterError, LaunchFailed
from cluster.fleet import for_each_node
from cluster.home import CorralHome
from cluster.inventory import Inventory, Node
from cluster.launch_plan import (
    PREPARE_SCRIPT,
    WRITE_FILE_SCRIPT,
    RankCommand,
    check_run_id,
    effective_accumulation,
    hostfile_text,
    mpirun_argv,
    needs_oversubscribe,
    ring_argv,
    ring_hosts_json,
    script_program,
    supervise_start_argv,
    trainer_program,
)
from cluster.layout import BIN_DIR, LIB_DIR, RemoteLayout
from cluster.local_host import LOCAL_RANKS, local_base_dir, local_node
from cluster.run_follow import follow_run as _follow_run
from cluster.run_follow import run_status as _run_status
from cluster.run_hosts import RunHosts
from cluster.run_monitor import FollowedLine
from cluster.run_stop import StopReport, stop_run
from cluster.runs import RunRecord, list_runs, new_run_id, resolve_run, save_record, update_record

if TYPE_CHECKING:
    from cluster.lora_launch import LoraPlan
    from cluster.run_status import RunStatus

SUPERVISE_REMOTE = f"{BIN_DIR}/supervise.py"
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class TrainRequest:
    """What to run and where; everything optional has the sensible default."""

    config_file: Path | None = None  # the trainer's flat TOML config (default: the trainer's defaults)
    config_text: str | None = None  # or the config itself (the demo's)
    trainer_args: tuple[str, ...] = ()  # extra `--field value` flags for the trainer
    backend: str = "mpi"  # "mpi" (mpirun) or "ring" (mlx.launch --backend ring)
    nodes: tuple[str, ...] = ()  # node names; empty: every node of the cluster
    script: str | None = None  # the user's own program (relative to the project folder) instead of the trainer
    script_args: tuple[str, ...] = ()
    resume: str | None = None  # a run id (prefix): continue from its last checkpoint
    without: tuple[str, ...] = ()  # with resume: leave these nodes out
    local: bool | None = None  # None: local exactly when the cluster has no nodes
    local_ranks: int = LOCAL_RANKS


@dataclass(frozen=True)
class LaunchProgress:
    """A step of the launch, for a progress line: ``sync``, ``prepare``, ``start`` or ``started``."""

    step: str
    message: str
    node: str | None = None


OnLaunchProgress = Callable[[LaunchProgress], None]


@dataclass
class _Launch:
    """Everything decided before anything runs."""

    run_id: str
    nodes: list[Node]
    local: bool
    backend: str
    program: tuple[str, ...]
    workdir: str
    config_text: str
    run_dir: str
    layout: RemoteLayout | None
    project: Path | None
    resumed_from: RunRecord | None = None
    batch_size: int | None = None
    grad_accum_steps: int | None = None
    extra: list[str] = field(default_factory=list)
    lora: LoraPlan | None = None


def _library_root() -> Path:
    """The folder holding corral's ``trainer`` package and ``resources`` (this checkout or install)."""
    import trainer

    return Path(trainer.__file__).resolve().parent.parent


def _resolved_trainer_settings(config_text: str, trainer_args: Sequence[str], config_dir: Path | None):
    """The trainer's TrainConfig for these settings, read here so a bad config fails before any launch.

    A relative ``data`` follows the config file's folder, as the trainer reads it.
    """
    from dataclasses import replace

    from trainer.config import ConfigError, parse_args

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch).resolve() / "config.toml"
        path.write_text(config_text)
        try:
            config = parse_args(["--config", str(path), *trainer_args]).config
        except ConfigError as exc:
            raise LaunchFailed(f"The trainer config is not valid: {str(exc).replace(str(path), 'config')}.") from None
    if config.data and config_dir is not None and Path(config.data).is_relative_to(path.parent):
        config = replace(config, data=str((config_dir / Path(config.data).relative_to(path.parent)).resolve()))
    return config


async def start_run(home: CorralHome, request: TrainRequest, *,
                    on_progress: OnLaunchProgress | None = None) -> RunRecord:
    """Launch a run and return its record once the launcher runs on the head node (it keeps running alone)."""
    from cluster.state import load_cluster

    def progress(step: str, message: str, node: str | None = None) -> None:
        if on_progress is not None:
            on_progress(LaunchProgress(step, message, node))

    if request.backend not in ("mpi", "ring"):
        raise LaunchFailed(f"--backend: {request.backend!r} is not one of mpi, ring.")
    inventory = load_cluster(home)
    launch = _plan(home, inventory, request)
    if launch.local:
        return await _start_local(home, launch, progress)
    return await _start_remote(home, inventory, launch, progress)


def _plan(home: CorralHome, inventory: Inventory, request: TrainRequest) -> _Launch:
    run_id = check_run_id(new_run_id())
    previous = resolve_run(home, request.resume) if request.resume else None
    local = request.local if request.local is not None else (previous.local if previous else not inventory.nodes)
    if previous is not None:
        nodes = _resume_nodes(inventory, previous, request.without, local)
    elif local:
        nodes = [local_node(request.local_ranks)]
    else:
        nodes = inventory.select(list(request.nodes) or None)
        if not nodes:
            raise LaunchFailed("The cluster has no nodes; add them with `corral node add`, or run `corral demo` here.")
    world = sum(node.slots for node in nodes)
    run_dir = f"{RemoteLayout('x').runs_dir}/{run_id}"

    project: Path | None = None
    if inventory.project and not local:
        project = Path(inventory.project)
    script = request.script if previous is None else None
    if script is not None and project is None and not local:
        project = Path.cwd()
    layout = RemoteLayout.for_project(project or Path.cwd()) if not local else None

    if script is not None:
        if Path(script).is_absolute() and project is not None:
            try:
                script = str(Path(script).relative_to(project))
            except ValueError:
                raise LaunchFailed(f"--script {script} is outside the project folder {project}; put it inside, "
                                   "so `corral sync` copies it to the nodes.") from None
        if local:
            script = str(Path(script).absolute())
        program = script_program(run_id, script, request.script_args)
        workdir = (layout.code_dir if layout else str(Path.cwd()))
        return _Launch(run_id, nodes, local, request.backend, program, workdir, "", run_dir, layout, project)

    if previous is not None:
        config_text = previous.config_text or ""
        # The earlier run's own flags, then any new ones (e.g. more steps).
        trainer_args = [*_previous_trainer_args(previous), *request.trainer_args]
        config_dir = None
    else:
        config_dir = request.config_file.parent if request.config_file else None
        if request.config_file is not None:
            try:
                config_text = request.config_file.read_text()
            except OSError as exc:
                raise LaunchFailed(f"Cannot read the config file {request.config_file} ({exc.strerror}); "
                                   "give an existing file with --config.") from None
        else:
            config_text = request.config_text or ""
        trainer_args = list(request.trainer_args)
    from cluster.lora_launch import LORA_KIND, config_kind

    if config_kind(config_text, trainer_args) == LORA_KIND:
        return _plan_lora(request, run_id, nodes, local, layout, project, previous, config_text, trainer_args,
                          config_dir)
    settings = _resolved_trainer_settings(config_text, trainer_args, config_dir)
    extra = list(trainer_args)
    if settings.data and previous is None:
        extra += ["--data", _data_path(settings.data, project, local)]
    extra += ["--checkpoint_dir", "checkpoints"]
    if request.backend == "ring":
        extra += ["--backend", "ring"]
    grad_accum = settings.grad_accum_steps
    if previous is not None:
        if previous.program[:4] != ("-X", previous.program[1], "-m", "trainer"):
            raise LaunchFailed(f"Run {previous.id} ran a --script program; only trainer runs can be resumed.")
        if previous.head not in {node.name for node in nodes}:
            raise LaunchFailed(
                f"Run {previous.id}'s checkpoints are on its head node {previous.head}, which this resume leaves out; "
                f"keep {previous.head} (leave out other nodes), or copy its checkpoints first.")
        # Keep the effective batch: batch_size × grad_accum_steps × world_size as before.
        effective = ((previous.batch_size or settings.batch_size) * (previous.grad_accum_steps or 1)
                     * previous.world_size)
        try:
            grad_accum = effective_accumulation(effective, settings.batch_size, world)
        except ValueError as exc:
            raise LaunchFailed(f"Cannot resume run {previous.id} on {world} ranks: {exc}; choose a batch_size that "
                               "divides it (--set batch_size=N), or keep more nodes.") from None
        extra += ["--grad_accum_steps", str(grad_accum), "--resume", f"../{previous.id}/checkpoints"]
        if previous.head != nodes[0].name:
            nodes = [node for node in nodes if node.name == previous.head] + [n for n in nodes if n.name != previous.head]
    program = trainer_program(run_id, world, extra=extra)
    return _Launch(run_id, nodes, local, request.backend, program, run_dir, config_text, run_dir, layout, project,
                   resumed_from=previous, batch_size=settings.batch_size, grad_accum_steps=grad_accum, extra=extra)


def _plan_lora(request: TrainRequest, run_id: str, nodes: list[Node], local: bool, layout: RemoteLayout | None,
               project: Path | None, previous: RunRecord | None, config_text: str, trainer_args: list[str],
               config_dir: Path | None) -> _Launch:
    """A ``kind = "lora"`` run: mlx-lm's trainer with the model on every node and the adapters in the run's dir."""
    from cluster.lora_launch import RESUME_DIR, lora_settings, plan_lora, previous_lora_flags

    world = sum(node.slots for node in nodes)
    if previous is not None:
        if previous.kind != "lora":
            raise LaunchFailed(f"Run {previous.id} is not a LoRA run; `--resume` continues a run of the same kind.")
        kept, corral_flags = previous_lora_flags(previous.program)
        trainer_args = [*kept, *request.trainer_args]
        settings = lora_settings(config_text, trainer_args, None)
        lora = plan_lora(settings, None, resume_from=previous.id, previous_flags=corral_flags)
        model_arg, data_arg = corral_flags["--model"], corral_flags["--data"]
    else:
        settings = lora_settings(config_text, trainer_args, config_dir)
        lora = plan_lora(settings, config_dir, resume_from=None)
        if local:
            model_arg = str(lora.model.local) if lora.model.local is not None else lora.model.text
        else:
            model_arg = lora.model.path_from_run_dir
        data = str(getattr(settings, "data", "") or "")
        if not data:
            raise LaunchFailed("The LoRA config has no data; set data = \"folder\" (with train.jsonl and valid.jsonl), "
                               "relative to the config file.")
        data_arg = _data_path(data, project, local)
    extra = [*trainer_args, "--model", model_arg, "--data", data_arg, "--adapter_dir", lora.adapter_dir]
    if request.backend == "ring":
        extra += ["--backend", "ring"]
    if previous is not None:
        extra += ["--resume_adapter_file", f"{RESUME_DIR}/adapters.safetensors"]
    program = trainer_program(run_id, world, extra=extra)
    run_dir = f"{RemoteLayout('x').runs_dir}/{run_id}"
    return _Launch(run_id, nodes, local, request.backend, program, run_dir, config_text, run_dir, layout, project,
                   resumed_from=previous, batch_size=getattr(settings, "batch_size", None), extra=extra, lora=lora)


def _previous_trainer_args(previous: RunRecord) -> list[str]:
    """The user's own trainer flags of an earlier run (without the ones corral adds itself)."""
    args = list(previous.program[8:]) if previous.program[2:4] == ("-m", "trainer") else []
    kept: list[str] = []
    skip = 0
    for index, arg in enumerate(args):
        if skip:
            skip -= 1
            continue
        if arg in ("--checkpoint_dir", "--backend", "--grad_accum_steps", "--resume"):
            skip = 1
            continue
        kept.append(arg)
    return kept


def _resume_nodes(inventory: Inventory, previous: RunRecord, without: Sequence[str], local: bool) -> list[Node]:
    if local:
        if without:
            raise LaunchFailed("--without: a local run has only this computer; resume it without --without.")
        return [local_node(previous.world_size)]
    names = list(dict.fromkeys(previous.nodes))
    unknown = [name for name in without if name not in names]
    if unknown:
        raise LaunchFailed(f"--without {', '.join(unknown)}: not a node of run {previous.id} ({', '.join(names)}).")
    kept = [name for name in names if name not in without]
    if not kept:
        raise LaunchFailed(f"--without leaves no node of run {previous.id}; keep at least one.")
    return inventory.select(kept)


def _data_path(data: str, project: Path | None, local: bool) -> str:
    """The data path as the ranks see it: relative paths in the config follow the config file here, and must
    lie inside the project folder, which corral syncs, so each node has them in its copy of the project."""
    path = Path(data)
    if local:
        return str(path)
    if project is not None:
        try:
            relative = path.resolve().relative_to(project.resolve())
        except ValueError:
            pass
        else:
            # The ranks start in corral/runs/<id>; the project is corral/projects/<slug>.
            return f"../../projects/{RemoteLayout.for_project(project).slug}/{relative.as_posix()}"
    raise LaunchFailed(
        f"The config's data {data} is not inside the project folder{f' {project}' if project else ''}, so the nodes do "
        "not have it; move the data into the project (corral sync copies it) or give a path inside the project.")


def _record(launch: _Launch, *, supervisor: tuple[str, ...]) -> RunRecord:
    from cluster.run_status import ranks_to_nodes

    head = launch.nodes[0]
    return RunRecord(
        id=launch.run_id, created=time.time(), nodes=tuple(n.name for n in launch.nodes), head=head.name,
        world_size=sum(n.slots for n in launch.nodes), backend=launch.backend, program=launch.program,
        remote_run_dir=launch.run_dir, supervisor=supervisor, rank_nodes=tuple(ranks_to_nodes(launch.nodes)),
        project=str(launch.project) if launch.project else None, slug=launch.layout.slug if launch.layout else None,
        config_text=launch.config_text, local=launch.local,
        resumed_from=launch.resumed_from.id if launch.resumed_from else None,
        batch_size=launch.batch_size, grad_accum_steps=launch.grad_accum_steps,
        kind="lora" if launch.lora else None, adapter_dir=launch.lora.adapter_dir if launch.lora else None,
    )


def _parse_started(output: str, head: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if "pid" in data:
            return data
        if "error" in data:
            raise LaunchFailed(f"The supervisor on {head} could not start the launcher: {data['error']}.")
    raise LaunchFailed(f"The supervisor on {head} did not report a started launcher ({output.strip()[-200:] or 'no output'}).")


async def _start_local(home: CorralHome, launch: _Launch, progress: Callable[..., None]) -> RunRecord:
    from cluster.local_host import LocalHost

    base = local_base_dir(home)
    run_dir = base / launch.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(launch.config_text)
    if launch.lora is not None:
        from cluster.lora_launch import check_local_mlx_lm

        check_local_mlx_lm()
        if launch.lora.resume_from is not None:
            from cluster.lora_launch import RESUME_DIR, previous_adapters

            adapters = await previous_adapters(home, launch.lora.resume_from)
            shutil.copytree(adapters, run_dir / RESUME_DIR, dirs_exist_ok=True)
    world = launch.nodes[0].slots
    python = sys.executable
    rank = RankCommand(base=str(base), workdir=launch.workdir, python=python, pythonpath=str(_library_root()),
                       program=launch.program)
    if launch.backend == "ring":
        hosts = run_dir / "hosts.json"
        hosts.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * world))
        launcher = str(Path(python).parent / "mlx.launch")
        if not Path(launcher).exists():
            launcher = shutil.which("mlx.launch") or launcher
        argv = ring_argv(launcher=launcher, hosts_json=str(hosts), rank=rank)
    else:
        if shutil.which("mpirun") is None:
            raise LaunchFailed("mpirun is not installed on this computer; install Open MPI (Debian/Ubuntu: "
                               "`apt install openmpi-bin libopenmpi-dev`, macOS: `brew install open-mpi`).")
        argv = mpirun_argv(hostfile=None, world_size=world, network=None,
                           oversubscribe=(os.cpu_count() or 1) < world, allow_root=os.geteuid() == 0, rank=rank)
    supervise = str(Path(__file__).resolve().parent / "remote" / "supervise.py")
    record = _record(launch, supervisor=(python, supervise))
    save_record(home, record)
    progress("start", f"starting {world} ranks on this computer")
    host = LocalHost(base)
    result = await host.run(supervise_start_argv(python, supervise, launch.run_dir, argv), check=False,
                            timeout_s=START_TIMEOUT_S)
    try:
        _parse_started(result.stdout, "this computer")
    except LaunchFailed as exc:
        update_record(home, record.id, state="failed", failure=str(exc), ended=time.time())
        raise
    progress("started", f"run {record.id} started")
    return record


async def _start_remote(home: CorralHome, inventory: Inventory, launch: _Launch,
                        progress: Callable[..., None]) -> RunRecord:
    from cluster.sync import SyncPlan, check_ready, control_dir_candidates, refresh_ssh_config, sync_node, sync_project, usable_control_dir

    assert launch.layout is not None
    nodes, head = launch.nodes, launch.nodes[0]
    names = [node.name for node in nodes]
    if not home.private_key_path.exists():
        raise LaunchFailed(f"corral has no SSH key yet ({home.private_key_path}); run `corral keys` first.")
    refresh_ssh_config(home, inventory)
    if launch.project is not None:
        progress("sync", f"syncing {launch.project} to {len(nodes)} node(s)")
        check_ready(home, inventory, launch.project, names)
        outcomes = await sync_project(home, inventory, launch.project, names=names)
        _raise_failures(outcomes, "copy the project to")
    progress("sync", "copying corral's trainer to the nodes")
    library = _library_root()
    control_dir = usable_control_dir(control_dir_candidates(home))

    async def push_library(node: Node) -> None:
        for part in ("trainer", "resources"):
            plan = SyncPlan(project=library / part, code_dir=f"{LIB_DIR}/{part}", ssh_config=home.ssh_config_path,
                            progress2=False, control_dir=control_dir)
            await sync_node(plan, node)

    _raise_failures(await for_each_node(nodes, push_library), "copy corral's trainer to")

    layout = launch.layout
    async with RunHosts(home, nodes, local=False) as hosts:
        progress("prepare", "checking venvs and writing the run's config")
        cpus: dict[str, int] = {}

        async def prepare(node: Node) -> None:
            session = await hosts.host(node.name)
            result = await session.run(["sh", "-c", PREPARE_SCRIPT, "corral-prepare", launch.run_dir,
                                        layout.venv_python, layout.env_stamp], input=launch.config_text, timeout_s=30)
            if "CORRAL-NO-VENV" in result.stdout:
                raise LaunchFailed(
                    f"{node.name} has no venv for this project yet (~/{layout.venv_dir}); run `corral env` (or "
                    "`corral env --wheels push` when the nodes have no internet), then `corral doctor`.")
            for line in result.stdout.splitlines():
                if line.startswith("CORRAL-NPROC "):
                    cpus[node.name] = int(line.split()[1] or 0)

        _raise_failures(await for_each_node(nodes, prepare), "prepare")
        if launch.lora is not None:
            from cluster.lora_launch import prepare_lora_nodes

            await prepare_lora_nodes(home, hosts, launch.nodes, launch.layout, launch.run_dir, launch.program,
                                     launch.lora, control_dir, progress)
        session = await hosts.host(head.name)
        supervise_text = (Path(__file__).resolve().parent / "remote" / "supervise.py").read_text()
        await session.run(["sh", "-c", WRITE_FILE_SCRIPT, "corral-write", SUPERVISE_REMOTE], input=supervise_text,
                          timeout_s=30)
        rank = RankCommand(base="", workdir=launch.workdir, python=layout.venv_python, pythonpath=LIB_DIR,
                           program=launch.program)
        world = sum(node.slots for node in nodes)
        if launch.backend == "ring":
            hosts_file = f"{launch.run_dir}/hosts.json"
            await session.run(["sh", "-c", WRITE_FILE_SCRIPT, "corral-write", hosts_file],
                              input=ring_hosts_json(nodes), timeout_s=30)
            argv = ring_argv(launcher=f"{layout.venv_dir}/bin/mlx.launch", hosts_json=hosts_file, rank=rank)
        else:
            hostfile = f"{launch.run_dir}/hostfile"
            await session.run(["sh", "-c", WRITE_FILE_SCRIPT, "corral-write", hostfile], input=hostfile_text(nodes),
                              timeout_s=30)
            argv = mpirun_argv(hostfile=hostfile, world_size=world, network=inventory.effective_network(),
                               oversubscribe=needs_oversubscribe(nodes, cpus), allow_root=head.user == "root",
                               rank=rank)
        record = _record(launch, supervisor=(layout.venv_python, SUPERVISE_REMOTE))
        save_record(home, record)
        progress("start", f"starting {world} ranks from {head.name}")
        result = await session.run(supervise_start_argv(layout.venv_python, SUPERVISE_REMOTE, launch.run_dir, argv),
                                   check=False, timeout_s=START_TIMEOUT_S)
        try:
            _parse_started(result.stdout + result.stderr, head.name)
        except LaunchFailed as exc:
            update_record(home, record.id, state="failed", failure=str(exc), ended=time.time())
            raise
    progress("started", f"run {record.id} started on {head.name}")
    return record


async def follow_run(home: CorralHome, run_id: str, *, on_line, replay: bool = True) -> RunStatus:  # noqa: ANN001
    """cluster.run_follow.follow_run; then a LoRA run that ended gets its adapters copied here."""
    from cluster.adapters import fetch_adapters_when_over

    status = await _follow_run(home, run_id, on_line=on_line, replay=replay)
    await fetch_adapters_when_over(home, run_id, status.state.is_over)
    return status


async def run_status(home: CorralHome, run_id: str) -> RunStatus:
    """cluster.run_follow.run_status; then a LoRA run that ended gets its adapters copied here."""
    from cluster.adapters import fetch_adapters_when_over

    status = await _run_status(home, run_id)
    await fetch_adapters_when_over(home, run_id, status.state.is_over)
    return status


def _raise_failures(outcomes: Sequence, what: str) -> None:
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if failed:
        details = " ".join(outcome.message for outcome in failed)
        raise LaunchFailed(f"Could not {what} {', '.join(o.node.name for o in failed)}, so nothing was started: {details}")


__all__ = [
    "FollowedLine",
    "LaunchProgress",
    "RunRecord",
    "StopReport",
    "TrainRequest",
    "follow_run",
    "list_runs",
    "run_status",
    "start_run",
    "stop_run",
]
