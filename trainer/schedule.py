"""The learning-rate schedule: linear warmup to the peak, then cosine decay to the minimum at the last step."""

from __future__ import annotations

import math
from typing import Any


def learning_rate_at(step: int, peak: float, minimum: float, warmup_steps: int, total_steps: int) -> float:
    """The rate used by optimizer update number ``step`` (counted from 0), in plain Python for reports and tests."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return minimum + (peak - minimum) * 0.5 * (1.0 + math.cos(math.pi * progress))


def mlx_schedule(peak: float, minimum: float, warmup_steps: int, total_steps: int) -> Any:
    """The same schedule as an MLX optimizer schedule, evaluated on the optimizer's step counter."""
    import mlx.optimizers as optim

    decay = optim.cosine_decay(peak, max(1, total_steps - warmup_steps), minimum)
    if warmup_steps == 0:
        return decay
    return optim.join_schedules([optim.linear_schedule(0.0, peak, warmup_steps), decay], [warmup_steps])
