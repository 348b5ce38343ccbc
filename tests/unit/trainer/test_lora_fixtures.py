"""The LoRA test fixtures: the tiny Llama loads with mlx-lm, its tokenizer round-trips, and both builders are deterministic."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install -e '.[test]')")

from tests.lora_fixtures import make_lora_dataset, make_tiny_llama, sentence  # noqa: E402


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_builders_are_fast_and_deterministic(tmp_path):
    started = time.perf_counter()
    first_model, first_data = make_tiny_llama(tmp_path / "m1"), make_lora_dataset(tmp_path / "d1")
    assert time.perf_counter() - started < 2.0
    assert _digest(first_model) == _digest(make_tiny_llama(tmp_path / "m2"))
    assert _digest(first_data) == _digest(make_lora_dataset(tmp_path / "d2"))
    assert sorted(p.name for p in first_model.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    ]


def test_dataset_has_the_requested_lines(tmp_path):
    data = make_lora_dataset(tmp_path, n_train=10, n_valid=3)
    train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    valid = [json.loads(line) for line in (data / "valid.jsonl").read_text().splitlines()]
    assert len(train) == 10 and len(valid) == 3
    assert train[0] == {"text": sentence(0)} and valid[0] == {"text": sentence(10)}


def test_mlx_lm_loads_the_tiny_model_and_generates(tmp_path):
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(make_tiny_llama(tmp_path)))
    assert len(model.layers) == 2 and model.args.hidden_size == 64
    text = sentence(3)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text) // 2, "the BPE merges whole words of the corpus"
    assert tokenizer.eos_token_id == json.loads((tmp_path / "config.json").read_text())["eos_token_id"]
    generated = mlx_lm.generate(model, tokenizer, prompt="alice buys", max_tokens=4)
    assert isinstance(generated, str) and generated
