"""Per-rank metric series from run events: growing numpy buffers with a min/max pyramid for fast peak decimation.

Measured here: ``np.append`` costs 300-470 µs per point while a preallocated doubling buffer costs ~1 µs,
and pyqtgraph's own peak downsampling still walks every visible point on each redraw (43 ms for 8 curves
of 1M points). So each series keeps blockwise minima and maxima (blocks of 16, 256, 4096, … points),
updated lazily for the blocks completed since the last redraw, and ``decimated()`` answers from the
coarsest level that still gives enough buckets: a redraw costs about the chart's pixel width, not the
run's length. While a view follows the whole run, a redraw reuses the previous one's complete buckets and
reduces only the points added since. Pure numpy; no Qt.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from trainer.events import Event, EvalEvent, NodeEvent, StartEvent, StepEvent

# Each pyramid level's block is this many blocks of the level below.
LEVEL_FACTOR = 16
INITIAL_CAPACITY = 1024
# A decimation bucket spans at least this many blocks of the pyramid level it is read from (see decimated()).
MIN_GROUP = 4


class Buffer:
    """A float64 array that doubles its capacity as it fills: O(1) amortised appends, views without copies."""

    __slots__ = ("_data", "_size")

    def __init__(self, capacity: int = INITIAL_CAPACITY) -> None:
        self._data = np.empty(max(1, capacity), dtype=np.float64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, value: float) -> None:
        if self._size == self._data.shape[0]:
            self._grow(self._size + 1)
        self._data[self._size] = value
        self._size += 1

    def extend(self, values: np.ndarray | Sequence[float]) -> None:
        values = np.asarray(values, dtype=np.float64)
        end = self._size + values.shape[0]
        if end > self._data.shape[0]:
            self._grow(end)
        self._data[self._size : end] = values
        self._size = end

    def _grow(self, needed: int) -> None:
        capacity = self._data.shape[0]
        while capacity < needed:
            capacity *= 2
        grown = np.empty(capacity, dtype=np.float64)
        grown[: self._size] = self._data[: self._size]
        self._data = grown

    @property
    def values(self) -> np.ndarray:
        """The filled part (a view: valid until the next append that grows the buffer)."""
        return self._data[: self._size]


class Series:
    """(x, y) points in x order (steps), with a lazily extended min/max pyramid over y for decimation."""

    __slots__ = ("_x", "_y", "_n", "_mins", "_maxs", "_follow", "version")

    def __init__(self, capacity: int = INITIAL_CAPACITY) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self._n = 0
        # Level k (from 1) holds the min and max of each complete block of LEVEL_FACTOR**k points.
        self._mins: list[Buffer] = []
        self._maxs: list[Buffer] = []
        self.version = 0  # changes on every append: charts redraw a curve only when it moved
        # decimated()'s complete groups for ranges from the first point (see _from_start); valid only while the
        # series just grows, so anything that ever changes or drops points must reset it to None.
        self._follow: FollowCache | None = None

    def __len__(self) -> int:
        return self._n

    def append(self, x: float, y: float | None) -> None:
        # Inlined (not Buffer.append): this runs several times per event while a long history replays.
        n = self._n
        if n == self._x.shape[0]:
            self._reserve(n + 1)
        self._x[n] = x
        self._y[n] = math.nan if y is None else y
        self._n = n + 1
        self.version += 1

    def extend(self, xs: np.ndarray | Sequence[float], ys: np.ndarray | Sequence[float]) -> None:
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        if xs.shape != ys.shape:
            raise ValueError("x and y must have the same length")
        end = self._n + xs.shape[0]
        if end > self._x.shape[0]:
            self._reserve(end)
        self._x[self._n : end] = xs
        self._y[self._n : end] = ys
        self._n = end
        self.version += 1

    def _reserve(self, needed: int) -> None:
        capacity = self._x.shape[0]
        while capacity < needed:
            capacity *= 2
        for name in ("_x", "_y"):
            grown = np.empty(capacity, dtype=np.float64)
            grown[: self._n] = getattr(self, name)[: self._n]
            setattr(self, name, grown)

    @property
    def x(self) -> np.ndarray:
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self._n]

    def last(self) -> tuple[float, float] | None:
        if not self._n:
            return None
        return float(self._x[self._n - 1]), float(self._y[self._n - 1])

    def tail(self, count: int) -> np.ndarray:
        """The last ``count`` y values."""
        return self._y[max(0, self._n - count) : self._n]

    def _extend_levels(self) -> None:
        """Add the pyramid blocks completed since the last call (each level built from the one below)."""
        if self._mins and len(self._mins[0]) == self._n // LEVEL_FACTOR:
            return  # no block of any level completed since (a live run appends a point per frame)
        level = 1
        below_min = below_max = self.y
        while True:
            block = LEVEL_FACTOR**level
            complete = self._n // block
            if complete == 0:
                break
            if len(self._mins) < level:
                self._mins.append(Buffer(max(16, complete * 2)))
                self._maxs.append(Buffer(max(16, complete * 2)))
            mins, maxs = self._mins[level - 1], self._maxs[level - 1]
            done = len(mins)
            if complete > done:
                lo, hi = done * LEVEL_FACTOR, complete * LEVEL_FACTOR
                mins.extend(np.fmin.reduce(below_min[lo:hi].reshape(-1, LEVEL_FACTOR), axis=1))
                maxs.extend(np.fmax.reduce(below_max[lo:hi].reshape(-1, LEVEL_FACTOR), axis=1))
            below_min, below_max = mins.values, maxs.values
            level += 1

    def index_range(self, x_min: float | None, x_max: float | None) -> tuple[int, int]:
        """Indices of the points with x in [x_min, x_max], widened by one point each side so lines reach the edges."""
        x = self._x[: self._n]
        # The method, not np.searchsorted: its wrapper costs as much again as the search (once a curve a redraw).
        start = 0 if x_min is None else max(0, int(x.searchsorted(x_min, "left")) - 1)
        stop = self._n if x_max is None else min(self._n, int(x.searchsorted(x_max, "right")) + 1)
        return start, max(start, stop)

    def decimated(
        self, x_min: float | None = None, x_max: float | None = None, buckets: int = 1000
    ) -> tuple[np.ndarray, np.ndarray]:
        """The points in [x_min, x_max]; more than ``2 * buckets`` become each bucket's min and max ("peak" mode).

        Spikes survive (a loss spike or a memory peak stays visible at any zoom), and the cost depends on
        ``buckets``, not on how many points the range holds.
        """
        if x_min is None and x_max is None:
            start, stop = 0, self._n  # following the whole run: nothing to search
        else:
            start, stop = self.index_range(x_min, x_max)
        count = stop - start
        if count <= 2 * buckets:
            return self._x[start:stop], self._y[start:stop]
        self._extend_levels()
        per_bucket = count / buckets
        # Buckets are whole blocks of a pyramid level (level 0: the points themselves), rounded down to no wider
        # than a bucket: a wider one leaves some pixel columns without their min-max stroke, and a dense band
        # gets white stripes. The level is the coarsest with MIN_GROUP blocks a bucket, so rounding down adds
        # at most 1 / MIN_GROUP more buckets (up to half more when the points themselves are grouped).
        level = 0
        while level < len(self._mins) and LEVEL_FACTOR ** (level + 1) * MIN_GROUP <= per_bucket:
            level += 1
        block = LEVEL_FACTOR**level
        group = max(1, int(per_bucket // block))
        first = -(-start // block)  # first block wholly inside the range
        last = min(stop // block, len(self._mins[level - 1]) if level else self._n)
        groups = max(0, (last - first) // group)
        core_end = first + groups * group
        head_end = min(first * block, stop)  # a partial bucket of raw points before the first whole block
        tail_start = max(start, core_end * block)  # and one after the last whole group
        if start == 0:
            # The run from its beginning (the live view): its complete groups never change as points arrive,
            # so they come from the previous call's and only the groups completed since are reduced.
            return self._from_start(level, group, groups, tail_start, stop)
        head = 1 if head_end > start else 0
        tail = 1 if stop > tail_start else 0
        total = head + groups + tail
        # Each bucket's minimum, maximum and first x (the rows), reduced straight into place; two takes then lay
        # them out as the drawn points (the cost here is per numpy call, not per point: ~1 µs each).
        table = np.empty((3, total))
        if head:
            raw_bucket(self._x, self._y, start, head_end, table, 0)
        if groups:
            self._reduce_groups(level, group, first, groups, table, head)
        if tail:
            raw_bucket(self._x, self._y, tail_start, stop, table, total - 1)
        # Odd buckets are drawn top-down: consecutive buckets then meet max-to-max and min-to-min, so the line
        # between them is short instead of crossing the whole band twice (half the pixels to paint, same peaks).
        ys_order, xs_order = point_order(total, 0)
        xs, ys = table.take(xs_order), table.take(ys_order)
        # A flat run of three points needs a bucket whose min equals its max: one comparison rules it out.
        if (table[0] == table[1]).any():
            return drop_flat_interior(xs, ys)
        return xs, ys

    def _reduce_groups(
        self, level: int, group: int, first: int, groups: int, table: np.ndarray, column: int
    ) -> None:
        """Fill ``table[:, column : column + groups]`` with the min, max and first x of each group of blocks."""
        block = LEVEL_FACTOR**level
        core_end = first + groups * group
        core = slice(column, column + groups)
        if level == 0:
            mins = maxs = self._y[first:core_end]
        else:
            mins = self._mins[level - 1].values[first:core_end]
            maxs = self._maxs[level - 1].values[first:core_end]
        if group == 1:
            table[0, core], table[1, core] = mins, maxs
        elif level == 0:
            # Minima and maxima of the same points: one transposed copy serves both.
            points = as_columns(mins, groups, group)
            np.fmin.reduce(points, axis=0, out=table[0, core])
            np.fmax.reduce(points, axis=0, out=table[1, core])
        else:
            grouped(np.fmin, mins, groups, group, out=table[0, core])
            grouped(np.fmax, maxs, groups, group, out=table[1, core])
        table[2, core] = self._x[first * block : core_end * block : group * block]

    def _from_start(
        self, level: int, group: int, groups: int, tail_start: int, stop: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """decimated() for a range that starts at the first point, from the cached points of its complete groups.

        The series only grows (append and extend are its only changes), so with the same level and group size
        a complete group's points never change; another level or group size starts the cache afresh.
        """
        cache = self._follow
        if cache is None or cache.level != level or cache.group != group:
            cache = self._follow = FollowCache(level, group)
        done = cache.groups
        if groups > done:
            new = groups - done
            table = np.empty((3, new))
            self._reduce_groups(level, group, done * group, new, table, 0)
            # Bucket i is drawn top-down when i is odd: the new ones continue the cached parity.
            ys_order, xs_order = point_order(new, done & 1)
            flat = np.flatnonzero(table[0] == table[1])
            if cache.first_flat == math.inf and flat.shape[0]:
                cache.first_flat = done + int(flat[0])
            cache.xs = np.concatenate((cache.xs, table.take(xs_order)))
            cache.ys = np.concatenate((cache.ys, table.take(ys_order)))
            cache.groups = groups
        size = 2 * groups
        tail = stop > tail_start
        xs = np.empty(size + 2 if tail else size)
        ys = np.empty(xs.shape[0])
        xs[:size] = cache.xs[:size]
        ys[:size] = cache.ys[:size]
        flat = cache.first_flat < groups
        if tail:
            values = self._y[tail_start:stop]
            low, high = np.fmin.reduce(values), np.fmax.reduce(values)
            xs[size] = xs[size + 1] = self._x[tail_start]
            if groups & 1:
                low, high = high, low
            ys[size], ys[size + 1] = low, high
            flat = flat or low == high
        if flat:
            return drop_flat_interior(xs, ys)
        return xs, ys


class FollowCache:
    """decimated()'s points for the complete groups of a range from the first point, at one level and group size."""

    __slots__ = ("level", "group", "groups", "xs", "ys", "first_flat")

    def __init__(self, level: int, group: int) -> None:
        self.level = level
        self.group = group
        self.groups = 0  # complete groups whose points xs and ys hold (two each)
        self.xs = self.ys = np.empty(0)
        self.first_flat: float = math.inf  # the first group whose min equals its max (then flat runs may exist)


def raw_bucket(x: np.ndarray, y: np.ndarray, lo: int, hi: int, table: np.ndarray, column: int) -> None:
    """One bucket straight from the points lo..hi (a partial block at either end of a range) into a table column."""
    values = y[lo:hi]
    table[0, column] = np.fmin.reduce(values)
    table[1, column] = np.fmax.reduce(values)
    table[2, column] = x[lo]


@functools.lru_cache(maxsize=64)
def point_order(buckets: int, parity: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the drawn points come from in a flattened (3, buckets) table of each bucket's min, max and first x.

    ys: min then max per bucket, max first in every odd one (counting ``parity`` buckets before the first);
    xs: each bucket's first x twice. Read-only: they are shared between calls.
    """
    bucket = np.arange(buckets)
    top_down = (bucket + parity) & 1
    ys = np.empty(2 * buckets, dtype=np.intp)
    ys[0::2] = top_down * buckets + bucket
    ys[1::2] = (1 - top_down) * buckets + bucket
    xs = np.repeat(2 * buckets + bucket, 2)
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def as_columns(values: np.ndarray, groups: int, group: int) -> np.ndarray:
    """The runs of ``group`` consecutive values as the columns of a contiguous (group, groups) copy.

    Measured here: numpy reduces the rows of a (groups, group) view one row at a time (~35 ns a row) and
    reduceat costs ~20 ns a group, while a reduction down whole columns runs vectorised. The transposing copy
    plus that reduction costs 2-4x less (group 6, 626 groups: 1.3 + 1.4 µs against 13 µs with reduceat and
    6 µs column by column; group 44: 9 + 4 µs against 12.5 µs, and one copy serves both min and max).
    """
    return values[: groups * group].reshape(groups, group).T.copy()


def grouped(
    ufunc: np.ufunc, values: np.ndarray, groups: int, group: int, out: np.ndarray | None = None
) -> np.ndarray:
    """``ufunc`` over each run of ``group`` consecutive values (``values`` holds ``groups * group`` of them)."""
    if group == 1:
        if out is None:
            return values[:groups].copy()
        out[...] = values[:groups]
        return out
    # Into a contiguous ``out`` only: a strided one makes numpy's reduction several times slower.
    return ufunc.reduce(as_columns(values, groups, group), axis=0, out=out)


def finite_median(values: np.ndarray) -> float | None:
    """The median of the values that are not NaN, None when there are none.

    For a few values (a window of recent steps): Python's median costs a tenth of numpy's per call.
    """
    finite = [value for value in values.tolist() if not math.isnan(value)]
    return statistics.median(finite) if finite else None


def drop_flat_interior(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same line without the points inside runs of equal y (a flat stretch needs only its two ends).

    Peak memory and node RAM stay flat for long stretches: drawing each of their ~2 points per pixel costs
    as much as a noisy curve, and a dashed or wide pen costs several times more per vertex.
    """
    if ys.shape[0] < 3:
        return xs, ys
    flat = ys[1:-1] == ys[:-2]
    flat &= ys[1:-1] == ys[2:]
    if not flat.any():
        return xs, ys
    keep = np.ones(ys.shape[0], dtype=bool)
    keep[1:-1] = ~flat
    return xs[keep], ys[keep]


# What each rank's step events feed, by field name (the series key is the field).
STEP_METRICS = ("loss", "mlx_active_bytes", "mlx_peak_bytes", "step_time_s", "tokens_per_s")
RANK_METRICS = (*STEP_METRICS, "val_loss")
# Ranks compared for "slowest" over this many recent steps (a median: one hiccup does not flag a rank).
SLOWEST_WINDOW = 20


@dataclass(frozen=True)
class SlowestRank:
    rank: int
    median_step_time_s: float
    excess: float  # how much slower than the median rank, as a fraction (0.12: 12% slower)


@dataclass
class RunSeries:
    """Everything the charts draw for one run, folded from its events in order; x is the step everywhere.

    Node RAM is reported by every rank on a node; only the node's first rank is kept, plotted at that
    rank's current step so memory lines up with loss on a shared x axis.
    """

    rank_nodes: list[str] = field(default_factory=list)  # node name of each rank, when the launcher knows it
    world_size: int = 0
    ranks: dict[int, dict[str, Series]] = field(default_factory=dict)
    loss_mean: Series = field(default_factory=Series)
    val_loss: Series = field(default_factory=Series)  # held-out loss: one value per eval, the same on every rank
    node_ram: dict[str, Series] = field(default_factory=dict)
    node_ram_total: dict[str, float] = field(default_factory=dict)
    node_load: dict[str, float] = field(default_factory=dict)
    hosts: dict[int, str] = field(default_factory=dict)
    last_step: dict[int, int] = field(default_factory=dict)
    version: int = 0  # changes whenever anything was added
    _node_reporter: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rank_nodes = list(self.rank_nodes)
        self.world_size = max(self.world_size, len(self.rank_nodes))
        for rank in range(self.world_size):
            self.rank(rank)

    def rank(self, rank: int) -> dict[str, Series]:
        metrics = self.ranks.get(rank)
        if metrics is None:
            metrics = self.ranks[rank] = {name: Series() for name in RANK_METRICS}
            self.world_size = max(self.world_size, rank + 1)
        return metrics

    def node_of(self, rank: int) -> str:
        """The rank's node name: the launcher's mapping, else the host the rank reported, else ``rank N``."""
        if 0 <= rank < len(self.rank_nodes) and self.rank_nodes[rank]:
            return self.rank_nodes[rank]
        return self.hosts.get(rank) or f"rank {rank}"

    def nodes(self) -> list[str]:
        """Node names in rank order, each once."""
        return list(dict.fromkeys(self.node_of(rank) for rank in sorted(self.ranks)))

    def ranks_on(self, node: str) -> list[int]:
        return [rank for rank in sorted(self.ranks) if self.node_of(rank) == node]

    def add(self, event: Event) -> None:
        """Fold one event (any kind; kinds without a chart are ignored)."""
        rank = event.rank
        if isinstance(event, StepEvent):
            metrics = self.rank(rank)
            step = event.step
            metrics["loss"].append(step, event.loss)
            metrics["mlx_active_bytes"].append(step, event.mlx_active_bytes)
            metrics["mlx_peak_bytes"].append(step, event.mlx_peak_bytes)
            metrics["step_time_s"].append(step, event.step_time_s)
            metrics["tokens_per_s"].append(step, event.tokens_per_s)
            if step > self.last_step.get(rank, 0):
                self.last_step[rank] = step
            # Every rank reports the same mean: keep it once per step.
            if event.loss_mean is not None:
                last = self.loss_mean.last()
                if last is None or step > last[0]:
                    self.loss_mean.append(step, event.loss_mean)
        elif isinstance(event, NodeEvent):
            if event.host:
                self.hosts.setdefault(rank, event.host)
            self.rank(rank)
            node = self.node_of(rank)
            reporter = self._node_reporter.setdefault(node, rank)
            if rank != reporter:
                return
            series = self.node_ram.get(node)
            if series is None:
                series = self.node_ram[node] = Series()
            series.append(self.last_step.get(rank, 0), event.ram_used_bytes)
            if event.ram_total_bytes:
                self.node_ram_total[node] = event.ram_total_bytes
            if event.load_1m is not None:
                self.node_load[node] = event.load_1m
        elif isinstance(event, EvalEvent):
            self.rank(rank)["val_loss"].append(event.step, event.val_loss)
            last = self.val_loss.last()
            if last is None or event.step > last[0]:
                self.val_loss.append(event.step, event.val_loss)
        elif isinstance(event, StartEvent):
            if event.host:
                self.hosts[rank] = event.host
            self.rank(rank)
            for other in range(event.world_size):
                self.rank(other)
        else:
            return
        self.version += 1

    def add_all(self, events: Iterable[Event]) -> None:
        for event in events:
            self.add(event)

    def node_ram_now(self, node: str) -> tuple[float | None, float | None]:
        """(used, total) bytes of the node's last report."""
        series = self.node_ram.get(node)
        last = series.last() if series is not None else None
        used = None if last is None or math.isnan(last[1]) else last[1]
        return used, self.node_ram_total.get(node)

    def slowest_rank(self, window: int = SLOWEST_WINDOW) -> SlowestRank | None:
        """The rank with the highest median step time over its last ``window`` steps (None with fewer than 2 ranks)."""
        medians: dict[int, float] = {}
        for rank, metrics in self.ranks.items():
            median = finite_median(metrics["step_time_s"].tail(window))
            if median is not None:
                medians[rank] = median
        if len(medians) < 2:
            return None
        rank = max(medians, key=lambda r: (medians[r], -r))
        typical = statistics.median(medians.values())
        excess = (medians[rank] - typical) / typical if typical > 0 else 0.0
        return SlowestRank(rank, medians[rank], excess)


__all__ = ["Buffer", "RANK_METRICS", "RunSeries", "Series", "SlowestRank", "STEP_METRICS", "finite_median"]
