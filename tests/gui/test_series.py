"""Growing series and their peak decimation; run series folded from recorded event streams."""

from __future__ import annotations

import numpy as np
import pytest

from cluster.run_monitor import RunMonitor
from cluster.run_status import RunStatus
from gui.series import Buffer, RunSeries, Series, grouped
from tests.gui.fakes import RECORDED_3_RANKS, SyntheticRun, count_events, recorded_lines, synthetic_stream


def fold(lines: list[str], rank_nodes: list[str] | None = None) -> RunSeries:
    monitor = RunMonitor(RunStatus(rank_nodes=list(rank_nodes or [])))
    series = RunSeries(rank_nodes=list(rank_nodes or []))
    for raw in lines:
        for line in monitor.feed(raw):
            if not hasattr(line.event, "text"):
                series.add(line.event)
    return series


def test_buffer_grows_and_keeps_values():
    buffer = Buffer(capacity=2)
    for value in range(1000):
        buffer.append(value)
    buffer.extend(np.arange(1000, 1500))
    assert len(buffer) == 1500
    assert np.array_equal(buffer.values, np.arange(1500))


@pytest.mark.parametrize("count", [5, 2_000, 2_001, 70_000, 300_007])
@pytest.mark.parametrize("window", [(None, None), (0.1, 0.7), (0.0, 0.013), (0.5, 2.0)])
def test_decimation_keeps_every_peak_in_the_window(count, window):
    rng = np.random.default_rng(count)
    x = np.arange(1, count + 1, dtype=float)
    y = rng.normal(size=count)
    y[rng.integers(0, count, 3)] = [50.0, -50.0, np.nan]
    series = Series(capacity=4)
    # Half at once, half point by point after a first redraw: the pyramid must catch up with appends.
    series.extend(x[: count // 2], y[: count // 2])
    series.decimated(buckets=300)
    for i in range(count // 2, count):
        series.append(x[i], y[i])
    low = None if window[0] is None else window[0] * count
    high = None if window[1] is None else window[1] * count
    xs, ys = series.decimated(low, high, buckets=500)
    start, stop = series.index_range(low, high)
    # Buckets are rounded down to whole pyramid blocks: a few more than asked for, never fewer (see below).
    assert len(xs) <= 2 * 500 * 1.5 + 4
    assert np.all(np.diff(xs) >= 0)
    if stop > start:
        assert np.nanmax(ys) == np.nanmax(y[start:stop])
        assert np.nanmin(ys) == np.nanmin(y[start:stop])
        assert xs[0] <= max(x[start], low or x[start])
    if low is not None and high is not None:
        # At most one point each side beyond the window (so the line reaches its edges).
        assert np.sum(xs < low) <= 2 and np.sum(xs > high) <= 2


@pytest.mark.parametrize("count", [3_000, 70_000, 1_000_000])
@pytest.mark.parametrize("buckets", [97, 624, 1301])
def test_buckets_are_never_wider_than_asked(count, buckets):
    # A bucket is a pixel column: a wider one leaves columns without their min-max stroke, and a dense band
    # shows white stripes.
    series = Series()
    series.extend(np.arange(1, count + 1, dtype=float), np.random.default_rng(count).normal(size=count))
    for low, high in ((None, None), (count / 3, count / 3 + count / 5)):
        start, stop = series.index_range(low, high)
        xs, _ys = series.decimated(low, high, buckets=buckets)
        if stop - start <= 2 * buckets:
            continue
        starts = np.unique(xs)
        assert np.diff(starts).max() <= (stop - start) / buckets
        assert len(starts) <= buckets * 1.5 + 2


def test_small_ranges_are_not_decimated():
    series = Series()
    series.extend(np.arange(10.0), np.arange(10.0) * 2)
    xs, ys = series.decimated(buckets=100)
    assert np.array_equal(xs, np.arange(10.0)) and np.array_equal(ys, np.arange(10.0) * 2)


def test_recorded_three_rank_run_fills_every_rank():
    lines = recorded_lines(RECORDED_3_RANKS)
    series = fold(lines, ["node1", "node2", "node3"])
    assert series.world_size == 3
    for rank in range(3):
        steps = count_events(lines, "step", rank)
        assert steps == 40
        assert len(series.ranks[rank]["loss"]) == steps
        assert len(series.ranks[rank]["mlx_peak_bytes"]) == steps
        assert len(series.ranks[rank]["val_loss"]) == count_events(lines, "eval", rank)
    assert len(series.loss_mean) == 40  # once per step, not once per rank
    assert series.nodes() == ["node1", "node2", "node3"]
    used, total = series.node_ram_now("node2")
    assert used and total and used < total


def test_node_ram_is_taken_from_one_rank_per_node():
    run = SyntheticRun(ranks=4, steps=50, ranks_per_node=2, node_every=10)
    series = fold(synthetic_stream(run), run.rank_nodes())
    assert sorted(series.node_ram) == ["node1", "node2"]
    # Both ranks of node1 report every 10 steps; only one of them is plotted.
    assert len(series.node_ram["node1"]) == 5
    assert list(series.node_ram["node1"].x) == [10, 20, 30, 40, 50]


def test_slowest_rank_by_median_step_time():
    run = SyntheticRun(ranks=8, steps=60, slow_rank=6, slow_factor=1.25)
    series = fold(synthetic_stream(run), run.rank_nodes())
    slowest = series.slowest_rank()
    assert slowest is not None and slowest.rank == 6
    assert slowest.excess == pytest.approx(0.25, abs=0.02)


def test_no_slowest_rank_with_one_rank():
    run = SyntheticRun(ranks=1, steps=10, ranks_per_node=1, slow_rank=None)
    assert fold(synthetic_stream(run)).slowest_rank() is None


def test_flat_stretches_are_drawn_from_their_ends_only():
    series = Series()
    x = np.arange(1, 100_001, dtype=float)
    y = np.full(x.shape[0], 7.0)
    y[60_000] = 9.0  # one spike in the flat stretch
    series.extend(x, y)
    xs, ys = series.decimated(buckets=500)
    assert len(xs) <= 8
    assert xs[0] == 1 and xs[-1] >= x[-1] - 256
    assert ys.max() == 9.0 and ys.min() == 7.0
    assert np.all(np.diff(xs) >= 0)


def test_neighbouring_buckets_meet_on_the_same_side():
    # min→max, then max→min: the joins between buckets stay short instead of crossing the band twice.
    rng = np.random.default_rng(1)
    series = Series()
    series.extend(np.arange(1, 200_001, dtype=float), rng.normal(size=200_000))
    xs, ys = series.decimated(buckets=400)
    pairs = ys.reshape(-1, 2)
    assert np.all(pairs[0::2, 0] <= pairs[0::2, 1])
    assert np.all(pairs[1::2, 0] >= pairs[1::2, 1])
    joins = np.abs(np.diff(ys))[1::2]
    assert joins.mean() < 0.5 * np.abs(pairs[:, 1] - pairs[:, 0]).mean()


@pytest.mark.parametrize("group", [1, 2, 4, 12, 13, 31, 33, 64])
def test_grouped_equals_a_plain_reduce_for_every_group_size(group: int) -> None:
    rng = np.random.default_rng(group)
    values = rng.standard_normal(50 * group)
    values[::7] = np.nan  # fmin/fmax skip NaN whichever way the groups are reduced
    for ufunc in (np.fmin, np.fmax):
        expected = ufunc.reduce(values.reshape(50, group), axis=1)
        np.testing.assert_array_equal(grouped(ufunc, values, 50, group), expected)


def reference_decimated(series: Series, x_min, x_max, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """decimated() written plainly, a bucket at a time, straight from the points (no pyramid, no cache)."""
    x, y = series.x, series.y
    start, stop = series.index_range(x_min, x_max)
    count = stop - start
    if count <= 2 * buckets:
        return x[start:stop], y[start:stop]
    per_bucket = count / buckets
    level, levels = 0, 0
    while 16 ** (levels + 1) <= len(series):
        levels += 1
    while level < levels and 16 ** (level + 1) * 4 <= per_bucket:
        level += 1
    block = 16**level
    group = max(1, int(per_bucket // block))
    first = -(-start // block)
    core_end = first + max(0, (min(stop // block, len(series) // block) - first) // group) * group
    edges = [start] if first * block > start else []
    edges += list(range(first * block, core_end * block, group * block))
    if stop > max(start, core_end * block):
        edges.append(max(start, core_end * block))
    edges.append(stop)
    xs, ys = [], []
    for bucket, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        low, high = np.fmin.reduce(y[lo:hi]), np.fmax.reduce(y[lo:hi])
        xs += [x[lo], x[lo]]
        ys += [high, low] if bucket % 2 else [low, high]
    keep = [i in (0, len(ys) - 1) or not ys[i - 1] == ys[i] == ys[i + 1] for i in range(len(ys))]
    return np.array(xs)[keep], np.array(ys)[keep]


def noisy_with_flats(count: int, seed: int) -> np.ndarray:
    """Noise with flat stretches, NaN gaps and a few spikes: every branch of the decimation has work."""
    rng = np.random.default_rng(seed)
    y = rng.normal(size=count).round(1)
    for lo in rng.integers(0, count, 6):
        y[lo : lo + rng.integers(50, 3000)] = 3.0
    y[rng.integers(0, count, 20)] = np.nan
    y[rng.integers(0, count, 3)] = [40.0, -40.0, 25.0]
    return y


def assert_same_points(got: tuple[np.ndarray, np.ndarray], expected: tuple[np.ndarray, np.ndarray]) -> None:
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("count", [700, 5_000, 70_001, 300_000])
@pytest.mark.parametrize("buckets", [13, 97, 626])
def test_decimation_equals_the_plain_bucket_by_bucket_reduction(count: int, buckets: int) -> None:
    x = np.arange(1, count + 1, dtype=float)
    y = noisy_with_flats(count, count + buckets)
    series = Series()
    series.extend(x, y)
    windows = [(None, None), (None, count / 2), (-5.0, count * 2), (count / 3, count / 3 + count / 81)]
    windows += [(count / 3, count / 3 + count / width) for width in (4, 9, 16, 25, 36, 49, 64)]
    for low, high in windows:
        assert_same_points(series.decimated(low, high, buckets), reference_decimated(series, low, high, buckets))


def test_following_a_growing_run_reuses_its_groups_and_matches_a_fresh_series() -> None:
    # A live run: one point per frame, the whole run redrawn each time. Crosses block completions (every 16
    # points), group size changes (every 320 points at 20 buckets) and a level change (at 20,480 points);
    # zoomed views and other bucket counts in between must not leave a stale cache behind.
    count = 24_000
    x = np.arange(1, count + 1, dtype=float)
    y = noisy_with_flats(count, 7)
    series = Series()
    series.extend(x[:1_000], y[:1_000])
    checked = 0
    for n in range(1_000, count + 1):
        if n > 1_000:
            series.append(x[n - 1], y[n - 1])
        if 3_000 < n < 20_300 and n % 97:
            continue  # between the interesting stretches: one check in 97
        got = series.decimated(None, None, 20)
        fresh = Series()
        fresh.extend(x[:n], y[:n])
        assert_same_points(got, fresh.decimated(None, None, 20))
        assert_same_points(got, reference_decimated(fresh, None, None, 20))
        if n % 5 == 0:
            series.decimated(n / 4, n / 2, 20)
        if n % 7 == 0:
            series.decimated(None, None, 31)
        if n % 11 == 0:
            # From the first point but not to the end: the cached groups' prefix.
            assert_same_points(series.decimated(None, n / 2, 20), reference_decimated(fresh, None, n / 2, 20))
        checked += 1
    assert checked > 5_000
