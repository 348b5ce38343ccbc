"""The memory plan: parameter count, estimate by part, and a batch/accumulation that fits the tightest node."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from trainer.config import TrainConfig
from trainer.plan import HEADROOM, estimate_memory, parameter_count, parse_size, plan, suggest

SMALL = TrainConfig(n_layers=2, d_model=32, n_heads=2, seq_len=32, batch_size=8)


@pytest.mark.parametrize("config", [TrainConfig(), SMALL, replace(SMALL, mlp_multiplier=2, seq_len=64)])
def test_parameter_count_matches_the_model(config):
    from mlx.utils import tree_flatten

    from trainer.data import VOCAB_SIZE
    from trainer.model import TransformerLM

    model = TransformerLM(VOCAB_SIZE, config.seq_len, config.n_layers, config.d_model, config.n_heads, config.mlp_multiplier)
    assert parameter_count(config) == sum(v.size for _, v in tree_flatten(model.parameters()))


def test_estimate_grows_with_batch_and_halves_weights_in_bfloat16():
    small, large = estimate_memory(SMALL), estimate_memory(replace(SMALL, batch_size=64))
    assert large.activations_bytes > 4 * small.activations_bytes
    assert large.weights_bytes == small.weights_bytes
    assert estimate_memory(replace(SMALL, dtype="bfloat16")).weights_bytes * 2 == small.weights_bytes
    accumulating = estimate_memory(replace(SMALL, grad_accum_steps=2))
    assert accumulating.gradients_bytes == 2 * small.gradients_bytes
    assert small.total_bytes == sum(v for k, v in small.as_dict().items() if k not in ("parameters", "total_bytes"))


SIZES = [("17179869184", 17179869184), ("16G", 16 * 1024**3), ("16GiB", 16 * 1024**3), ("512m", 512 * 1024**2), ("1.5K", 1536)]


@pytest.mark.parametrize(("text", "size"), SIZES)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_rejects_nonsense():
    with pytest.raises(ValueError, match="expected a size like 16G"):
        parse_size("lots")


def test_keeps_the_config_when_it_fits():
    config = TrainConfig()
    needed = estimate_memory(config).total_bytes
    result = suggest(config, [needed * 4, needed * 8])
    assert (result.batch_size, result.grad_accum_steps, result.fits) == (16, 1, True)


def test_trades_batch_for_accumulation_on_the_tightest_node():
    config = replace(TrainConfig(), batch_size=64, seq_len=256)
    small = estimate_memory(replace(config, batch_size=8, grad_accum_steps=8)).total_bytes
    tight = int(small / HEADROOM) + 1
    result = suggest(config, [tight * 10, tight])
    assert result.fits
    assert result.batch_size * result.grad_accum_steps == 64  # same sequences per optimizer step
    assert result.batch_size == 8
    assert result.per_rank_bytes <= result.budget_bytes


def test_reports_when_nothing_fits():
    result = suggest(TrainConfig(), [1024**2])
    assert not result.fits
    assert "use a smaller model" in result.message


def test_plan_command_prints_json_without_importing_mlx():
    code = (
        "import sys; from trainer.train import main; rc = main(['--plan', '--free-memory', '1G,2G']); "
        "assert 'mlx' not in sys.modules, 'planning must not need MLX'; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed == plan(TrainConfig(), "1G,2G")
    assert printed["free_memory_bytes"] == [1024**3, 2 * 1024**3]
    assert printed["suggestion"]["fits"] is True
