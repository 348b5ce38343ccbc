"""The memory plan: estimate each rank's memory for a config and choose a micro batch and accumulation that fit.

Standard library only, so the GUI and `corral` can plan before anything is launched. The estimate is
analytic (parameters, gradients, AdamW moments, activations kept for the backward pass, logits, the
token arrays) plus a fixed allowance for the Python + MLX process; tests/integration/test_trainer_mpi.py
checks it against the peak memory a real run reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.data import BUNDLED_CORPUS, VOCAB_SIZE

PROCESS_OVERHEAD_BYTES = 256 * 1024**2  # Python + MLX outside MLX's own allocations (RSS ~150-250 MB measured on Linux)
HEADROOM = 0.8  # use at most this share of a node's free memory: the OS and other processes move
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parameter_count(config: TrainConfig, vocab_size: int = VOCAB_SIZE) -> int:
    """Parameters of the TransformerLM the config describes (tied output layer)."""
    d, m = config.d_model, config.mlp_multiplier
    per_block = 4 * d + 4 * d * d + 2 * m * d * d + m * d + d  # 2 LayerNorms, qkv + out, MLP with biases
    return vocab_size * d + config.seq_len * d + config.n_layers * per_block + 2 * d


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one rank needs, by part."""

    parameters: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.gradients_bytes + self.optimizer_bytes + self.activations_bytes + self.overhead_bytes

    def as_dict(self) -> dict[str, int]:
        return {
            "parameters": self.parameters,
            "weights_bytes": self.weights_bytes,
            "gradients_bytes": self.gradients_bytes,
            "optimizer_bytes": self.optimizer_bytes,
            "activations_bytes": self.activations_bytes,
            "overhead_bytes": self.overhead_bytes,
            "total_bytes": self.total_bytes,
        }


def estimate_memory(config: TrainConfig, data_bytes: int = 0) -> MemoryEstimate:
    """Estimated peak memory of one rank training with this config (``data_bytes``: size of the data files).

    The constants were fitted to MLX's measured peak on the CPU (mlx 0.32) for seven configs (tiny,
    default, batch 64, seq_len 256, d_model 256, bfloat16, accumulation): the estimate is 1.0-1.3× the peak.
    """
    n = parameter_count(config)
    size = _DTYPE_BYTES[config.dtype]
    b, t, d, h = config.batch_size, config.seq_len, config.d_model, config.n_heads
    # Kept for backward and temporaries, per block: norms, q/k/v, residuals and the MLP, plus the
    # float32 B×H×T×T attention scores.
    per_block = b * t * (22 * d + 5 * config.mlp_multiplier * d) * size + 2 * b * h * t * t * 4
    # Logits, their float32 copy, softmax and gradients: large next to a small model's 257-token vocabulary.
    logits = 6 * b * t * VOCAB_SIZE * 4
    accumulating = config.grad_accum_steps > 1
    return MemoryEstimate(
        parameters=n,
        weights_bytes=n * size,
        gradients_bytes=n * size * (2 if accumulating else 1),  # plus the running sum when accumulating
        optimizer_bytes=2 * n * size,  # AdamW's two moments, in the parameters' dtype
        # Updates build new weights and moments before the old ones are freed: two more copies at the peak.
        activations_bytes=config.n_layers * per_block + logits + 2 * n * size,
        overhead_bytes=PROCESS_OVERHEAD_BYTES + 4 * data_bytes,  # tokens are int32: 4 bytes per byte of text
    )


def dataset_bytes(data: str) -> int:
    """Bytes of the data file(s) the config names (the bundled corpus when empty); 0 when unknown."""
    path = Path(data) if data else BUNDLED_CORPUS
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def parse_size(text: str) -> int:
    """Bytes for '17179869184', '16G', '16GiB', '512M' (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"expected a size like 16G or 17179869184, got {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


@dataclass(frozen=True)
class Suggestion:
    """The micro batch and accumulation that keep the per-rank batch and fit the tightest node."""

    batch_size: int
    grad_accum_steps: int
    per_rank_bytes: int
    budget_bytes: int | None
    fits: bool
    message: str


def suggest(config: TrainConfig, free_bytes: list[int], data_bytes: int = 0) -> Suggestion:
    """Largest micro batch that divides batch_size × grad_accum_steps and fits HEADROOM of the least free memory."""
    per_rank_batch = config.batch_size * config.grad_accum_steps
    if not free_bytes:
        estimate = estimate_memory(config, data_bytes).total_bytes
        return Suggestion(config.batch_size, config.grad_accum_steps, estimate, None, True, "no free memory given: config unchanged")
    budget = int(min(free_bytes) * HEADROOM)
    for micro in sorted((k for k in range(1, per_rank_batch + 1) if per_rank_batch % k == 0), reverse=True):
        candidate = replace(config, batch_size=micro, grad_accum_steps=per_rank_batch // micro)
        needed = estimate_memory(candidate, data_bytes).total_bytes
        if needed <= budget:
            changed = micro != config.batch_size
            message = (
                f"batch_size {micro} × grad_accum_steps {per_rank_batch // micro} fits in {budget / 1024**2:.0f} MiB per rank"
                + (" (same sequences per step as configured)" if changed else "")
            )
            return Suggestion(micro, per_rank_batch // micro, needed, budget, True, message)
    smallest = replace(config, batch_size=1, grad_accum_steps=per_rank_batch)
    needed = estimate_memory(smallest, data_bytes).total_bytes
    return Suggestion(
        1,
        per_rank_batch,
        needed,
        budget,
        False,
        f"even batch_size 1 needs {needed / 1024**2:.0f} MiB per rank but the tightest node allows {budget / 1024**2:.0f} MiB; "
        "use a smaller model (d_model, n_layers, seq_len) or free memory",
    )


def plan(config: TrainConfig, free_memory: str = "") -> dict[str, Any]:
    """The plan as a JSON-ready dict: estimate for the config as given, and the suggestion for the nodes."""
    free = [parse_size(part) for part in free_memory.split(",") if part.strip()]
    data_bytes = dataset_bytes(config.data)
    suggestion = suggest(config, free, data_bytes)
    return {
        "estimate": estimate_memory(config, data_bytes).as_dict(),
        "free_memory_bytes": free,
        "suggestion": {
            "batch_size": suggestion.batch_size,
            "grad_accum_steps": suggestion.grad_accum_steps,
            "per_rank_bytes": suggestion.per_rank_bytes,
            "budget_bytes": suggestion.budget_bytes,
            "fits": suggestion.fits,
            "message": suggestion.message,
        },
    }
