"""The model: a small decoder-only transformer language model over byte tokens, sized by TrainConfig."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn


class Attention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.scale = 1.0 / math.sqrt(d_model // n_heads)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

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
        self.mlp_in = nn.Linear(d_model, mlp_multiplier * d_model)
        self.mlp_out = nn.Linear(mlp_multiplier * d_model, d_model)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp_out(nn.gelu(self.mlp_in(self.mlp_norm(x))))


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
        return self.embed.as_linear(self.norm(x))


def loss_fn(model: TransformerLM, inputs: mx.array, targets: mx.array) -> mx.array:
    """Mean next-token cross-entropy, computed in float32 whatever the model's dtype."""
    logits = model(inputs).astype(mx.float32)
    return nn.losses.cross_entropy(logits, targets, reduction="mean")
