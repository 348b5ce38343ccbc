"""The LoRA part of a launch (``kind = "lora"``): read the config's model and data, check the nodes, place the model.

Before anything starts, every node is checked at once and each problem is named with its node: mlx-lm missing
from the node's venv, less free memory than ``trainer.lora.plan.estimate_lora_memory`` says its ranks need,
the model missing after the copy. A resumed run gets the earlier run's adapters (the copy on this computer,
refreshed from the old head when it answers) in its own directory on every node, so every rank can read them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from cluster.errors import ClusterError, LaunchFailed
from cluster.home import CorralHome
from cluster.inventory import Node
from cluster.layout import RemoteLayout
from cluster.models import ModelSource, resolve_model

if TYPE_CHECKING:
    from cluster.run_hosts import RunHosts

log = logging.getLogger(__name__)

LORA_KIND = "lora"
RESUME_DIR = "resume"  # in the new run's directory on every node: the earlier run's adapters
# Flags corral sets itself on a LoRA run (an earlier run's values of these are not carried into a resume).
CORRAL_FLAGS = ("--model", "--data", "--adapter_dir", "--resume_adapter_file", "--backend")

# Per node, before the launch: $1 the venv's python, $2 the model dir ("" skips that check). Says whether mlx-lm
# and its tokenizer library are importable (without importing them: transformers takes seconds), whether the
# model has its config.json, and the memory figures (Linux /proc/meminfo, macOS sysctl + vm_stat).
CHECK_SCRIPT = r"""
cd || exit 97
if "$1" -c 'import importlib.util as u, sys; sys.exit(not (u.find_spec("mlx_lm") and u.find_spec("transformers")))' \
  >/dev/null 2>&1; then echo "CORRAL-MLX-LM yes"; else echo "CORRAL-MLX-LM no"; fi
if [ -n "$2" ]; then if [ -f "$2/config.json" ]; then echo "CORRAL-MODEL yes"; else echo "CORRAL-MODEL no"; fi; fi
if [ -r /proc/meminfo ]; then grep -E '^(MemTotal|MemAvailable):' /proc/meminfo
else echo "hw.memsize: $(sysctl -n hw.memsize 2>/dev/null)"; vm_stat 2>/dev/null; fi
"""


def config_kind(config_text: str, trainer_args: Sequence[str]) -> str:
    """The config's ``kind`` (a ``--kind`` flag wins); "scratch" when absent."""
    kind = read_flat_config(config_text).get("kind", "scratch")
    args = list(trainer_args)
    for index, arg in enumerate(args[:-1]):
        if arg == "--kind":
            kind = args[index + 1]
    return str(kind)


def read_flat_config(text: str) -> dict[str, Any]:
    """The ``key = value`` settings of a flat TOML config, unchecked (the trainer checks them; see lora_settings)."""
    from trainer.config import _parse_value  # the trainer's own reading of a value, so both agree

    values: dict[str, Any] = {}
    for raw in text.splitlines():
        line = raw.strip()
        name, sep, rest = line.partition("=")
        if not line or line.startswith("#") or not sep:
            continue
        try:
            values[name.strip()] = _parse_value(rest.strip())
        except ValueError:
            continue
    return values


def lora_settings(config_text: str, trainer_args: Sequence[str], config_dir: Path | None) -> Any:
    """The LoRA trainer's resolved settings for this config and flags; a bad config fails here, before any launch.

    The trainer's own parser reads it (unknown keys get its "did you mean"); relative ``model`` and ``data``
    paths follow the config file, as the trainer reads them.
    """
    from trainer import config as trainer_config

    parse = getattr(trainer_config, "parse_any_args", None)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch).resolve() / "config.toml"
        path.write_text(config_text)
        settings = None
        if parse is not None and importlib.util.find_spec("trainer.lora") is not None:
            try:
                settings = parse(["--config", str(path), *trainer_args]).config
            except trainer_config.ConfigError as exc:
                raise LaunchFailed(f"The LoRA config is not valid: {str(exc).replace(str(path), 'config')}.") from None
    if settings is None or not hasattr(settings, "model"):
        # A trainer without the kind dispatch: corral reads the few settings it needs itself.
        values = read_flat_config(config_text)
        flags = list(trainer_args)
        for index in range(0, len(flags) - 1):
            if flags[index].startswith("--"):
                values[flags[index][2:]] = flags[index + 1]
        settings = SimpleNamespace(**values)
    for name in ("data", "model"):
        value = str(getattr(settings, name, "") or "")
        if value and config_dir is not None:
            if Path(value).is_relative_to(path.parent):
                setattr_any(settings, name, str(config_dir / Path(value).relative_to(path.parent)))
            elif name == "data" and not Path(value).is_absolute():
                setattr_any(settings, name, str((config_dir / value).resolve()))
    return settings


def setattr_any(settings: Any, name: str, value: Any) -> None:
    """Set a field on the trainer's frozen dataclass (or a namespace)."""
    from dataclasses import is_dataclass

    if is_dataclass(settings):
        object.__setattr__(settings, name, value)
    else:
        setattr(settings, name, value)


@dataclass(frozen=True)
class LoraPlan:
    """What a LoRA launch decided before touching a node."""

    model: ModelSource
    settings: Any
    adapter_dir: str
    resume_from: str | None = None  # an earlier LoRA run's id


def plan_lora(settings: Any, config_dir: Path | None, *, resume_from: str | None,
              previous_flags: dict[str, str] | None = None) -> LoraPlan:
    """The model and adapter folder; a resume keeps the earlier run's (the model is on its nodes already)."""
    if previous_flags is not None:
        return LoraPlan(ModelSource(previous_flags["--model"]), settings,
                        previous_flags.get("--adapter_dir") or "adapters", resume_from)
    model = resolve_model(str(getattr(settings, "model", "") or ""), config_dir)
    adapter_dir = str(getattr(settings, "adapter_dir", "") or "adapters")
    if adapter_dir.startswith("/") or ".." in Path(adapter_dir).parts:
        raise LaunchFailed(f"adapter_dir {adapter_dir!r}: give a folder inside the run's directory, e.g. \"adapters\"; "
                           "corral copies it back to this computer when the run ends.")
    return LoraPlan(model, settings, adapter_dir, resume_from)


def previous_lora_flags(program: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """An earlier LoRA run's trainer flags: (the user's own, corral's --model/--data/--adapter_dir values)."""
    args = list(program[8:]) if tuple(program[2:4]) == ("-m", "trainer") else []
    kept: list[str] = []
    corral: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in CORRAL_FLAGS and index + 1 < len(args):
            corral[arg] = args[index + 1]
            index += 2
            continue
        kept.append(arg)
        index += 1
    return kept, corral


def estimate_bytes(plan: LoraPlan) -> int | None:
    """Bytes per rank from the trainer's planner; None when it cannot say (a hub model not here, no planner)."""
    if plan.model.local is None:
        return None
    try:
        from trainer.lora.plan import estimate_lora_memory
    except ImportError:
        log.info("trainer.lora.plan is not available; no memory check before the launch")
        return None
    try:
        return int(estimate_lora_memory(plan.model.local, plan.settings))
    except (OSError, ValueError, KeyError) as exc:
        raise LaunchFailed(f"Cannot read the model in {plan.model.local} to plan its memory ({exc}); check that "
                           "it is a complete model folder (config.json and *.safetensors).") from None


@dataclass(frozen=True)
class NodeCheck:
    """What CHECK_SCRIPT found on one node."""

    mlx_lm: bool
    model_present: bool | None  # None: not asked
    available_bytes: int | None


def parse_check(output: str) -> NodeCheck:
    from cluster.doctor.node_probe import parse_memory

    lines = output.splitlines()
    mlx_lm = "CORRAL-MLX-LM yes" in lines
    model = True if "CORRAL-MODEL yes" in lines else False if "CORRAL-MODEL no" in lines else None
    _, available = parse_memory(lines)
    return NodeCheck(mlx_lm, model, available)


def check_problems(node: Node, check: NodeCheck, *, venv_dir: str, per_rank_bytes: int | None,
                   model_dir: str | None) -> list[str]:
    """Sentences naming what stops ``node`` from running its ranks of this LoRA run, with the next step."""
    problems = []
    if not check.mlx_lm:
        problems.append(f"{node.name}: mlx-lm is not installed in its venv (~/{venv_dir}); add `mlx-lm` to the "
                        "project's requirements and run `corral env --requirements FILE` (with `--wheels push` when "
                        "the nodes have no internet)")
    if check.model_present is False:
        problems.append(f"{node.name}: the model is missing after the copy (~/{model_dir} has no config.json); "
                        f"remove ~/{model_dir} on {node.name} and start the run again")
    if per_rank_bytes is not None and check.available_bytes is not None:
        needed = per_rank_bytes * node.slots
        if check.available_bytes < needed:
            ranks = f"{node.slots} ranks" if node.slots > 1 else "1 rank"
            problems.append(f"{node.name}: {format_bytes(check.available_bytes)} of memory free, but {ranks} of this "
                            f"LoRA run need about {format_bytes(needed)}; free memory there, lower batch_size, "
                            f"max_seq_length or num_layers (or set grad_checkpoint = true), or leave {node.name} out "
                            "with --nodes")
    return problems


def format_bytes(count: int) -> str:
    return f"{count / 1024**3:.1f} GiB" if count >= 1024**3 else f"{count / 1024**2:.0f} MiB"


def check_local_mlx_lm() -> None:
    """Local mode runs corral's own Python: it needs mlx-lm too."""
    if importlib.util.find_spec("mlx_lm") is None:
        raise LaunchFailed("mlx-lm is not installed in corral's own Python, which runs local LoRA ranks; "
                           "`pip install mlx-lm` (or `pip install 'corral[lora]'`).")


def raise_node_problems(problems: dict[str, list[str]]) -> None:
    if problems:
        text = "; ".join(problem for node_problems in problems.values() for problem in node_problems)
        raise LaunchFailed(f"The LoRA run cannot start on {', '.join(problems)}, so nothing was started: {text}.")


async def prepare_lora_nodes(home: CorralHome, hosts: RunHosts, nodes: Sequence[Node], layout: RemoteLayout | None,
                             run_dir: str, program: Sequence[str], lora: LoraPlan | None, control_dir: Path | None,
                             progress: Callable[..., None]) -> None:
    """Check every node for the LoRA run, bring the model (and a resume's adapters) to each, or fail naming nodes.

    ``progress(step, message, node)`` gets a line per step and per node's model transfer.
    """
    from cluster.fleet import for_each_node
    from cluster.launch import _raise_failures
    from cluster.models import ModelProgress, place_model
    from cluster.sync import SyncPlan, local_rsync_version, sync_node

    assert lora is not None and layout is not None
    per_rank = estimate_bytes(lora) if lora.resume_from is None else None
    model_dir = lora.model.remote_dir if lora.resume_from is None else model_dir_of(program)

    async def check(node: Node, model: str = ""):  # noqa: ANN202 - a NodeCheck
        session = await hosts.host(node.name)
        result = await session.run(["sh", "-c", CHECK_SCRIPT, "corral-check", layout.venv_python, model],
                                   check=False, timeout_s=30)
        return parse_check(result.stdout)

    async def check_all(model: str) -> None:
        outcomes = await for_each_node(nodes, lambda node: check(node, model))
        _raise_failures(outcomes, "check")
        problems = {o.node.name: check_problems(o.node, o.value, venv_dir=layout.venv_dir, per_rank_bytes=per_rank,
                                                model_dir=model or None) for o in outcomes}
        raise_node_problems({name: found for name, found in problems.items() if found})

    progress("check", f"checking mlx-lm{' and free memory' if per_rank else ''} on {len(nodes)} node(s)")
    await check_all("")
    progress2 = local_rsync_version().has_progress2

    def plan_for(folder: Path, remote: str) -> SyncPlan:
        return SyncPlan(project=folder, code_dir=remote, ssh_config=home.ssh_config_path, progress2=progress2,
                        control_dir=control_dir)

    if lora.resume_from is None:
        download = _shared_download(home, lora)

        def on_model(event: ModelProgress) -> None:
            percent = f" ({event.percent}%)" if event.percent is not None and event.phase == "copying" else ""
            progress("model", f"{event.node}: model {lora.model.key}: {event.phase}{percent}", event.node)

        async def place(node: Node) -> str:
            return await place_model(node, lora.model, host=await hosts.host(node.name), python=layout.venv_python,
                                     sync_plan_for=plan_for, on_progress=on_model, download_here=download)

        _raise_failures(await for_each_node(nodes, place), "bring the model to")
    await check_all(model_dir)
    if lora.resume_from is not None:
        adapters = await previous_adapters(home, lora.resume_from)
        progress("resume", f"copying run {lora.resume_from}'s adapters to {len(nodes)} node(s)")

        async def push(node: Node) -> None:
            await sync_node(plan_for(adapters, f"{run_dir}/{RESUME_DIR}"), node)

        _raise_failures(await for_each_node(nodes, push), "copy the earlier run's adapters to")


def model_dir_of(program: Sequence[str]) -> str:
    """The model folder relative to the node's home, from the ``--model`` the ranks get (relative to the run dir)."""
    from cluster.models import MODELS_DIR, MODELS_FROM_RUN_DIR

    program = list(program)
    model = program[program.index("--model") + 1]
    return model.replace(MODELS_FROM_RUN_DIR, MODELS_DIR, 1) if model.startswith(MODELS_FROM_RUN_DIR) else model


def _shared_download(home: CorralHome, lora: LoraPlan) -> Callable[[], Awaitable[Path]] | None:
    """For a hub model: one download on this computer, shared by every node that cannot fetch it itself."""
    if lora.model.hub_id is None:
        return None
    from cluster.models import download_hub_model

    pending: list[asyncio.Future] = []

    async def download() -> Path:
        if not pending:
            pending.append(asyncio.ensure_future(download_hub_model(lora.model.hub_id or "", home.root / "models")))
        return await asyncio.shield(pending[0])

    return download


async def previous_adapters(home: CorralHome, run_id: str) -> Path:
    """The earlier run's adapters on this computer, copied (again) from its head first when that answers."""
    from cluster.adapters import fetch_adapters, local_adapters_dir

    try:
        return await fetch_adapters(home, run_id)
    except ClusterError as exc:
        local = local_adapters_dir(home, run_id)
        if (local / "adapters.safetensors").is_file():
            return local
        raise LaunchFailed(f"Cannot resume run {run_id}: its adapters are not on this computer and could not be "
                           f"copied from its head node ({exc}).") from None


__all__ = [
    "CHECK_SCRIPT",
    "CORRAL_FLAGS",
    "LORA_KIND",
    "LoraPlan",
    "NodeCheck",
    "RESUME_DIR",
    "check_local_mlx_lm",
    "check_problems",
    "config_kind",
    "estimate_bytes",
    "lora_settings",
    "parse_check",
    "plan_lora",
    "prepare_lora_nodes",
    "previous_adapters",
    "previous_lora_flags",
    "raise_node_problems",
]
