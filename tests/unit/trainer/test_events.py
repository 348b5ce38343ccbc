"""The log-line protocol: every event round-trips, and anything else becomes a RawLine, never an error."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from trainer import events
from trainer.events import EVENT_TYPES, EventWriter, RawLine, StepEvent, parse_line, to_line

CASES = json.loads((Path(__file__).parent / "data" / "event_lines.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['type']}" for i, c in enumerate(CASES)])
def test_parse_line(case):
    parsed = parse_line(case["line"])
    assert type(parsed).__name__ == case["type"]
    for name, value in case["fields"].items():
        assert getattr(parsed, name) == value
    if isinstance(parsed, RawLine):
        assert parsed.text == case["line"].rstrip("\r\n")


def _example(cls):
    values = {"int": 3, "float": 1.5, "str": "x", "dict[str, Any] | None": {"a": 1}}
    example = {}
    for f in fields(cls):
        kind = str(f.type).replace(" | None", "")
        example[f.name] = values.get(kind, values.get(str(f.type), 7))
    return cls(**example)


@pytest.mark.parametrize("cls", list(EVENT_TYPES.values()), ids=list(EVENT_TYPES))
def test_every_event_round_trips(cls):
    event = _example(cls)
    line = to_line(event)
    assert line.startswith('{"event":"' + cls.event + '","rank":')
    assert "\n" not in line
    assert parse_line(line) == event
    assert parse_line(line + "\n") == event


def test_every_event_has_event_rank_and_time():
    for cls in EVENT_TYPES.values():
        names = [f.name for f in fields(cls)]
        assert names[:2] == ["rank", "time"], cls
        assert isinstance(cls.event, str)


def test_writer_flushes_one_line_per_event_and_can_be_disabled():
    stream = io.StringIO()
    writer = EventWriter(rank=1, stream=stream, clock=lambda: 42.0)
    writer.emit(StepEvent, step=1, loss=2.0)
    assert stream.getvalue() == '{"event":"step","rank":1,"time":42.0,"step":1,"loss":2.0,' + ",".join(
        f'"{name}":null' for name in [f.name for f in fields(StepEvent)][4:]
    ) + "}\n"
    EventWriter(rank=0, stream=None).emit(StepEvent, step=1, loss=2.0)  # off: nothing happens


def test_events_module_needs_only_the_standard_library():
    # The GUI imports trainer.events without MLX; trainer/__init__.py must stay empty for that.
    code = "import sys, trainer.events; print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'numpy', 'cluster', 'gui')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert Path(events.__file__).with_name("__init__.py").read_text() == ""


def test_the_documented_snippet_emits_events_corral_parses():
    doc = (Path(__file__).resolve().parents[3] / "docs" / "log-protocol.md").read_text()
    snippet = doc.split("## Emit events from your own script")[1].split("```python\n")[1].split("```")[0]
    assert len(snippet.strip().splitlines()) <= 15
    program = "def train_one_step():\n    return 1.25\n" + snippet
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    parsed = [parse_line(line) for line in result.stdout.splitlines()]
    assert [type(e).__name__ for e in parsed] == ["StartEvent"] + ["StepEvent"] * 100 + ["DoneEvent"]
    assert parsed[1].step == 1 and parsed[1].loss == 1.25 and parsed[1].rank == 0 and parsed[0].world_size == 1


def test_a_diverged_loss_written_by_python_json_parses_as_nan():
    # json.dumps writes NaN for a diverged loss; strict decoders refuse it, and the step must still show.
    line = to_line(StepEvent(rank=0, time=1.0, step=3, loss=float("nan")))
    assert '"loss":NaN' in line
    parsed = parse_line(line)
    assert isinstance(parsed, StepEvent) and parsed.step == 3 and parsed.loss != parsed.loss


def test_every_case_parses_the_same_with_the_standard_library_alone():
    # Nodes have no orjson: the stdlib decoder must give the same events as the one the controller uses.
    code = (
        "import sys, json; sys.modules['orjson'] = None\n"
        "from trainer.events import parse_line\n"
        "for case in json.load(sys.stdin): print(repr(parse_line(case['line'])))\n"
    )
    cases_text = (Path(__file__).parent / "data" / "event_lines.json").read_text()
    without = subprocess.run([sys.executable, "-c", code], input=cases_text, capture_output=True, text=True, check=True)
    assert without.stdout.splitlines() == [repr(parse_line(case["line"])) for case in CASES]
