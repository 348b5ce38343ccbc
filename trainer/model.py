"""The model: a small decoder-only transformer language model over byte tokens, sized by TrainConfig."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn


@mx.custom_function
def linear(x: mx.array, weight: mx.array) -> mx.array:
    """``x @ weight.T``, with every matmul of the forward and backward pass in the layout CPU BLAS runs fastest.

    MLX on Linux CPUs calls a reference BLAS whose ``sgemm`` is much slower when the second operand is
    transposed, as it is in ``x @ weight.T`` (measured 2048×128 @ 128×512: 50 ms against 39 ms): the
    forward pass multiplies by a contiguous copy of ``weight.T`` (small next to the activations), and the
    input's gradient multiplies by ``weight`` itself instead of by the transpose of that copy.
    """
    return x @ mx.contiguous(weight.T)


@linear.vjp
def _linear_vjp(primals: list[mx.array], cotangent: mx.array, output: mx.array) -> tuple[mx.array, mx.array]:
    x, weight = primals
    flat = cotangent.reshape(-1, cotangent.shape[-1])
    return cotangent @ weight, flat.T @ x.reshape(-1, x.shape[-1])


# erf(x) = x·P(x²) / Q(x²) on [-4, 4] (beyond it erf is ±1 in float32): the rational approximation Eigen and
# XLA use for float32 erf, within a few ulp. Only multiplies, adds and one divide: MLX's CPU erf costs
# ~26 ns an element here, this ~3 ns.
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
          -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
          -1.42647390514189e-02)
_SQRT_HALF = 1 / math.sqrt(2)
_LOG2_E = 1 / math.log(2)
# 2^f = e^(f·ln 2) = Σ (f·ln 2)^k / k!, highest power first; for |f| ≤ 1/2 the rest is below 2e-9.
_EXP2_TAYLOR = tuple(math.log(2) ** k / math.factorial(k) for k in range(7, -1, -1))
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _horner(coefficients: tuple[float, ...], x: mx.array) -> mx.array:
    total = mx.full(x.shape, coefficients[0], x.dtype)
    for coefficient in coefficients[1:]:
        total = total * x + coefficient
    return total


def _normal_cdf(x: mx.array) -> mx.array:
    """Φ(x) = (1 + erf(x/√2)) / 2, in float32."""
    z = mx.clip(x * _SQRT_HALF, -4.0, 4.0)
    z2 = z * z
    return 0.5 + 0.5 * (z * _horner(_ERF_P, z2) / _horner(_ERF_Q, z2))


@mx.compile
def _gelu_forward(x: mx.array) -> mx.array:
    x32 = x.astype(mx.float32)
    return (x32 * _normal_cdf(x32)).astype(x.dtype)


def _exp_of_nonpositive(x: mx.array) -> mx.array:
    """e^x for float32 x ≤ 0, within 1.2e-7 relative (0 below -87, where float32 goes denormal).

    e^x = 2^n·2^f with n = round(x·log2 e) and |f| ≤ 1/2: a degree-7 polynomial for 2^f, and 2^n built
    from its exponent bits. Only multiplies and adds: ~2 ns an element fused, against MLX's CPU exp's ~10.
    """
    y = mx.maximum(x, -87.0) * _LOG2_E
    n = mx.round(y)
    power_of_two = mx.left_shift(n.astype(mx.int32) + 127, 23).view(mx.float32)
    return mx.where(x < -87.0, 0.0, _horner(_EXP2_TAYLOR, y - n) * power_of_two)


@mx.compile
def _gelu_backward(x: mx.array, cotangent: mx.array) -> mx.array:
    x32 = x.astype(mx.float32)
    slope = _normal_cdf(x32) + x32 * _INV_SQRT_2PI * _exp_of_nonpositive(-0.5 * x32 * x32)  # Φ(x) + x·φ(x)
    return (cotangent.astype(mx.float32) * slope).astype(cotangent.dtype)


@mx.custom_function
def gelu(x: mx.array) -> mx.array:
    """The exact GELU, x·Φ(x), as ``nn.gelu`` computes it (within 2e-6); on CPU ~8× faster forward, ~3× with backward.

    MLX's CPU ``erf`` and ``exp`` are scalar loops, and the MLP's GELU was most of a step's time once the
    matmuls ran on OpenBLAS (trainer/blas.py). Each pass here is one fused kernel, compiled or not.
    """
    return _gelu_forward(x)


@gelu.vjp
def _gelu_vjp(primals: mx.array, cotangent: mx.array, output: mx.array) -> mx.array:
    # With a single argument MLX passes the argument itself, not a list of one.
    return _gelu_backward(primals, cotangent)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same checkpoints) computed with ``linear``."""

    def __call__(self, x: mx.array) -> mx.array:
        y = linear(x, self.weight)
        return y + self.bias if "bias" in self else y


class Attention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.scale = 1.0 / math.sqrt(d_model // n_heads)
        self.qkv = Linear(d_model, 3 * d_model, bias=False)
        self.out = Linear(d_model, d_model, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        batch, length, width = x.shape
        q, k, v = mx.split(self.qkv(x), 3, axis=-1)
        heads = lambda t: t.reshape(batch, length, self.n_heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
        y = mx.fast.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=self.scale, mask="causal")
        return self.out(y.transpose(0, 2, 1, 3).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-norm transformer block: attention then MLP, each added to the residual stream."""

    def __init__(self, d_model: int, n_heads: int, mlp_multiplier: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads)
        self.mlp_norm = nn.LayerNorm(d_model)
        self.mlp_in = Linear(d_model, mlp_multiplier * d_model)
        self.mlp_out = Linear(mlp_multiplier * d_model, d_model)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp_out(gelu(self.mlp_in(self.mlp_norm(x))))


class TransformerLM(nn.Module):
    """Token and learned position embeddings, blocks, a final norm, and an output layer tied to the embedding."""

    def __init__(self, vocab_size: int, seq_len: int, n_layers: int, d_model: int, n_heads: int, mlp_multiplier: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Embedding(seq_len, d_model)
        self.blocks = [Block(d_model, n_heads, mlp_multiplier) for _ in range(n_layers)]
        self.norm = nn.LayerNorm(d_model)

    def __call__(self, tokens: mx.array) -> mx.array:
        x = self.embed(tokens) + self.positions(mx.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return linear(self.norm(x), self.embed.weight)  # the output layer shares the embedding


def loss_fn(model: TransformerLM, inputs: mx.array, targets: mx.array) -> mx.array:
    """Mean next-token cross-entropy, computed in float32 whatever the model's dtype."""
    logits = model(inputs).astype(mx.float32)
    return nn.losses.cross_entropy(logits, targets, reduction="mean")
