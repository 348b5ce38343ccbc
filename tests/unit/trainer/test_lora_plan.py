"""The LoRA memory plan: exact weights from safetensors headers, adapter parameters as mlx-lm creates them, sane scaling."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from trainer.lora.config import LoraConfig
from trainer.lora.plan import PlanError, estimate_lora, estimate_lora_memory, lora_plan, read_safetensors_header
from tests.lora_fixtures import TINY_LLAMA_CONFIG, make_tiny_llama

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"))


def settings(model: Path, **changes) -> LoraConfig:
    return replace(LoraConfig(model=str(model), data="d", num_layers=-1, batch_size=4, max_seq_length=64), **changes)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], int]]) -> None:
    """A safetensors file by hand: header JSON, then zero bytes for each tensor."""
    header, offset = {"__metadata__": {"format": "mlx"}}, 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def test_header_reader_matches_the_file(tiny):
    path = tiny / "model.safetensors"
    tensors = read_safetensors_header(path)
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert sum(t.nbytes for t in tensors.values()) == path.stat().st_size - 8 - length
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)
    assert estimate_lora(tiny, settings(tiny)).weights_bytes == path.stat().st_size - 8 - length


@pytest.mark.parametrize(("fine_tune_type", "num_layers"), [("lora", -1), ("lora", 1), ("dora", 2)])
def test_adapter_parameters_are_what_mlx_lm_creates(tiny, fine_tune_type, num_layers):
    pytest.importorskip("mlx_lm")
    import mlx_lm
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(str(tiny))
    model.freeze()
    linear_to_lora_layers(model, num_layers, {"rank": 4, "scale": 20.0, "dropout": 0.0}, use_dora=fine_tune_type == "dora")
    created = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    planned = estimate_lora(tiny, settings(tiny, lora_rank=4, num_layers=num_layers, fine_tune_type=fine_tune_type))
    assert planned.adapter_parameters == created


def test_estimate_grows_with_the_batch_and_shrinks_with_checkpointing_and_ranks(tiny):
    base = estimate_lora_memory(tiny, settings(tiny))
    assert estimate_lora_memory(tiny, settings(tiny, batch_size=8)) > base
    assert estimate_lora_memory(tiny, settings(tiny, max_seq_length=128)) > base
    assert estimate_lora_memory(tiny, settings(tiny, lora_rank=16)) > base
    assert estimate_lora_memory(tiny, settings(tiny, num_layers=1)) < base
    long = settings(tiny, max_seq_length=1024, batch_size=8)
    # batch_size is over all ranks: two ranks hold half the sequences each.
    assert estimate_lora_memory(tiny, long, world_size=2) < estimate_lora_memory(tiny, long)
    assert estimate_lora_memory(tiny, replace(long, expect_world_size=2)) == estimate_lora_memory(tiny, long, world_size=2)


def test_gradient_checkpointing_lowers_the_estimate_of_a_deeper_model(tiny, tmp_path):
    deeper = tmp_path / "deeper"
    deeper.mkdir()
    (deeper / "model.safetensors").symlink_to(tiny / "model.safetensors")
    config = json.loads((tiny / "config.json").read_text())
    (deeper / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 8}))
    long = settings(deeper, max_seq_length=1024, batch_size=8)
    assert estimate_lora_memory(deeper, replace(long, grad_checkpoint=True)) < estimate_lora_memory(deeper, long)
    # With two blocks there is nothing to save: never more than without it.
    assert estimate_lora_memory(tiny, replace(long, model=str(tiny), grad_checkpoint=True)) <= estimate_lora_memory(tiny, long)


def test_quantized_linear_layers_count_their_unpacked_inputs(tmp_path):
    config = {**TINY_LLAMA_CONFIG, "num_hidden_layers": 1, "vocab_size": 100, "quantization": {"group_size": 32, "bits": 4}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    # A 4-bit 64 -> 32 linear layer: 64 inputs packed 8 per uint32 word.
    write_safetensors(tmp_path / "model.safetensors", {
        "model.layers.0.self_attn.k_proj.weight": ("U32", [32, 8], 32 * 8 * 4),
        "model.layers.0.self_attn.k_proj.scales": ("F16", [32, 2], 32 * 2 * 2),
        "model.layers.0.self_attn.k_proj.biases": ("F16", [32, 2], 32 * 2 * 2),
        "model.layers.0.input_layernorm.weight": ("F16", [64], 128),
        "model.embed_tokens.weight": ("F16", [100, 64], 100 * 64 * 2),
    })
    estimate = estimate_lora(tmp_path, settings(tmp_path, lora_rank=2))
    assert estimate.adapter_parameters == 2 * (64 + 32)
    assert estimate.weights_bytes == 32 * 8 * 4 + 2 * 128 + 128 + 100 * 64 * 2


def test_plan_errors_name_the_file(tmp_path):
    with pytest.raises(PlanError, match=r"config.json"):
        estimate_lora(tmp_path, settings(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**TINY_LLAMA_CONFIG, "vocab_size": 10}))
    with pytest.raises(PlanError, match="has no .safetensors weights"):
        estimate_lora(tmp_path, settings(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(PlanError, match="is not a safetensors file"):
        estimate_lora(tmp_path, settings(tmp_path))
    with pytest.raises(PlanError, match="is not a local directory"):
        lora_plan(settings(tmp_path / "absent"))


def test_plan_command_prints_the_estimate_and_whether_it_fits(tiny, tmp_path):
    config = tmp_path / "lora.toml"
    config.write_text(f'kind = "lora"\nmodel = "{tiny}"\ndata = "data"\nmax_seq_length = 64\n')
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "--plan", "--config", str(config), "--free-memory", "100M,8G"],
        capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    plan = json.loads(result.stdout)
    assert plan["estimate"]["total_bytes"] == estimate_lora_memory(tiny, settings(tiny, num_layers=16, max_seq_length=64), 2)
    assert plan["fits"] is False and plan["budget_bytes"] == int(100 * 1024**2 * 0.8)
    assert "lower batch_size" in plan["message"]
