"""``corral train / logs / attach / status / stop / runs / demo``: terminal front ends over cluster.launch."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from cluster.home import CorralHome
    from cluster.run_monitor import FollowedLine
    from cluster.run_status import RunStatus
    from cluster.runs import RunRecord

EXIT_OK, EXIT_FAILED = 0, 1
REDRAW_INTERVAL_S = 0.2
PLAIN_PROGRESS_INTERVAL_S = 5.0

# The demo: the bundled model, sized to finish in about a minute on a laptop CPU with 2 ranks. Measured on the
# 2-core x86 test VM: ~0.08 s a step, 600 steps in 50 s (700 took 58 s); the loss falls from 5.8 to ~0.35
# (eval: 1.90 at step 100, 0.36 at 600).
DEMO_STEPS = 600
DEMO_CONFIG = f"""\
# corral demo: the bundled byte-level transformer on the bundled stories, 2 ranks on this computer.
n_layers = 2
d_model = 64
n_heads = 4
seq_len = 64
steps = {DEMO_STEPS}
batch_size = 8
warmup_steps = 20
eval_every = 100
checkpoint_every = 0
node_every_s = 5.0
"""


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's private type
    """The run commands' parsers (called from cluster.cli.build_parser)."""
    train = commands.add_parser("train", help="start training on the cluster and show its progress")
    train.add_argument("--config", metavar="FILE", help="the trainer's config (flat TOML; default: its defaults)")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override one trainer setting, e.g. --set steps=50 (repeatable)")
    train.add_argument("--backend", choices=["mpi", "ring"], default="mpi", help="mpi: mpirun (default); ring: "
                       "mlx.launch --backend ring")
    train.add_argument("--nodes", nargs="+", metavar="NAME", help="only these nodes (default: all)")
    train.add_argument("--detach", action="store_true", help="start it and return; `corral attach` shows it later")
    train.add_argument("--resume", metavar="RUN", help="continue a run from its last checkpoint")
    train.add_argument("--without", nargs="+", default=[], metavar="NAME", help="with --resume: leave these nodes out "
                       "(gradient accumulation grows to keep the effective batch)")
    train.add_argument("--local", action="store_true", help="run on this computer only, whatever the cluster")
    train.add_argument("--script", nargs=argparse.REMAINDER, metavar="FILE [ARGS]",
                       help="run your own program (in the project folder) on every rank instead of the trainer; "
                       "everything after it goes to the program")

    logs = commands.add_parser("logs", help="print a run's output, each rank's lines whole")
    logs.add_argument("run", nargs="?", metavar="RUN", help="run id or a unique prefix (default: the newest)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    logs.add_argument("--json", action="store_true", help="one JSON object per line")

    attach = commands.add_parser("attach", help="replay a run's history, then show it live (Ctrl-C detaches)")
    attach.add_argument("run", nargs="?", metavar="RUN")

    status = commands.add_parser("status", help="a run's state, step, each rank's loss, elapsed time and ETA")
    status.add_argument("run", nargs="?", metavar="RUN")
    status.add_argument("--json", action="store_true")

    stop = commands.add_parser("stop", help="stop a run on every node")
    stop.add_argument("run", nargs="?", metavar="RUN")

    runs = commands.add_parser("runs", help="list the runs, newest first")
    runs.add_argument("--json", action="store_true")

    adapters = commands.add_parser(
        "adapters", help="copy a LoRA run's adapters (its newest saved ones, even mid-run) to this computer")
    adapters.add_argument("run", nargs="?", metavar="RUN")

    demo = commands.add_parser("demo", help="train the bundled model on this computer (about a minute)")
    demo.add_argument("--steps", type=int, help=f"optimizer steps (default {DEMO_STEPS})")


def run_train_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from cluster.launch import TrainRequest, start_run

    script, script_args = None, ()
    if args.script:
        script, script_args = args.script[0], tuple(args.script[1:])
    request = TrainRequest(
        config_file=Path(args.config) if args.config else None,
        trainer_args=trainer_flags(args.set),
        backend=args.backend, nodes=tuple(args.nodes or ()), script=script, script_args=script_args,
        resume=args.resume, without=tuple(args.without), local=True if args.local else None,
    )
    record = asyncio.run(start_run(home, request, on_progress=lambda p: print(f"{p.message}…", file=sys.stderr)))
    where = "this computer" if record.local else f"{len(set(record.nodes))} node(s), head {record.head}"
    print(f"Run {record.id}: {record.world_size} ranks on {where}.")
    if args.detach:
        print(f"Detached. `corral attach {record.id}` shows it, `corral stop {record.id}` stops it.")
        return EXIT_OK
    return attach(home, record.id)


def trainer_flags(settings: Sequence[str]) -> tuple[str, ...]:
    from cluster.errors import ClusterError

    flags: list[str] = []
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not name.strip():
            raise ClusterError(f"--set {setting!r}: write FIELD=VALUE, e.g. --set steps=50.")
        flags += [f"--{name.strip()}", value]
    return tuple(flags)


def run_demo_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.launch import TrainRequest, start_run

    flags = ("--steps", str(args.steps)) if args.steps else ()
    request = TrainRequest(config_text=DEMO_CONFIG, trainer_args=flags, local=True)
    print("corral demo: training the bundled model with 2 ranks on this computer.", file=sys.stderr)
    record = asyncio.run(start_run(home, request))
    print(f"Run {record.id} started; Ctrl-C detaches (`corral stop {record.id}` stops it).")
    return attach(home, record.id)


def attach(home: CorralHome, run_id: str) -> int:
    """Replay and follow with a progress bar; non-event lines pass through. Ctrl-C detaches."""
    import asyncio

    view = ProgressView(sys.stderr, live=sys.stderr.isatty())
    view.bind(run_id)

    def on_line(line: FollowedLine) -> None:
        from trainer.events import ErrorEvent, RawLine

        if isinstance(line.event, RawLine):
            view.above(format_text_line(line))
        elif isinstance(line.event, ErrorEvent):
            view.above(f"rank {line.event.rank}: error: {line.event.message}")

    try:
        status = asyncio.run(_follow_with_view(home, run_id, on_line, view))
    except KeyboardInterrupt:
        view.close()
        print(f"\nDetached; run {run_id} goes on. `corral attach {run_id}` shows it again, "
              f"`corral stop {run_id}` stops it.", file=sys.stderr)
        return EXIT_OK
    view.close()
    print(summary_line(run_id, status))
    print_adapters(home, run_id)
    return EXIT_OK if status.state.value == "finished" else EXIT_FAILED


def print_adapters(home: CorralHome, run_id: str) -> None:
    """Where a LoRA run's adapters were copied on this computer (or why not yet)."""
    from cluster.runs import load_record

    record = load_record(home, run_id)
    if record.kind != "lora":
        return
    if record.adapters_path:
        print(f"Adapters: {record.adapters_path}")
    elif record.state_is_over():
        print(f"Adapters: not copied yet; `corral status {run_id}` copies them from {record.head}.", file=sys.stderr)


async def _follow_with_view(home: CorralHome, run_id: str, on_line, view: ProgressView) -> RunStatus:  # noqa: ANN001
    """follow_run with the view redrawn from the events as they arrive."""
    import asyncio

    from cluster.launch import follow_run
    from cluster.run_status import RunStatus
    from trainer.events import RawLine

    shadow = RunStatus(rank_nodes=[])
    view.status = shadow

    def both(line: FollowedLine) -> None:
        if not isinstance(line.event, RawLine):
            shadow.apply(line.event)
        on_line(line)

    task = asyncio.ensure_future(follow_run(home, run_id, on_line=both))
    while not task.done():
        await asyncio.wait({task}, timeout=REDRAW_INTERVAL_S)
        view.draw()
    return task.result()


class ProgressView:
    """A progress bar with step, loss and ETA on stderr: redrawn in place on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out = out
        self.live = live
        self.status: RunStatus | None = None
        self.run_id = ""
        self._drawn = False
        self._last_plain = 0.0
        self._last_step = -1

    def bind(self, run_id: str) -> None:
        self.run_id = run_id

    def line(self) -> str:
        status = self.status
        now = time.time()
        if status is None or not status.ranks:
            return f"{self.run_id}: starting…"
        total = status.total_steps or 0
        step = status.step
        width = 24
        filled = int(width * step / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        losses = [r.loss for r in status.ranks.values() if r.loss is not None]
        loss = f"loss {sum(losses) / len(losses):.3f}" if losses else "loss –"
        eta = status.eta_s(now)
        elapsed = status.elapsed_s(now)
        parts = [f"[{bar}] step {step}/{total or '?'}", loss, f"ETA {format_duration(eta)}",
                 f"elapsed {format_duration(elapsed)}"]
        return "  ".join(parts)

    def draw(self) -> None:
        if self.live:
            self.out.write("\r\x1b[2K" + self.line())
            self.out.flush()
            self._drawn = True
            return
        now = time.monotonic()
        step = self.status.step if self.status else 0
        if step != self._last_step and now - self._last_plain >= PLAIN_PROGRESS_INTERVAL_S:
            self._last_plain, self._last_step = now, step
            print(self.line(), file=self.out, flush=True)

    def above(self, text: str) -> None:
        """A line printed above the bar (the bar is redrawn after it)."""
        if self.live and self._drawn:
            self.out.write("\r\x1b[2K")
        print(text, file=sys.stdout, flush=True)
        if self.live and self._drawn:
            self.draw()

    def close(self) -> None:
        if self.live and self._drawn:
            self.out.write("\r\x1b[2K" + self.line() + "\n")
            self.out.flush()
        elif not self.live and self.status is not None and self.status.ranks:
            print(self.line(), file=self.out, flush=True)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_text_line(line: FollowedLine) -> str:
    who = "mpirun" if line.rank is None else f"rank {line.rank}"
    return f"{who:>7} | {line.text}"


def format_event_line(line: FollowedLine) -> str:
    from trainer.blas import slow_blas_warning
    from trainer.events import CheckpointEvent, DoneEvent, ErrorEvent, EvalEvent, RawLine, StartEvent, StepEvent

    event = line.event
    if isinstance(event, RawLine):
        return format_text_line(line)
    who = f"rank {line.rank if line.rank is not None else event.rank}"
    if isinstance(event, StepEvent):
        speed = f"  {event.tokens_per_s:,.0f} tok/s" if event.tokens_per_s else ""
        return f"{who:>7} | step {event.step}  loss {event.loss:.4f}{speed}"
    if isinstance(event, EvalEvent):
        return f"{who:>7} | eval after step {event.step}  val_loss {event.val_loss:.4f}"
    if isinstance(event, CheckpointEvent):
        return f"{who:>7} | checkpoint step {event.step}: {event.path}"
    if isinstance(event, DoneEvent):
        return f"{who:>7} | done at step {event.step}"
    if isinstance(event, ErrorEvent):
        return f"{who:>7} | error: {event.message}"
    if isinstance(event, StartEvent):
        warning = slow_blas_warning(event.blas, (event.config or {}).get("blas"))
        return f"{who:>7} | start: warning: {warning}" if warning else f"{who:>7} | start"
    return f"{who:>7} | {event.event}"


def line_json(line: FollowedLine) -> str:
    from trainer.events import RawLine

    event = None if isinstance(line.event, RawLine) else json.loads(line.text)
    return json.dumps({"rank": line.rank, "stream": line.stream, "received_time": line.received_time,
                       "event": event, "text": line.text})


def run_logs_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.errors import ClusterError
    from cluster.launch import follow_run, run_status
    from cluster.run_follow import replay_mirror
    from cluster.run_monitor import RunMonitor
    from cluster.run_status import RunStatus
    from cluster.runs import mirror_path, resolve_run

    record = resolve_run(home, args.run)

    def show(line: FollowedLine) -> None:
        print(line_json(line) if args.json else format_event_line(line), flush=args.follow)

    if args.follow:
        try:
            asyncio.run(follow_run(home, record.id, on_line=show))
        except KeyboardInterrupt:
            return 130
        return EXIT_OK
    try:
        asyncio.run(run_status(home, record.id))  # brings the local copy up to date when the head answers
    except ClusterError as exc:
        print(f"corral: {exc} (showing what this computer has)", file=sys.stderr)
    monitor = RunMonitor(RunStatus(rank_nodes=list(record.rank_nodes)), backend=record.backend)
    replay_mirror(mirror_path(home, record.id), monitor, show, writable=False)
    for line in monitor.flush(replayed=True):
        show(line)
    return EXIT_OK


def run_attach_command(home: CorralHome, args: argparse.Namespace) -> int:
    from cluster.runs import resolve_run

    return attach(home, resolve_run(home, args.run).id)


def status_json(record: RunRecord, status: RunStatus) -> dict:
    now = time.time()
    return {
        "id": record.id, "state": status.state.value, "failure": status.failure, "step": status.step,
        "total_steps": status.total_steps, "world_size": status.world_size or record.world_size,
        "elapsed_s": status.elapsed_s(now), "eta_s": status.eta_s(now), "head": record.head,
        "unreachable": list(record.unreachable), "kind": record.kind or "scratch", "adapters": record.adapters_path,
        "ranks": [{"rank": r.rank, "node": r.node, "step": r.step, "loss": r.loss, "val_loss": r.val_loss,
                   "done": r.done, "error": r.error} for r in sorted(status.ranks.values(), key=lambda r: r.rank)],
    }


def run_status_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.launch import run_status
    from cluster.runs import load_record, resolve_run
    from cluster.table import format_table

    record = resolve_run(home, args.run)
    status = asyncio.run(run_status(home, record.id))
    record = load_record(home, record.id)
    data = status_json(record, status)
    if args.json:
        print(json.dumps(data, indent=1))
        return EXIT_OK
    print(summary_line(record.id, status))
    if data["ranks"]:
        print(format_table(["RANK", "NODE", "STEP", "LOSS"],
                           [[r["rank"], r["node"] or "?", r["step"], "–" if r["loss"] is None else f"{r['loss']:.4f}"]
                            for r in data["ranks"]]))
    if record.unreachable:
        print(f"Not yet cleared (unreachable): {', '.join(record.unreachable)}.")
    print_adapters(home, record.id)
    return EXIT_OK


def summary_line(run_id: str, status: RunStatus) -> str:
    now = time.time()
    total = f"/{status.total_steps}" if status.total_steps else ""
    text = (f"Run {run_id}: {status.state.value}, step {status.step}{total}, elapsed "
            f"{format_duration(status.elapsed_s(now))}")
    eta = status.eta_s(now)
    if eta is not None:
        text += f", ETA {format_duration(eta)}"
    if status.failure:
        text += f". {status.failure}"
    return text


def run_stop_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.launch import stop_run
    from cluster.runs import resolve_run

    record = resolve_run(home, args.run)
    report = asyncio.run(stop_run(home, record.id))
    print(report.message)
    for node, why in report.unreachable.items():
        print(f"corral: {node}: {why}", file=sys.stderr)
    return EXIT_OK if report.complete else EXIT_FAILED


def run_adapters_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.adapters import fetch_adapters
    from cluster.runs import resolve_run

    record = resolve_run(home, args.run)
    path = asyncio.run(fetch_adapters(home, record.id))
    print(f"Adapters of run {record.id}: {path}")
    print(f"Load them with mlx-lm: mlx_lm.load(MODEL, adapter_path={str(path)!r})")
    return EXIT_OK


def run_runs_command(home: CorralHome, args: argparse.Namespace) -> int:
    import asyncio

    from cluster.run_follow import refresh_live_runs
    from cluster.table import format_table

    # A live run's record is only as fresh as its last follower: ask the heads of live runs first.
    records = asyncio.run(refresh_live_runs(home))
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=1))
        return EXIT_OK
    if not records:
        print("No runs yet: `corral train` starts one (`corral demo` runs one on this computer).")
        return EXIT_OK
    rows = []
    with_adapters = any(r.kind == "lora" for r in records)
    for r in records:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created))
        step = "–" if r.step is None else f"{r.step}/{r.total_steps or '?'}"
        where = "local" if r.local else ",".join(dict.fromkeys(r.nodes))
        program = "trainer" if r.program[2:4] == ("-m", "trainer") else " ".join(r.program[2:])[:30]
        if r.kind == "lora":
            program = "trainer (lora)"
        rows.append([r.id, started, r.state, step, r.world_size, where, program])
        if with_adapters:
            rows[-1].append(r.adapters_path or "–")
    headers = ["RUN", "STARTED", "STATE", "STEP", "RANKS", "NODES", "PROGRAM"] + (["ADAPTERS"] if with_adapters else [])
    print(format_table(headers, rows))
    return EXIT_OK
