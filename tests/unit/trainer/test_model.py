"""The model's layers: the BLAS-friendly matmuls and the fast GELU compute what `nn.Linear` and `nn.gelu` compute, forward and backward."""

from __future__ import annotations

import pytest

mx = pytest.importorskip("mlx.core")
import mlx.nn as nn  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from trainer.model import Linear, TransformerLM, gelu, linear, loss_fn  # noqa: E402


@pytest.mark.parametrize("shape", [(6, 8), (2, 5, 8), (3, 2, 4, 8)])
def test_linear_and_its_gradients_equal_the_plain_matmul(shape):
    mx.random.seed(0)
    x, weight = mx.random.normal(shape), mx.random.normal((12, 8))
    cotangent = mx.random.normal((*shape[:-1], 12))

    def plain(x: mx.array, weight: mx.array) -> mx.array:
        return (x @ weight.T * cotangent).sum()

    def ours(x: mx.array, weight: mx.array) -> mx.array:
        return (linear(x, weight) * cotangent).sum()

    assert mx.allclose(linear(x, weight), x @ weight.T, atol=1e-5).item()
    for mine, reference in zip(mx.grad(ours, argnums=(0, 1))(x, weight), mx.grad(plain, argnums=(0, 1))(x, weight)):
        assert mine.shape == reference.shape
        assert mx.allclose(mine, reference, atol=1e-4).item()


def test_gelu_and_its_gradient_equal_nn_gelu():
    # Across the whole float32 range that matters, including the tails where erf saturates.
    x = mx.concatenate([mx.linspace(-12, 12, 20001), mx.random.normal((4, 1000)).reshape(-1) * 3])
    cotangent = mx.random.normal(x.shape)
    assert mx.abs(gelu(x) - nn.gelu(x)).max().item() < 2e-6
    ours = mx.grad(lambda x: (gelu(x) * cotangent).sum())(x)
    reference = mx.grad(lambda x: (nn.gelu(x) * cotangent).sum())(x)
    assert mx.abs(ours - reference).max().item() < 1e-5
    compiled = mx.compile(mx.grad(lambda x: (gelu(x) * cotangent).sum()))(x)  # as inside the compiled step
    assert mx.abs(compiled - reference).max().item() < 1e-5


def test_the_fast_exp_behind_the_gelu_gradient_is_exp_on_its_domain():
    from trainer.model import _exp_of_nonpositive

    x = mx.concatenate([mx.linspace(-87, 0, 200001), mx.array([0.0, -1e-30, -0.5, -86.99])])
    assert (mx.abs(_exp_of_nonpositive(x) - mx.exp(x)) / mx.exp(x)).max().item() < 2e-7
    # Below -87 float32 goes denormal and then 0; -inf (a masked score) must give exactly 0.
    assert _exp_of_nonpositive(mx.array([-88.0, -1e4, -mx.inf])).tolist() == [0.0, 0.0, 0.0]


def test_gelu_keeps_bfloat16():
    x = mx.random.normal((64,)).astype(mx.bfloat16)
    assert gelu(x).dtype == mx.bfloat16 and mx.grad(lambda x: gelu(x).astype(mx.float32).sum())(x).dtype == mx.bfloat16
    assert mx.abs(gelu(x).astype(mx.float32) - nn.gelu(x.astype(mx.float32))).max().item() < 0.05  # bfloat16 rounding


def test_linear_layer_keeps_nn_linear_parameters():
    layer = Linear(8, 12)
    assert isinstance(layer, nn.Linear)
    assert {name: value.shape for name, value in tree_flatten(layer.parameters())} == {"weight": (12, 8), "bias": (12,)}
    assert "bias" not in Linear(8, 12, bias=False)
    x = mx.random.normal((3, 8))
    assert mx.allclose(layer(x), nn.Linear.__call__(layer, x), atol=1e-5).item()


def test_model_gradients_equal_those_of_nn_linear_layers():
    # The same weights in a model whose layers are plain nn.Linear: loss and every gradient must match.
    mx.random.seed(2)
    model = TransformerLM(257, 16, 2, 32, 2, 2)
    plain = TransformerLM(257, 16, 2, 32, 2, 2)
    for block in plain.blocks:
        for owner, name in ((block.attn, "qkv"), (block.attn, "out"), (block, "mlp_in"), (block, "mlp_out")):
            mine = getattr(owner, name)
            replacement = nn.Linear(mine.weight.shape[1], mine.weight.shape[0], bias="bias" in mine)
            setattr(owner, name, replacement)
    plain.update(model.parameters())
    tokens = mx.random.randint(0, 257, (3, 17))
    # The plain model's output layer is embed.as_linear, as it was before the BLAS-friendly layers.
    plain_loss = lambda m, x, y: nn.losses.cross_entropy(_plain_forward(m, x), y, reduction="mean")  # noqa: E731
    loss, grads = nn.value_and_grad(model, loss_fn)(model, tokens[:, :-1], tokens[:, 1:])
    reference_loss, reference_grads = nn.value_and_grad(plain, plain_loss)(plain, tokens[:, :-1], tokens[:, 1:])
    assert loss.item() == pytest.approx(reference_loss.item(), abs=1e-5)
    reference = dict(tree_flatten(reference_grads))
    assert {k for k, _ in tree_flatten(grads)} == reference.keys()
    for name, grad in tree_flatten(grads):
        assert mx.allclose(grad, reference[name], atol=1e-5).item(), name


def _plain_forward(model: TransformerLM, tokens: mx.array) -> mx.array:
    x = model.embed(tokens) + model.positions(mx.arange(tokens.shape[1]))
    for block in model.blocks:
        x = block(x)
    return model.embed.as_linear(model.norm(x)).astype(mx.float32)
