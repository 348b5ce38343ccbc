"""LoraConfig: kind dispatch, the example file, flags, and errors that name the file, line or flag."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from trainer.config import ConfigError, config_kind, parse_any_args, parse_args, read_config_file
from trainer.lora.config import LoraConfig, build_lora_parser, parse_lora_args

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "resources" / "lora.toml"


def write(tmp_path: Path, text: str, name: str = "lora.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_example_file_sets_every_field_and_reads_like_toml():
    values = read_config_file(EXAMPLE, LoraConfig)
    assert set(values) == {f.name for f in fields(LoraConfig)}
    tomllib = pytest.importorskip("tomllib")
    expected = tomllib.loads(EXAMPLE.read_text())
    assert expected.pop("kind") == "lora"
    expected["data"] = str((EXAMPLE.parent / expected["data"]).resolve())  # relative to the file
    assert expected == values


def test_example_file_is_the_defaults_apart_from_model_and_data():
    config = parse_any_args(["--config", str(EXAMPLE)]).config
    assert isinstance(config, LoraConfig)
    assert config == LoraConfig(model=config.model, data=config.data)


KIND_CASES = [
    ("", [], "scratch"),
    ('kind = "lora"\n', [], "lora"),
    ("kind = 'scratch'  # the default\n", [], "scratch"),
    ('kind = "lora"\n', ["--kind", "scratch"], "scratch"),  # the flag wins
    ("steps = 3\n", ["--kind", "lora"], "lora"),
]


@pytest.mark.parametrize(("text", "flags", "kind"), KIND_CASES)
def test_config_kind(tmp_path, text, flags, kind):
    assert config_kind(["--config", str(write(tmp_path, text)), *flags]) == kind


KIND_ERRORS = [
    ('kind = "lorra"\n', [], 'lora.toml:1: kind must be one of scratch, lora, got \'lorra\''),
    ("kind = lora\n", [], "lora.toml:1: kind:"),
    ("", ["--kind", "qlora"], "command line: kind must be one of scratch, lora, got 'qlora'"),
]


@pytest.mark.parametrize(("text", "flags", "message"), KIND_ERRORS)
def test_bad_kind_is_a_config_error(tmp_path, text, flags, message):
    with pytest.raises(ConfigError) as caught:
        config_kind(["--config", str(write(tmp_path, text)), *flags])
    assert message in str(caught.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        config_kind(["--config", str(tmp_path / "absent.toml")])


def test_scratch_parse_args_refuses_a_lora_config(tmp_path):
    path = write(tmp_path, 'kind = "lora"\nmodel = "m"\ndata = "d"\n')
    with pytest.raises(ConfigError, match="parse_any_args"):
        parse_args(["--config", str(path)])


def test_lora_keys_in_a_scratch_config_point_to_kind(tmp_path):
    path = write(tmp_path, "lora_rank = 4\nbatch_sise = 2\n")
    with pytest.raises(ConfigError) as caught:
        parse_args(["--config", str(path)])
    message = str(caught.value)
    assert "lora.toml:1: unknown setting 'lora_rank' (a LoRA setting: add kind = \"lora\"" in message
    assert "lora.toml:2: unknown setting 'batch_sise' (did you mean batch_size?)" in message


def test_unknown_lora_key_gets_did_you_mean_with_file_and_line(tmp_path):
    path = write(tmp_path, 'kind = "lora"\nmodel = "m"\ndata = "d"\nlora_rnk = 4\n')
    with pytest.raises(ConfigError, match=r"lora.toml:4: unknown setting 'lora_rnk' \(did you mean lora_rank\?\)"):
        parse_any_args(["--config", str(path)])


def test_paths_follow_the_config_file(tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    path = write(tmp_path, 'kind = "lora"\nmodel = "models/tiny"\ndata = "data"\n')
    config = parse_lora_args(["--config", str(path)]).config
    assert config.data == str(tmp_path / "data")
    assert config.model == str(tmp_path / "models" / "tiny")  # a folder next to the config file
    assert config.adapter_dir == "adapters"  # relative to the working directory: the run's directory


def test_a_model_that_is_no_folder_next_to_the_file_stays_as_written(tmp_path):
    path = write(tmp_path, 'kind = "lora"\nmodel = "mlx-community/Tiny-4bit"\ndata = "d"\n')
    assert parse_lora_args(["--config", str(path)]).config.model == "mlx-community/Tiny-4bit"
    (tmp_path / "m").mkdir()
    # A --model flag is taken as written, never resolved against the file.
    assert parse_lora_args(["--config", str(path), "--model", "m"]).config.model == "m"


FLAG_CASES = [
    (["--lora_rank", "4"], {"lora_rank": 4}),
    (["--lora-rank", "4", "--lora-scale", "10"], {"lora_rank": 4, "lora_scale": 10.0}),
    (["--fine_tune_type", "dora"], {"fine_tune_type": "dora"}),
    (["--num_layers", "-1"], {"num_layers": -1}),
    (["--grad_checkpoint", "true", "--mask_prompt", "yes"], {"grad_checkpoint": True, "mask_prompt": True}),
    (["--resume_adapter_file", "a/adapters.safetensors"], {"resume_adapter_file": "a/adapters.safetensors"}),
    (["--steps_per_eval", "0", "--save_every", "0"], {"steps_per_eval": 0, "save_every": 0}),
]


@pytest.mark.parametrize(("argv", "expected"), FLAG_CASES)
def test_flags_set_fields(argv, expected):
    config = parse_lora_args(["--model", "m", "--data", "d", *argv]).config
    for name, value in expected.items():
        assert getattr(config, name) == value


FLAG_ERRORS = [
    ([], "model is required"),
    (["--model", "m"], "data is required"),
    (["--model", "m", "--data", "d", "--fine_tune_type", "full"], "invalid choice"),
    (["--model", "m", "--data", "d", "--lora_rank", "0"], "lora_rank must be at least 1, got 0"),
    (["--model", "m", "--data", "d", "--num_layers", "0"], "num_layers must be at least 1, or -1"),
    (["--model", "m", "--data", "d", "--val_batches", "-2"], "val_batches must be at least 1, or -1"),
    (["--model", "m", "--data", "d", "--lora_dropout", "1"], "lora_dropout must be in [0, 1)"),
    (["--model", "m", "--data", "d", "--iters", "0", "--batch_size", "0"], "iters must be at least 1, got 0; batch_size"),
    (["--model", "m", "--data", "d", "--learning_rate", "0"], "learning_rate must be positive"),
    (["--model", "m", "--data", "d", "--adapter_dir", ""], "adapter_dir must not be empty"),
    (["--model", "m", "--data", "d", "--warmup_steps", "3"], "unrecognized arguments: --warmup_steps 3"),
]


@pytest.mark.parametrize(("argv", "message"), FLAG_ERRORS)
def test_bad_settings_raise_config_error(argv, message):
    with pytest.raises(ConfigError) as caught:
        parse_lora_args(argv)
    assert message in str(caught.value)


def test_every_field_has_a_flag_with_help():
    help_text = build_lora_parser().format_help()
    for f in fields(LoraConfig):
        assert f"--{f.name}" in help_text and f.metadata["help"]


def run_module(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *argv], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_python_m_trainer_dispatches_on_kind_and_reports_errors_as_events(tmp_path):
    printed = run_module("--config", str(EXAMPLE), "--print-config", "--lora_rank", "4")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout)["kind"] == "lora" and json.loads(printed.stdout)["lora_rank"] == 4

    bad = run_module("--config", str(write(tmp_path, 'kind = "lora"\nmodel = "m"\ndata = "d"\nranks = 2\n')))
    assert bad.returncode == 2
    event = json.loads(bad.stdout)
    assert event["event"] == "error" and "lora.toml:4: unknown setting 'ranks'" in event["message"]

    bad_kind = run_module("--config", str(write(tmp_path, 'kind = "qlora"\n', "k.toml")))
    assert bad_kind.returncode == 2 and "kind must be one of scratch, lora" in json.loads(bad_kind.stdout)["message"]

    scratch = run_module("--print-config", "--steps", "3")
    assert scratch.returncode == 0 and json.loads(scratch.stdout)["steps"] == 3  # no kind: today's trainer


def test_config_and_plan_need_only_the_standard_library():
    # corral reads and plans a LoRA config on a computer without MLX or mlx-lm.
    code = (
        "import sys, trainer.config, trainer.lora.config, trainer.lora.plan, trainer.lora.data, trainer.lora.run; "
        "print(sorted(m for m in ('mlx', 'mlx_lm', 'numpy', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"
