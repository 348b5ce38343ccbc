"""Warmup then cosine: the plain-Python rate reported in events equals the rate MLX's optimizer uses."""

from __future__ import annotations

import math

import pytest

from trainer.schedule import learning_rate_at, mlx_schedule

CASES = [  # (step, expected) for peak 1.0, min 0.1, warmup 10, total 110
    (0, 0.0),
    (5, 0.5),
    (10, 1.0),
    (60, 0.1 + 0.9 * 0.5),
    (110, 0.1),
    (500, 0.1),
]


@pytest.mark.parametrize(("step", "expected"), CASES)
def test_learning_rate_at(step, expected):
    assert learning_rate_at(step, 1.0, 0.1, 10, 110) == pytest.approx(expected)


def test_decays_monotonically_after_warmup():
    rates = [learning_rate_at(s, 3e-3, 3e-4, 20, 300) for s in range(20, 301)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("warmup", [0, 7])
def test_mlx_schedule_matches(warmup):
    schedule = mlx_schedule(3e-3, 3e-4, warmup, 50)
    for step in range(0, 60, 3):
        assert float(schedule(step)) == pytest.approx(learning_rate_at(step, 3e-3, 3e-4, warmup, 50), rel=1e-5, abs=1e-9)
    assert not math.isnan(float(schedule(0)))
