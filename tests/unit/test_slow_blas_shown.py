"""A rank whose MLX multiplies on the slow bundled BLAS is called out, with the fix, in the CLI and the log pane."""

from __future__ import annotations

import pytest

from cluster.cli_train import format_event_line
from cluster.run_monitor import FollowedLine
from trainer.events import StartEvent, to_line


def start_line(blas: str | None, setting: str | None = None) -> FollowedLine:
    config = None if setting is None else {"steps": 10, "blas": setting}
    event = StartEvent(rank=1, time=1.0, world_size=2, host="node2", blas=blas, config=config)
    return FollowedLine(rank=1, stream="stdout", text=to_line(event), event=event, received_time=1.0)


@pytest.fixture
def describe():
    pytest.importorskip("PySide6")
    from gui.dashboard.log_pane import describe

    return describe


@pytest.mark.parametrize("setting", [None, "auto"])
def test_the_bundled_blas_is_a_warning_with_the_fix(describe, setting):
    line = start_line("bundled", setting)
    assert format_event_line(line).startswith(" rank 1 | start: warning: MLX multiplies matrices with the mlx-cpu wheel's")
    assert "sudo apt install libopenblas0" in format_event_line(line)
    shown = describe(line)
    assert shown.startswith("started on node2: world size 2\nWARNING: MLX multiplies") and "libopenblas0" in shown


@pytest.mark.parametrize(("blas", "setting"), [
    ("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so", "auto"), ("native", "auto"), (None, None),
    ("bundled", "bundled"),  # asked for: installing OpenBLAS would change nothing
])
def test_a_fast_unknown_or_chosen_blas_says_nothing(describe, blas, setting):
    line = start_line(blas, setting)
    assert format_event_line(line) == " rank 1 | start"  # right-aligned rank column
    assert describe(line) == "started on node2: world size 2"
