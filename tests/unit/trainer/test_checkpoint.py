"""Checkpoints: written whole or not at all, old ones pruned, and restored exactly into a fresh model."""

from __future__ import annotations

import pytest

mx = pytest.importorskip("mlx.core")

import mlx.optimizers as optim  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from trainer.checkpoint import CheckpointError, TrainingState, find_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from trainer.model import TransformerLM  # noqa: E402


def build(seed: int):
    mx.random.seed(seed)
    model = TransformerLM(257, 16, 1, 16, 2, 2)
    optimizer = optim.AdamW(learning_rate=1e-2)
    optimizer.init(model.trainable_parameters())
    return model, optimizer


def state(step: int) -> TrainingState:
    return TrainingState(step=step, epoch=1, batch=step, tokens=5 * 2**32 + step, rng_key=[7, 2**32 - 1], config={"seed": 1})


def test_save_prunes_and_leaves_no_temporary_directories(tmp_path):
    model, optimizer = build(0)
    for step in (1, 2, 3):
        path, size = save_checkpoint(tmp_path, model, optimizer, state(step), keep=2)
        assert size > 0 and path.name == f"step_{step:06d}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000002", "step_000003"]
    assert find_checkpoint(tmp_path).name == "step_000003"
    assert find_checkpoint(tmp_path / "step_000002").name == "step_000002"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        find_checkpoint(tmp_path)


def test_load_restores_weights_optimizer_and_rng(tmp_path):
    model, optimizer = build(0)
    grads = {k: mx.ones_like(v) for k, v in tree_flatten(model.trainable_parameters())}
    from mlx.utils import tree_unflatten

    optimizer.update(model, tree_unflatten(list(grads.items())))
    save_checkpoint(tmp_path, model, optimizer, state(4), keep=0)
    fresh, fresh_optimizer = build(1)
    restored = load_checkpoint(tmp_path, fresh, fresh_optimizer, rank=0, world_size=1)
    assert (restored.step, restored.epoch, restored.batch, restored.tokens) == (4, 1, 4, 5 * 2**32 + 4)
    assert mx.random.state[0].tolist() == [7, 2**32 - 1]
    for saved, loaded in ((model.parameters(), fresh.parameters()), (optimizer.state, fresh_optimizer.state)):
        saved, loaded = dict(tree_flatten(saved)), dict(tree_flatten(loaded))
        assert saved.keys() == loaded.keys()
        for name, value in saved.items():
            assert mx.array_equal(value, loaded[name]), name
    assert int(fresh_optimizer.state["step"]) == 1


def test_load_rejects_a_different_model(tmp_path):
    model, optimizer = build(0)
    save_checkpoint(tmp_path, model, optimizer, state(1), keep=0)
    mx.random.seed(0)
    other = TransformerLM(257, 16, 1, 32, 2, 2)
    other_optimizer = optim.AdamW(learning_rate=1e-2)
    other_optimizer.init(other.trainable_parameters())
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(tmp_path, other, other_optimizer, rank=0, world_size=1)
