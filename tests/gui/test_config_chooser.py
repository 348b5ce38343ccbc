"""The dashboard's "what to train" control: the bundled model or a training config file, read as the trainer reads it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtCore import QUrl

import gui.dashboard.adapters_line as adapters_module
import gui.dashboard.config_chooser as chooser_module
import gui.messages as messages_module
from gui.dashboard import Dashboard
from gui.dashboard.config_chooser import (
    BUNDLED_TEXT,
    CHOOSE_TEXT,
    MAX_RECENT,
    ConfigChooser,
    load_recent,
    summarize_config,
)
from gui.theme import status_color
from tests.gui.fakes import RECORDED_3_RANKS, FakeRunApi, SyntheticRun, recorded_lines, synthetic_stream

ROOT = Path(__file__).resolve().parents[2]
NODES_3 = ["node1", "node2", "node3"]

LORA_TOML = """\
# a LoRA fine-tune of a local model
kind = "lora"
model = "tiny-llama"      # a folder next to this file
data = "data"
iters = 40
batch_size = 2
"""


def write_lora(folder: Path, name: str = "my-lora.toml", text: str = LORA_TOML) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny-llama").mkdir(exist_ok=True)
    (folder / "tiny-llama" / "config.json").write_text('{"model_type": "llama"}')
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def crashes_fail_the_test(monkeypatch):
    """A bug would open a modal crash dialog, which waits forever offscreen: fail the test with its text instead."""
    crashes: list[str] = []
    monkeypatch.setattr(messages_module, "crash_dialog", lambda parent, summary, details: crashes.append(details))
    yield
    assert not crashes, crashes[0]


@pytest.fixture
def open_dashboard(qtbot, bridge, home):
    opened = []

    def make(api: FakeRunApi) -> Dashboard:
        dashboard = Dashboard(bridge, home, run_api=api)
        dashboard.resize(1300, 900)
        qtbot.addWidget(dashboard)
        dashboard.show()
        qtbot.waitUntil(lambda: dashboard.refresh_job is not None and not dashboard.refresh_job.running)
        opened.append(dashboard)
        return dashboard

    yield make
    for dashboard in opened:
        dashboard.detach()


@pytest.fixture
def dialog_answers(monkeypatch):
    """What the file dialog answers next (an empty string: the user cancelled); the start folders it was opened in."""
    answers: list[str] = []
    asked: list[str] = []

    def answer(parent, start_dir: str) -> str:
        asked.append(start_dir)
        return answers.pop(0)

    monkeypatch.setattr(chooser_module, "ask_for_file", answer)
    return answers, asked


def items(chooser: ConfigChooser) -> list[str]:
    return [chooser.itemText(i) for i in range(chooser.count()) if chooser.itemText(i)]


# -- reading a config file -----------------------------------------------------------------------


def test_a_lora_config_says_its_model_resolved_like_the_trainer(tmp_path):
    path = write_lora(tmp_path / "proj")
    summary = summarize_config(path)
    assert summary.ok and summary.kind == "lora"
    # A relative model that is a folder next to the file follows the file, as trainer.lora.config resolves it.
    assert summary.model == str((tmp_path / "proj" / "tiny-llama").resolve())
    assert summary.describe() == (f"my-lora.toml: a LoRA fine-tune of {summary.model} with mlx-lm, 40 iterations.")


def test_the_bundled_examples_read_as_what_they_are():
    lora = summarize_config(ROOT / "resources" / "lora.toml")
    assert lora.ok and lora.kind == "lora" and lora.model == "mlx-community/Llama-3.2-1B-Instruct-4bit"
    assert lora.steps == 1000
    scratch = summarize_config(ROOT / "resources" / "trainer.toml")
    assert scratch.ok and scratch.kind == "scratch" and scratch.model is None
    assert scratch.describe().startswith("trainer.toml: corral's byte-level model, ")


@pytest.mark.parametrize(("text", "expected"), [
    (LORA_TOML.replace("batch_size", "batch_sise"),
     "my-lora.toml cannot be used for training: line 6: unknown setting 'batch_sise' (did you mean batch_size?)."),
    ('kind = "lora"\ndata = "data"\n',
     "my-lora.toml cannot be used for training: invalid LoRA config: model is required: a local model directory "
     "or a Hugging Face hub id."),
    ('kind = "qlora"\n', "my-lora.toml cannot be used for training: line 1: kind must be one of scratch, lora, "
                         "got 'qlora'."),
    ('[lora]\nkind = "lora"\n', "my-lora.toml cannot be used for training: line 1: sections are not supported; "
                                "the trainer config is flat key = value lines."),
    ("steps = 0\n", "my-lora.toml cannot be used for training: invalid config: steps must be at least 1, got 0."),
], ids=["typo", "no-model", "bad-kind", "section", "invalid-value"])
def test_a_config_that_does_not_parse_is_one_sentence(tmp_path, text, expected):
    path = write_lora(tmp_path, text=text)
    summary = summarize_config(path)
    assert not summary.ok and summary.kind is None
    assert summary.problem.startswith(expected)
    assert summary.problem.endswith("Fix the file (corral reads it again when it is saved) or choose another one.")
    assert str(tmp_path) not in summary.problem  # the file is named by its name, its lines by number


def test_a_binary_or_missing_file_is_a_sentence_too(tmp_path):
    binary = tmp_path / "weights.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    assert summarize_config(binary).problem == ("weights.toml is not a text file; choose a training config (.toml) "
                                                "like resources/lora.toml.")
    gone = tmp_path / "gone.toml"
    assert summarize_config(gone).problem == (f"gone.toml is no longer at {tmp_path}; choose the file again where "
                                              "it is now, or another one.")


# -- the control ---------------------------------------------------------------------------------


def test_choosing_files_remembers_the_last_few(qtbot, tmp_path, dialog_answers):
    answers, asked = dialog_answers
    chooser = ConfigChooser()
    qtbot.addWidget(chooser)
    assert items(chooser) == [BUNDLED_TEXT, CHOOSE_TEXT] and chooser.config_file is None and chooser.can_start

    paths = [write_lora(tmp_path / f"p{i}", f"run{i}.toml") for i in range(MAX_RECENT + 1)]
    for path in paths:
        answers.append(str(path))
        chooser.pick(chooser.count() - 1)  # "Choose a config file…"
        assert chooser.config_file == path and chooser.summary.ok
    assert asked[0] == str(Path.home()) and asked[1] == str(paths[0].parent)  # the dialog opens where the last was
    newest_first = [p.name for p in reversed(paths)][:MAX_RECENT]
    assert items(chooser) == [BUNDLED_TEXT, *newest_first, CHOOSE_TEXT]

    # A new window (the next session) offers the same files; ones deleted meanwhile are left out.
    paths[-1].unlink()
    again = ConfigChooser()
    qtbot.addWidget(again)
    assert load_recent() == list(reversed(paths))[1:MAX_RECENT]
    assert items(again) == [BUNDLED_TEXT, *newest_first[1:], CHOOSE_TEXT]
    assert again.config_file is None  # the default stays the bundled model

    # Cancelling the dialog keeps what was chosen.
    again.pick(1)
    chosen = again.config_file
    answers.append("")
    again.pick(again.count() - 1)
    assert again.config_file == chosen and again.summary.path == chosen


def test_same_names_in_different_folders_are_told_apart(qtbot, tmp_path):
    chooser = ConfigChooser()
    qtbot.addWidget(chooser)
    chooser.choose_file(write_lora(tmp_path / "alpha", "lora.toml"))
    chooser.choose_file(write_lora(tmp_path / "beta", "lora.toml"))
    assert items(chooser) == [BUNDLED_TEXT, "beta/lora.toml", "alpha/lora.toml", CHOOSE_TEXT]


# -- on the dashboard ----------------------------------------------------------------------------


def test_start_trains_the_chosen_lora_config(qtbot, open_dashboard, tmp_path, dialog_answers):
    answers, _ = dialog_answers
    run = SyntheticRun(ranks=2, steps=10, ranks_per_node=1, slow_rank=None)
    api = FakeRunApi(start_lines=synthetic_stream(run), start_rank_nodes=run.rank_nodes())
    dashboard = open_dashboard(api)
    assert not dashboard.config_line.isVisible()
    assert "Start trains the bundled model" in dashboard.run_line.text()

    path = write_lora(tmp_path / "proj")
    answers.append(str(path))
    with qtbot.waitSignal(dashboard.config_chooser.choice_changed):
        dashboard.config_chooser.pick(dashboard.config_chooser.count() - 1)
    assert dashboard.config_line.isVisible()
    assert dashboard.config_line.text().startswith("Start trains my-lora.toml: a LoRA fine-tune of ")
    assert "Start trains my-lora.toml on" in dashboard.run_line.text()
    assert dashboard.start_action.isEnabled()

    dashboard.start_action.trigger()
    qtbot.waitUntil(lambda: dashboard.status is not None and dashboard.follow_job is None
                    and dashboard.status.state.is_over, timeout=10_000)
    request = api.started_requests[0]
    assert request.config_file == path and request.local is None
    assert request == api.TrainRequest(config_file=path)

    # Back to the bundled model: Start passes no config file.
    dashboard.config_chooser.pick(0)
    assert not dashboard.config_line.isVisible()
    dashboard.start_action.trigger()
    qtbot.waitUntil(lambda: len(api.started_requests) == 2, timeout=5_000)
    assert api.started_requests[1] == api.TrainRequest()


def test_an_invalid_config_blocks_start_until_the_file_is_fixed(qtbot, open_dashboard, tmp_path):
    api = FakeRunApi()
    dashboard = open_dashboard(api)
    path = write_lora(tmp_path, text=LORA_TOML.replace("lora_rank", "x").replace("iters", "iterz"))
    dashboard.config_chooser.choose_file(path)

    line = dashboard.config_line
    assert line.isVisible()
    assert line.text().startswith("my-lora.toml cannot be used for training: line 5: unknown setting 'iterz' "
                                  "(did you mean iters?).")
    assert line.styleSheet() == f"color: {status_color('fail')}"
    assert not dashboard.start_action.isEnabled()
    dashboard.start_run()  # the menu's Ctrl+R goes here directly: still nothing is launched
    assert api.started_requests == []

    # Saving the fixed file is enough: the chooser watches it.
    path.write_text(LORA_TOML)
    qtbot.waitUntil(lambda: dashboard.start_action.isEnabled(), timeout=5_000)
    assert line.text().startswith("Start trains my-lora.toml: a LoRA fine-tune of ")
    assert line.styleSheet() == f"color: {status_color('muted')}"


def test_a_config_broken_after_choosing_is_read_again_at_start(qtbot, open_dashboard, tmp_path, monkeypatch):
    monkeypatch.setattr(chooser_module, "RETRY_INTERVAL_MS", 50)
    run = SyntheticRun(ranks=2, steps=5, ranks_per_node=1, slow_rank=None)
    api = FakeRunApi(start_lines=synthetic_stream(run), start_rank_nodes=run.rank_nodes())
    dashboard = open_dashboard(api)
    path = write_lora(tmp_path)
    dashboard.config_chooser.choose_file(path)
    assert dashboard.start_action.isEnabled()
    # Stop watching, as if the change were missed (a network drive); Start must still read the file first.
    dashboard.config_chooser._watcher.removePaths([str(path)])
    path.write_text('kind = "lora"\n')
    dashboard.start_action.trigger()
    assert api.started_requests == [] and dashboard.start_job is None
    assert "model is required" in dashboard.config_line.text()
    assert not dashboard.start_action.isEnabled()
    # Fixed while still unwatched: the slow re-read notices, Start comes back and launches the fixed file.
    dashboard.config_chooser._watcher.removePaths(dashboard.config_chooser._watcher.files() or [str(path)])
    path.write_text(LORA_TOML)
    qtbot.waitUntil(lambda: dashboard.start_action.isEnabled(), timeout=5_000)
    dashboard.start_action.trigger()
    qtbot.waitUntil(lambda: bool(api.started_requests), timeout=5_000)
    assert api.started_requests == [api.TrainRequest(config_file=path)]


def test_the_demo_always_trains_the_bundled_model(qtbot, open_dashboard, tmp_path):
    run = SyntheticRun(ranks=2, steps=5, ranks_per_node=2, slow_rank=None)
    api = FakeRunApi(start_lines=synthetic_stream(run), start_rank_nodes=["local", "local"])
    dashboard = open_dashboard(api)
    dashboard.config_chooser.choose_file(write_lora(tmp_path))
    dashboard.start_demo()
    qtbot.waitUntil(lambda: bool(api.started_requests), timeout=5_000)
    assert api.started_requests[0] == api.TrainRequest(local=True)


def test_a_finished_lora_run_shows_where_its_adapters_are(qtbot, open_dashboard, tmp_path, monkeypatch):
    opened: list[QUrl] = []
    monkeypatch.setattr(adapters_module, "open_url", lambda url: opened.append(url) or True)
    adapters = tmp_path / "home" / "runs" / "run-lora" / "adapters"
    adapters.mkdir(parents=True)
    api = FakeRunApi()
    api.add_finished("run-plain", recorded_lines(RECORDED_3_RANKS), NODES_3)
    record = api.add_finished("run-lora", recorded_lines(RECORDED_3_RANKS), NODES_3)
    api.runs["run-lora"].record = replace(record, kind="lora", adapter_dir="adapters", adapters_path=str(adapters))
    dashboard = open_dashboard(api)
    qtbot.waitUntil(lambda: dashboard.record is not None and dashboard.record.id == "run-lora"
                    and dashboard.follow_job is None, timeout=10_000)
    dashboard._redraw(force=True)

    line = dashboard.adapters_line
    assert line.isVisible() and line.label.text() == f"Adapters saved to {adapters}"
    assert line.open_button.isEnabled()
    line.open_button.click()
    assert opened == [QUrl.fromLocalFile(str(adapters))]

    # A run without adapters hides the line.
    dashboard.run_selector.choose("run-plain")
    dashboard._redraw(force=True)
    assert not line.isVisible()

    # Adapters moved away since: said so, nothing opened.
    dashboard.run_selector.choose("run-lora")
    dashboard._redraw(force=True)
    adapters.rename(tmp_path / "moved")
    line.open_button.click()
    assert opened == [QUrl.fromLocalFile(str(adapters))]
    assert line.label.text() == f"Adapters saved to {adapters} (no longer there)"
    assert not line.open_button.isEnabled()
