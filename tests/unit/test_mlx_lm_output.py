"""mlx_lm.lora console lines → corral events: both formats, terminal redraws, and lines that must stay text."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.mlx_lm_output import parse_mlx_lm_line
from cluster.run_monitor import RunMonitor
from cluster.run_status import RunState, RunStatus
from trainer.events import CheckpointEvent, EvalEvent, RawLine, StartEvent, StepEvent, to_line

DATA = Path(__file__).parent / "data" / "mlx_lm_output"

# What each capture reports, in order: (event, step, value); value is the loss, val loss or checkpoint path.
# The 0.32 files are the output of mlx-lm 0.32.2's own TrainUI (mlx_lm/cli_ui.py) for a 30-step run, through a
# pipe and on a pseudo-terminal (progress bar redraws with \r and cursor codes in the same lines).
NEW_EXPECTED = [
    ("eval", 0, 6.931), ("eval", 9, 5.402), ("step", 10, 5.712), ("checkpoint", 15, "0000015_adapters.safetensors"),
    ("eval", 19, 3.117), ("step", 20, 3.902), ("eval", 29, 2.874), ("step", 30, 3.951),
    ("checkpoint", 30, "0000030_adapters.safetensors"),
]
# mlx-lm 0.31.3's `python -m mlx_lm lora` on tests/lora_fixtures.py's tiny model (stdout and stderr, with tqdm's
# "Calculating loss" bars), --steps-per-report 10 --steps-per-eval 10 --save-every 15.
OLD_EXPECTED = [
    ("eval", 0, 6.61), ("eval", 9, 3.753), ("step", 10, 4.539),
    ("checkpoint", 15, "adapters026/0000015_adapters.safetensors"), ("eval", 19, 4.003), ("step", 20, 3.817),
    ("eval", 29, 3.562), ("step", 30, 3.745), ("checkpoint", 30, "adapters026/0000030_adapters.safetensors"),
]


def summary(event) -> tuple:
    if isinstance(event, StepEvent):
        return ("step", event.step, event.loss)
    if isinstance(event, EvalEvent):
        return ("eval", event.step, event.val_loss)
    assert isinstance(event, CheckpointEvent)
    return ("checkpoint", event.step, event.path)


def parsed(name: str) -> list:
    text = (DATA / name).read_text(encoding="utf-8", errors="replace")
    events = [parse_mlx_lm_line(line, rank=0, time=5.0) for line in text.split("\n")]
    return [summary(event) for event in events if event is not None]


@pytest.mark.parametrize("name, expected", [
    ("mlx_lm_0.32_pipe.txt", NEW_EXPECTED),
    ("mlx_lm_0.32_terminal.txt", NEW_EXPECTED),
    ("mlx_lm_0.31_console.txt", OLD_EXPECTED),
])
def test_captured_output_gives_every_report_and_nothing_else(name, expected):
    assert parsed(name) == expected


def test_old_train_line_fills_every_field():
    line = ("Iter 10: Train loss 5.712, Learning Rate 1.000e-05, It/sec 3.215, Tokens/sec 1234.567, "
            "Trained Tokens 3840, Peak mem 0.153 GB")
    event = parse_mlx_lm_line(line, rank=1, time=7.0)
    assert event == StepEvent(rank=1, time=7.0, step=10, loss=5.712, loss_mean=5.712, learning_rate=1e-05,
                              step_time_s=pytest.approx(1 / 3.215), tokens_per_s=1234.567, tokens=3840,
                              mlx_peak_bytes=153_000_000)


def test_new_train_row_reads_thousands_separators_and_k_tokens():
    event = parse_mlx_lm_line("  1200    0.873 ▲    12,345    1,5k", rank=0, time=1.0)
    assert event is None  # "1,5k" is not what mlx-lm prints (one decimal, no comma)
    event = parse_mlx_lm_line("  1200    0.873 ▲    12,345    615.4k", rank=0, time=1.0)
    assert (event.step, event.loss, event.tokens_per_s, event.tokens) == (1200, 0.873, 12345.0, 615400)


def test_older_train_line_without_newer_fields_still_parses():
    event = parse_mlx_lm_line("Iter 20: Train loss 1.500, It/sec 2.000, Tokens/sec 300.000", rank=0, time=1.0)
    assert (event.step, event.loss, event.step_time_s, event.learning_rate) == (20, 1.5, 0.5, None)


@pytest.mark.parametrize("text", [
    "Iter 10: Train loss 5.712, Learning Ra",
    "Iter 10: Train loss 5.712, Learning Rate 1.000e-05, It/sec 3.215, Peak mem 0.15",
    "Iter 10: Train loss 5.712, Learning Rate 1.000e-05Iter 10: Train loss 5.712, Learning Rate 1.000e-05",
    "Iter 10: Train loss 5.712, Train loss 5.0",
    "Iter 10: Val loss 5.402, Val took",
    "Iter 1x: Val loss 5.402, Val took 0.1s",
    "Iter 15: Saved adapter weights to adapters/adapters.safetensors",
    "Iter 10: Train loss abc, It/sec 1.0",
    "  10    5.712 ▼    12,3",
    "  10    5.712     12,345      5.1k",
    "  10    val 5.4",
    "  10    val 5.402    0.12",
    "  save  adapters.safetensors",
    "  iter   train_loss     tok/s     tokens",
    "train ████░░░░  33% · 10/30",
    "10    5.712 ▼    12,345      5.1k",  # a row's indentation lost: a user's own print, not mlx-lm's table
    "Saved final weights to adapters/adapters.safetensors.",
    "Test loss 2.901, Test ppl 18.190.",
    "",
])
def test_partial_or_foreign_lines_are_not_events(text):
    assert parse_mlx_lm_line(text, rank=0, time=1.0) is None


def tagged(rank: int, text: str) -> str:
    return f"[1,{rank}]<stdout>:{text}"


def test_monitor_turns_console_lines_into_events_and_keeps_the_text():
    monitor = RunMonitor(RunStatus(rank_nodes=["n1", "n2"]), clock=lambda: 50.0)
    row = "\x1b[38;5;244m  10\x1b[0m    \x1b[1;32m5.712 ▼\x1b[0m    \x1b[1m12,345\x1b[0m    \x1b[38;5;244m  5.1k\x1b[0m"
    lines = monitor.feed(tagged(0, row)) + monitor.feed(tagged(1, "Node 1 of 2")) + monitor.feed("mpirun: Iter 3")
    assert [(l.rank, l.text, type(l.event)) for l in lines] == [
        (0, row, StepEvent), (1, "Node 1 of 2", RawLine), (None, "mpirun: Iter 3", RawLine)]
    assert lines[0].event.time == 50.0 and lines[0].event.loss == 5.712
    assert monitor.status.state is RunState.RUNNING and monitor.status.ranks[0].loss == 5.712


def test_console_reports_set_the_silence_threshold_by_their_gap():
    clock = [100.0]
    monitor = RunMonitor(RunStatus(rank_nodes=["n1"]), clock=lambda: clock[0])
    report = "Iter {}: Train loss 2.000, Learning Rate 1.000e-05, It/sec 1.000, Tokens/sec 10.000, Trained Tokens {}, Peak mem 0.1 GB"
    monitor.feed(tagged(0, report.format(10, 100)))
    clock[0] += 10
    monitor.feed(tagged(0, report.format(20, 200)))
    assert monitor.silence_threshold_s() == 40.0  # 4 × (10 steps × 1 s), not 4 × one step


def test_a_rank_that_emits_corral_events_keeps_its_mlx_lm_lines_as_text():
    monitor = RunMonitor(RunStatus(rank_nodes=["n1", "n2"]), clock=lambda: 1.0)
    start = to_line(StartEvent(rank=0, time=1.0, world_size=2))
    lines = monitor.feed(tagged(0, start)) + monitor.feed(tagged(0, "Iter 1: Val loss 6.931, Val took 0.512s"))
    lines += monitor.feed(tagged(1, "Iter 1: Val loss 6.931, Val took 0.512s"))
    assert [type(line.event) for line in lines] == [StartEvent, RawLine, EvalEvent]


def test_ring_lines_without_ranks_are_read_as_rank_0():
    monitor = RunMonitor(RunStatus(rank_nodes=["n1", "n2"]), backend="ring", clock=lambda: 1.0)
    (line,) = monitor.feed("  save  0000100_adapters.safetensors")
    assert line.rank == 0 and line.event == CheckpointEvent(rank=0, time=1.0, step=100,
                                                             path="0000100_adapters.safetensors")


def test_a_real_mlx_lm_run_under_mpirun_gives_every_step_and_eval():
    """mlx_lm's own console output (rank 0, on stderr) from a 30-step LoRA run on the 2-node test cluster."""
    monitor = RunMonitor(RunStatus(rank_nodes=["n1", "n2"]), clock=lambda: 1.0)
    lines = []
    for raw in (DATA / "mlx_lm_0.32_mpirun.log").read_text(encoding="utf-8").splitlines():
        lines += monitor.feed(raw)
    lines += monitor.flush()
    steps = [l.event for l in lines if isinstance(l.event, StepEvent)]
    evals = [l.event for l in lines if isinstance(l.event, EvalEvent)]
    assert [e.step for e in steps] == list(range(1, 31)) and {e.rank for e in steps} == {0}
    assert (steps[0].loss, steps[-1].loss) == (6.564, 4.059)
    assert [(e.step, e.val_loss) for e in evals] == [(0, 6.61), (9, 3.764), (19, 4.162), (29, 4.05)]
    assert all(isinstance(l.event, RawLine) for l in lines if "iter" in l.text or "█" in l.text)
