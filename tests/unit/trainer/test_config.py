"""TrainConfig: the default file, flags generated from the fields, and errors that name the file, line or flag."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from trainer.config import ConfigError, TrainConfig, build_parser, parse_args, peek_setting, read_config_file

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_FILE = ROOT / "resources" / "trainer.toml"


def test_default_file_sets_every_field_to_the_dataclass_default():
    values = read_config_file(DEFAULT_FILE)
    assert set(values) == {f.name for f in fields(TrainConfig)}
    assert parse_args(["--config", str(DEFAULT_FILE)]).config == TrainConfig()


def test_default_file_is_valid_toml_where_tomllib_exists():
    tomllib = pytest.importorskip("tomllib")
    assert tomllib.loads(DEFAULT_FILE.read_text()) == read_config_file(DEFAULT_FILE)


def test_every_field_has_a_flag_with_help():
    parser = build_parser()
    help_text = parser.format_help()
    for f in fields(TrainConfig):
        assert f"--{f.name}" in help_text
        assert f.metadata["help"]


FLAG_CASES = [
    (["--batch_size", "8"], {"batch_size": 8}),
    (["--batch-size", "8"], {"batch_size": 8}),
    (["--learning_rate", "1e-4", "--warmup_steps", "0"], {"learning_rate": 1e-4, "warmup_steps": 0}),
    (["--dtype", "bfloat16"], {"dtype": "bfloat16"}),
    (["--compile", "false"], {"compile": False}),
    (["--compile", "yes"], {"compile": True}),
    (["--data", "/data/chat.jsonl", "--resume", "ck"], {"data": "/data/chat.jsonl", "resume": "ck"}),
]


@pytest.mark.parametrize(("argv", "expected"), FLAG_CASES)
def test_flags_set_fields(argv, expected):
    config = parse_args(argv).config
    for name, value in expected.items():
        assert getattr(config, name) == value


FLAG_ERRORS = [
    (["--batch_size", "eight"], "invalid int value"),
    (["--dtype", "float16"], "invalid choice"),
    (["--compile", "maybe"], "expected true or false"),
    (["--bach_size", "8"], "unrecognized arguments"),
    (["--n_heads", "3"], "n_heads (3) must divide d_model (128)"),
    (["--val_fraction", "1.0"], "val_fraction must be in [0, 1)"),
    (["--steps", "0"], "steps must be at least 1"),
    # No abbreviations: --bla would load one BLAS before the full parse and record another (trainer/blas.py).
    (["--bla", "bundled"], "unrecognized arguments: --bla"),
]


@pytest.mark.parametrize(("argv", "message"), FLAG_ERRORS)
def test_bad_flags_raise_config_error(argv, message):
    with pytest.raises(ConfigError, match=None) as caught:
        parse_args(argv)
    assert message in str(caught.value)


def test_a_setting_read_before_the_full_parse_is_a_config_error_when_malformed(tmp_path):
    # trainer/__main__.py reads kind and blas first: their errors must be events too, not argparse exits.
    with pytest.raises(ConfigError, match="command line: argument --blas: expected one argument"):
        peek_setting(["--blas"], "blas")
    path = tmp_path / "run.toml"
    path.write_text('steps = 3\nblas = "/opt/lib/libopenblas.so"   # ours\n')
    assert peek_setting(["--config", str(path)], "blas") == ("/opt/lib/libopenblas.so", f"{path}:2")
    assert peek_setting(["--config", str(path), "--blas", "bundled"], "blas") == ("bundled", "command line")
    assert peek_setting(["--config", str(path)], "kind") is None


def test_flags_override_the_file_and_the_file_overrides_defaults(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('steps = 7   # short\nbatch_size = 2\ndata = "corpus.txt"\ncheckpoint_dir = \'a # b\'\n')
    config = parse_args(["--config", str(path), "--batch_size", "3"]).config
    assert (config.steps, config.batch_size) == (7, 3)
    assert config.data == str(tmp_path / "corpus.txt")  # relative to the config file
    assert config.checkpoint_dir == "a # b"
    assert config.n_layers == TrainConfig().n_layers


FILE_ERRORS = [
    ("bach_size = 8\n", ":1: unknown setting 'bach_size' (did you mean batch_size?)"),
    ("\n\nsteps = many\n", ":3: steps: "),
    ("steps = 1.5\n", ":1: steps expects int, got 1.5"),
    ("dtype = \"float16\"\n", ":1: dtype must be one of float32, bfloat16"),
    ("[model]\n", ":1: sections are not supported"),
    ("steps 5\n", ":1: expected key = value"),
    ("steps = 5 6\n", ":1: steps: unexpected '6' after the value"),
    ('blas = "auto"\nsteps = 3\nblas = "bundled"\n', ":3: blas is already set on line 1; keep one of the two"),
]


@pytest.mark.parametrize(("text", "message"), FILE_ERRORS)
def test_file_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert f"{path}{message}" in str(caught.value)


def test_all_file_problems_are_reported_at_once(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("stpes = 1\nbatch_size = \"big\"\n")
    message = str(pytest.raises(ConfigError, read_config_file, path).value)
    assert f"{path}:1:" in message and f"{path}:2:" in message


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        parse_args(["--config", str(tmp_path / "nope.toml")])
