"""The LoRA launch's pure decisions: model source, node check output, problems named per node, resume flags."""

from __future__ import annotations

import pytest

from cluster.errors import LaunchFailed
from cluster.inventory import Node
from cluster.lora_launch import NodeCheck, check_problems, parse_check, previous_lora_flags
from cluster.models import ModelSource, resolve_model

GIB = 1024**3


def node(slots: int = 1) -> Node:
    return Node(name="mini", address="10.0.0.2", user="me", slots=slots)


def test_model_is_a_folder_beside_the_config_else_a_hub_id_else_an_error(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    local = resolve_model("m", tmp_path)
    assert local.local == (tmp_path / "m").resolve() and local.path_from_run_dir.startswith("../../models/m-")
    assert resolve_model("mlx-community/Tiny-4bit", tmp_path) == ModelSource("mlx-community/Tiny-4bit",
                                                                            hub_id="mlx-community/Tiny-4bit")
    with pytest.raises(LaunchFailed, match="The model path ./gone does not exist on this computer"):
        resolve_model("./gone", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LaunchFailed, match="has no config.json"):
        resolve_model("empty", tmp_path)


def test_the_key_changes_when_a_file_changes(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    before = ModelSource("x", local=tmp_path).key
    (tmp_path / "model.safetensors").write_bytes(b"1234")
    assert ModelSource("x", local=tmp_path).key != before


def test_check_output_from_linux_and_macos():
    linux = parse_check("CORRAL-MLX-LM yes\nCORRAL-MODEL no\nMemTotal: 16384 kB\nMemAvailable: 8192 kB\n")
    assert linux == NodeCheck(mlx_lm=True, model_present=False, available_bytes=8192 * 1024)
    mac = parse_check("CORRAL-MLX-LM no\nhw.memsize: 17179869184\nMach Virtual Memory Statistics: (page size of "
                      "16384 bytes)\nPages free: 1000.\nPages inactive: 500.\nPages speculative: 12.\n")
    assert mac == NodeCheck(mlx_lm=False, model_present=None, available_bytes=1512 * 16384)


def test_problems_name_the_node_and_the_next_step():
    problems = check_problems(node(slots=2), NodeCheck(False, False, 3 * GIB), venv_dir="corral/venvs/p",
                              per_rank_bytes=2 * GIB, model_dir="corral/models/m-1")
    assert problems[0].startswith("mini: mlx-lm is not installed in its venv (~/corral/venvs/p)")
    assert "corral env --requirements FILE" in problems[0]
    assert problems[1].startswith("mini: the model is missing after the copy (~/corral/models/m-1")
    assert problems[2].startswith("mini: 3.0 GiB of memory free, but 2 ranks of this LoRA run need about 4.0 GiB")
    assert check_problems(node(), NodeCheck(True, True, 3 * GIB), venv_dir="v", per_rank_bytes=2 * GIB,
                          model_dir=None) == []


def test_a_resume_keeps_the_users_flags_and_reads_corrals_own():
    program = ("-X", "corral-run=a", "-m", "trainer", "--config", "config.toml", "--expect_world_size", "2",
               "--iters", "30", "--model", "../../models/m-1", "--data", "../../projects/p/data",
               "--adapter_dir", "adapters", "--resume_adapter_file", "resume/adapters.safetensors")
    kept, corral = previous_lora_flags(program)
    assert kept == ["--iters", "30"]
    assert corral == {"--model": "../../models/m-1", "--data": "../../projects/p/data", "--adapter_dir": "adapters",
                      "--resume_adapter_file": "resume/adapters.safetensors"}
