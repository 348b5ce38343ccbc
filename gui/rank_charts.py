"""Live charts of a run, one pyqtgraph curve per rank: loss (and the mean), memory per rank and node, speed.

Curves are created once per run and redrawn from a timer (the dashboard's ~10 Hz tick), only when their
series changed or the view moved. Each redraw hands pyqtgraph the series already peak-decimated to the
plot's pixel width for the visible steps (``Series.decimated``), so a frame costs the same at 1M points
per rank as at 1k; pyqtgraph's own downsampling and clipping would still walk every visible point.
The dense curves of a plot are painted together as one numpy-made image (``BandLayer``, gui/chart_bands.py).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsItem,
    QGraphicsTextItem,
    QGraphicsView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from gui.chart_axes import SharedTicksAxis, StepAxis
from gui.chart_bands import BandLayer
from gui.chart_grid import LightGrid
from gui.chart_view import BoundsViewBox
from gui.series import RunSeries, Series, SlowestRank, finite_median
from gui.theme import heading

# The slowest rank is named only when it is at least this much slower than the typical rank: ranks of a
# data-parallel run wait for each other in every step, so small differences are noise.
SLOWEST_MIN_EXCESS = 0.02
MIN_BUCKETS = 100
# A curve whose points are at least this many pixels apart on average is drawn antialiased.
SPARSE_PX = 2
# A run's first step time is left out of the step-time chart's auto-range when it is this many times the median
# of the next FIRST_STEP_WINDOW steps (it includes compiling the step).
FIRST_STEP_OUTLIER = 2.0
FIRST_STEP_WINDOW = 20
# Entries of pyqtgraph's "Plot Options" menu that do not apply to these charts (see Chart.__init__).
PLOT_OPTIONS_HIDDEN = ("Transforms", "Downsample", "Average", "Alpha", "Grid", "Points")
# The widest pen a dense curve may have to be drawn by its chart's BandLayer (the mean and the slowest rank: 3).
BAND_MAX_PEN = 3


def rank_color(rank: int, world_size: int, *, dark: bool = True) -> QColor:
    """The rank's colour, the same in every chart: the rank-th of ``world_size`` hues."""
    # Full-brightness yellows and cyans vanish on a white plot: darker hues on light backgrounds.
    return pg.intColor(rank, hues=max(world_size, 2), maxValue=255 if dark else 200, sat=220 if dark else 255)


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Base).lightness() < 128


def is_bandable(pen: object) -> bool:
    """Whether a ``BandLayer`` draws what the pen draws: solid, cosmetic, a few whole pixels wide."""
    return (isinstance(pen, QPen) and pen.style() == Qt.PenStyle.SolidLine and pen.isCosmetic()
            and pen.widthF() <= BAND_MAX_PEN and pen.widthF() == int(pen.widthF()))


class DecimatedCurve(pg.PlotCurveItem):
    """A PlotCurveItem for points sorted by x: its bounds (asked for by every auto-range, several times a frame)
    come from the end points and one NaN-skipping min/max pass, without pyqtgraph's generic checks.

    A dense curve (``dense``: about a point per pixel column or more) drawn with a solid pen of a few pixels and
    without gaps is ``banded``: its chart's ``BandLayer`` paints it, with the chart's other dense curves, in one image;
    the item itself then paints nothing but still gives the auto-range its bounds and the legend its pen.
    """

    def __init__(self, *args: object, layer: BandLayer | None = None, **kwargs: object) -> None:
        self.layer = layer
        self.dense = False
        self.banded = False
        # Points at this x are drawn but left out of the y auto-range (the run's first step time: see RankCharts).
        self.range_skips_x: float | None = None
        super().__init__(*args, **kwargs)

    def setData(self, *args: object, **kwargs: object) -> None:  # noqa: N802 - pyqtgraph's name
        super().setData(*args, **kwargs)
        self._sync_banded()
        if self.banded and self.layer is not None:
            self.layer.invalidate()

    def set_points(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """``setData(xs, ys)`` for two 1-D float arrays of one length, without pyqtgraph's handling of every other
        kind of argument (a third of the cost, for ~40 curves a frame)."""
        self.yData, self.xData = ys, xs
        self.invalidateBounds()
        self.prepareGeometryChange()
        self.informViewBoundsChanged()
        self.path = self.fillPath = self._fillPathList = self._mouseShape = None
        self._lineSegmentsRendered = False
        self._sync_banded()
        if self.banded:
            if self.layer is not None:
                self.layer.invalidate()
        else:
            self.update()
        self.sigPlotChanged.emit(self)

    def setPen(self, *args: object, **kwargs: object) -> None:  # noqa: N802 - pyqtgraph's name
        super().setPen(*args, **kwargs)
        self._sync_banded()

    def _sync_banded(self) -> None:
        ys = self.yData
        banded = bool(self.layer is not None and self.dense and is_bandable(self.opts["pen"])
                      and ys is not None and np.isfinite(ys).all())
        if banded != self.banded:
            self.banded = banded
            # No contents: Qt neither asks its bounding rect nor calls paint() when painting the scene.
            self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemHasNoContents, banded)
            if self.layer is not None:
                self.layer.invalidate()

    def itemChange(self, change: QGraphicsItem.GraphicsItemChange, value: object) -> object:  # noqa: N802 - Qt's
        result = super().itemChange(change, value)
        # Hidden or shown again (a click on its legend entry): the layer's image holds it or must.
        if change == QGraphicsItem.GraphicsItemChange.ItemVisibleHasChanged and self.banded and self.layer is not None:
            self.layer.invalidate()
        return result

    def paint(self, p: QPainter, opt: object, widget: object) -> None:  # noqa: D102 - pyqtgraph's
        if not self.banded:
            super().paint(p, opt, widget)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt's name
        if not self.banded:
            return super().boundingRect()
        # The layer paints it: no pixel padding to work out (pyqtgraph's costs ~50 µs per view change).
        (x_min, x_max), (y_min, y_max) = self.dataBounds(0), self.dataBounds(1)
        if x_min is None or y_min is None:
            return QRectF()
        return QRectF(x_min, y_min, x_max - x_min, y_max - y_min)

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange: object = None) -> tuple:  # noqa: N803 - Qt's name
        if frac < 1.0 or orthoRange is not None or self.opts["stepMode"] or not self.opts["pen"].isCosmetic():
            return super().dataBounds(ax, frac, orthoRange)
        cache = self._boundsCache[ax]
        if cache is not None and cache[0] == (frac, orthoRange):
            return cache[1]
        data = self.xData if ax == 0 else self.yData
        if data is None or data.shape[0] == 0:
            return None, None
        if ax == 0:
            bounds = float(data[0]), float(data[-1])
        else:
            xs = self.xData
            if self.range_skips_x is not None and xs[0] == self.range_skips_x:
                kept = data[int(xs.searchsorted(xs[0], side="right")):]
                data = kept if kept.shape[0] else data
            bounds = float(np.fmin.reduce(data)), float(np.fmax.reduce(data))
            if math.isinf(bounds[0]) or math.isinf(bounds[1]):
                return super().dataBounds(ax, frac, orthoRange)
        self._boundsCache[ax] = [(frac, orthoRange), bounds]
        return bounds


def align_left_axes(charts: list[Chart], sample: str = "8888.8") -> None:
    """One width for the charts' left axes, with room for ``sample`` as a tick label: x axes line up and share ticks."""
    axes = [chart.plot.getAxis("left") for chart in charts]
    font = axes[0].style["tickFont"] or QFont()
    text = QFontMetrics(font).horizontalAdvance(sample)
    label = max(axis.label.boundingRect().height() * 0.8 for axis in axes)
    width = text + axes[0].style["tickTextOffset"][0] + max(0, axes[0].style["tickLength"]) + label
    for axis in axes:
        axis.setWidth(math.ceil(width))


@dataclass
class LiveCurve:
    """A plotted curve bound to a series; redrawn when the series or the view changed."""

    item: DecimatedCurve | pg.PlotDataItem
    series: Series
    drawn_version: int = -1
    drawn_length: int = 0  # how many points the series held when the curve was drawn


def only_appended_beyond(curve: LiveCurve, x_max: float | None) -> bool:
    """Whether the series only grew past ``x_max`` since the curve was drawn, beyond a point already out of view.

    Someone looking at an earlier stretch of a live run then sees nothing change: the curve is not redrawn.
    (The drawn line already ran to the first point past the view's edge, so later points cannot show.)
    """
    drawn = curve.drawn_length
    series = curve.series
    if x_max is None or drawn == 0 or len(series) < drawn:
        return False
    return bool(series.x[drawn - 1] > x_max)


class Chart(QWidget):
    """One plot with a title line: curves bound to series, redrawn on demand with the visible points only."""

    def __init__(self, title: str, y_label: str, units: str | None = None, parent: QWidget | None = None, *,
                 x_tick_images: OrderedDict | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(title)
        self.title = heading(QLabel(title))
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        # x_tick_images: shared by charts whose x axes are linked, so equal ranges draw their ticks once.
        self.plot_widget = pg.PlotWidget(viewBox=BoundsViewBox(),
                                         axisItems={"bottom": StepAxis("bottom", x_tick_images),
                                                    "left": SharedTicksAxis("left")})
        # No background cache: Qt blits the cached background (the whole plot, ~300k pixels) on every repaint with a
        # thread pool here (~2 ms a frame for four plots, mostly waiting on the threads); filling it with the
        # background colour is a plain memory fill.
        self.plot_widget.setCacheMode(QGraphicsView.CacheModeFlag.CacheNone)
        # One rectangle around what changed, not pyqtgraph's minimal region: a live chart changes nearly all of its
        # view each frame anyway, and every image drawn under a region of many rectangles is clipped row by row
        # against it (a left axis ~90 µs instead of ~3 µs; ~0.5 ms a frame for the four charts).
        self.plot_widget.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.BoundingRectViewportUpdate)
        self.plot = self.plot_widget.getPlotItem()
        # The hidden top and right axes would follow every range change too, laying out their (empty) labels
        # anew each time: ~0.6 ms a frame for the four charts.
        for hidden in ("top", "right"):
            self.plot.getAxis(hidden).unlinkFromView()
        # Major and minor ticks, without pyqtgraph's third level of tiny ones (5x the tick marks, and text sizes
        # measured for labels never shown): an axis draws its ticks for a new range in ~0.45 ms instead of ~1 ms.
        for shown in ("left", "bottom"):
            self.plot.getAxis(shown).setStyle(maxTickLevel=1, maxTextLevel=1)
        # A grid item, not showGrid(): the axes' own grid lines cost 4-30 ms a repaint here, a GridItem ~0.5 ms
        # (and LightGrid, the same lines without a QPicture, ~0.2 ms).
        self.grid = LightGrid()
        self.grid.setTextPen(None)
        self.grid.setTickSpacing(x=[None, None], y=[None, None])  # major and minor lines only: less clutter
        self.plot.addItem(self.grid, ignoreBounds=True)
        # Added before any curve: the dense curves it paints lie below those Qt still draws (sparse, dashed, gapped).
        self.bands = BandLayer()
        self.plot.addItem(self.bands, ignoreBounds=True)
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", y_label, units=units)
        self.plot.setMenuEnabled(True)
        # pyqtgraph's plot options act on its own PlotDataItems: the decimated curves here would ignore a log scale,
        # an FFT or its downsampling, and its grid is the slow one LightGrid replaces. The menu keeps the view's
        # range, mouse and export entries.
        for name in PLOT_OPTIONS_HIDDEN:
            self.plot.setContextMenuActionVisible(name, False)
        self.view = self.plot.getViewBox()
        self.view.sigXRangeChanged.connect(self._on_range_changed)
        self.legend: pg.LegendItem | None = None
        self.curves: dict[str, LiveCurve] = {}
        # The chart whose x axis this one is linked to: its auto-range decides whether the whole run is in view.
        self.x_source: Chart = self
        self._drawn_range: tuple[float | None, float | None, int] | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        self.header = QHBoxLayout()
        self.header.addWidget(self.title, 1)
        layout.addLayout(self.header)
        layout.addWidget(self.plot_widget, 1)

    def add_legend(self, columns: int = 1) -> None:
        self.legend = self.plot.addLegend(offset=(-8, 8), colCount=columns, labelTextSize="8pt")

    def cache_text(self) -> None:
        """Keep the plot's texts (axis labels, legend entries) as pixmaps, drawn again only when they change.

        Every repaint of a plot otherwise lays out and draws each text anew (~2 ms a frame for the four charts
        here); call after adding curves with legend entries.
        """
        for item in self.plot.scene().items():
            if isinstance(item, QGraphicsTextItem) and item.cacheMode() is QGraphicsItem.CacheMode.NoCache:
                item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)

    def add_curve(self, key: str, series: Series, pen: object, name: str | None = None, **options: object) -> LiveCurve:
        # connect="finite": a missing value (None in the event) leaves a gap instead of a line to zero.
        if "symbol" in options:
            item = pg.PlotDataItem(pen=pen, name=name, connect="finite", **options)
        else:
            # A bare PlotCurveItem: the points are already decimated and clipped to the view, and PlotDataItem
            # would copy them and re-run its own downsampling and clipping checks on every setData. Antialiasing
            # is decided per redraw (see redraw()).
            item = DecimatedCurve(pen=pen, name=name, connect="finite", antialias=False, layer=self.bands, **options)
            self.bands.curves.append(item)
        self.plot.addItem(item)
        curve = self.curves[key] = LiveCurve(item, series)
        return curve

    def remove_curves(self) -> None:
        for curve in self.curves.values():
            self.plot.removeItem(curve.item)
        self.curves.clear()
        self.bands.set_curves([])
        if self.legend is not None:
            self.legend.clear()
        self._drawn_range = None

    def rebind(self, key: str, series: Series) -> None:
        curve = self.curves[key]
        curve.series = series
        curve.drawn_version = -1
        curve.drawn_length = 0

    def _on_range_changed(self, *_: object) -> None:
        self._drawn_range = None if not self.x_source.view.autoRangeEnabled()[0] else self._drawn_range

    def visible_range(self) -> tuple[float | None, float | None, int]:
        """(x_min, x_max, buckets): everything while the x axis follows the data, else what is in view."""
        # A bucket per device pixel column: on a 2x (Retina) screen a bucket per logical pixel leaves every other
        # column of a dense band with only the thin line between buckets (stripes).
        ratio = self.plot_widget.devicePixelRatioF() or 1.0
        buckets = max(MIN_BUCKETS, int(self.view.width() * ratio) or 0)
        # A linked chart's own x auto-range is off (pyqtgraph copies the source's range into it), but while the
        # source follows the run it shows the whole run too: no new decimation each time the run grows a step.
        if self.x_source.view.autoRangeEnabled()[0]:
            return None, None, buckets
        low, high = self.view.viewRange()[0]
        return low, high, buckets

    def redraw(self) -> int:
        """Update the curves whose data or view changed; returns how many were updated."""
        visible = self.visible_range()
        moved = visible != self._drawn_range
        x_min, x_max, buckets = visible
        updated = 0
        for curve in self.curves.values():
            version = curve.series.version
            if not moved and (version == curve.drawn_version or only_appended_beyond(curve, x_max)):
                continue
            # A pen w pixels wide shows no detail finer than w pixels, and wide pens cost several times more
            # per vertex: the thick mean and the flagged slowest rank get proportionally fewer buckets.
            pen = curve.item.opts.get("pen")
            width = max(1, int(pen.widthF())) if isinstance(pen, QPen) else 1
            xs, ys = curve.series.decimated(x_min, x_max, max(MIN_BUCKETS, buckets // width))
            if isinstance(curve.item, DecimatedCurve):
                # Antialiased only while the points are sparse (2+ pixels apart), where a staircase would show and
                # smoothing it costs little; a dense line covers its columns anyway and would cost 2-3x more.
                sparse = xs.shape[0] * SPARSE_PX <= buckets
                curve.item.opts["antialias"] = sparse
                curve.item.dense = not sparse
                curve.item.set_points(xs, ys)
            else:
                curve.item.setData(xs, ys)
            curve.drawn_version = version
            curve.drawn_length = len(curve.series)
            updated += 1
        self._drawn_range = visible
        return updated

    def points(self, key: str) -> int:
        """How many points the curve's series holds (what a test asks, independent of decimation)."""
        return len(self.curves[key].series)

    def apply_palette(self, palette: QPalette) -> None:
        background = palette.color(QPalette.ColorRole.Base)
        text = palette.color(QPalette.ColorRole.Text)
        self.plot_widget.setBackground(background)
        grid = QColor(text)
        grid.setAlpha(28)
        self.grid.setPen(pg.mkPen(grid))
        for axis in ("left", "bottom"):
            self.plot.getAxis(axis).setPen(pg.mkPen(palette.color(QPalette.ColorRole.Mid)))
            self.plot.getAxis(axis).setTextPen(pg.mkPen(text))
        if self.legend is not None:
            self.legend.setLabelTextColor(text)
            # setLabelTextColor only records the colour: entries already shown keep theirs until laid out again.
            for _sample, label in self.legend.items:
                label.setText(label.text)
            # Opaque: a translucent box costs Qt ~2-4 ms to blend on every repaint of the plot here (an opaque one
            # ~0.01 ms), and the box sits in a corner where it hides only a little of the curves.
            self.legend.setBrush(pg.mkBrush(background))


class RankCharts(QWidget):
    """Loss per rank and the mean, memory per rank and per node, and step time or tokens/s with the slowest rank."""

    slowest_changed = Signal(object)  # SlowestRank | None

    SPEED_METRICS = {"step_time_s": ("Step time per rank", "step time", "s"),
                     "tokens_per_s": ("Tokens/s per rank", "tokens/s", None)}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series = RunSeries()
        self.slowest: SlowestRank | None = None
        x_ticks: OrderedDict = OrderedDict()
        self.loss = Chart("Loss per rank", "loss", x_tick_images=x_ticks)
        self.loss.add_legend(columns=3)
        self.memory = Chart("MLX memory per rank (solid: active, dashed: peak)", "memory", "B", x_tick_images=x_ticks)
        self.node_ram = Chart("RAM per node", "RAM used", "B", x_tick_images=x_ticks)
        self.node_ram.add_legend()
        self.speed = Chart("Step time per rank", "step time", "s", x_tick_images=x_ticks)
        self.speed_metric = "step_time_s"
        self.speed_choice = QComboBox()
        self.speed_choice.addItem("Step time", "step_time_s")
        self.speed_choice.addItem("Tokens/s", "tokens_per_s")
        self.speed_choice.setAccessibleName("Speed metric")
        self.speed_choice.currentIndexChanged.connect(self._on_speed_metric_chosen)
        self.speed.header.addWidget(self.speed_choice)
        self.charts: dict[str, Chart] = {"loss": self.loss, "memory": self.memory, "node_ram": self.node_ram,
                                         "speed": self.speed}
        # Every chart's x is the step: panning or zooming one moves them all.
        for chart in (self.memory, self.node_ram, self.speed):
            chart.plot.setXLink(self.loss.plot)
            chart.x_source = self.loss
        align_left_axes(list(self.charts.values()))
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(6)
        grid.addWidget(self.loss, 0, 0)
        grid.addWidget(self.speed, 0, 1)
        grid.addWidget(self.memory, 1, 0)
        grid.addWidget(self.node_ram, 1, 1)
        self._world_size = 0
        self._nodes: list[str] = []
        self._dark = is_dark(self.palette())
        self._apply_palette()
        # The title says when the first step is above the view: a zoom by hand changes that too.
        self.speed.view.sigYRangeChanged.connect(self._show_speed_title)

    # -- building curves -------------------------------------------------------------------------

    def set_run(self, series: RunSeries) -> None:
        """Show this run's series (a new run: every curve is made again, once)."""
        self.series = series
        for chart in self.charts.values():
            chart.remove_curves()
            chart.view.enableAutoRange()
        self._world_size = 0
        self._nodes = []
        self.slowest = None
        self._sync_curves()
        self.slowest_changed.emit(None)

    def _sync_curves(self) -> None:
        """Add curves for ranks and nodes that appeared since the last redraw (colours follow the world size)."""
        world = self.series.world_size
        if world != self._world_size:
            self._build_rank_curves(world)
        # In rank order (the order nodes first reported RAM in is a race).
        reported = set(self.series.node_ram)
        nodes = [node for node in self.series.nodes() if node in reported]
        nodes += sorted(reported - set(nodes))
        if nodes != self._nodes:
            for index, node in enumerate(nodes):
                if f"node:{node}" not in self.node_ram.curves:
                    self.node_ram.add_curve(f"node:{node}", self.series.node_ram[node], None, name=node)
            self._nodes = nodes
            self._color_nodes()
            self.node_ram.cache_text()

    def _build_rank_curves(self, world: int) -> None:
        for chart in (self.loss, self.memory, self.speed):
            chart.remove_curves()
        text = self.palette().color(QPalette.ColorRole.Text)
        for rank in range(world):
            metrics = self.series.rank(rank)
            color = rank_color(rank, world, dark=self._dark)
            self.loss.add_curve(f"rank:{rank}", metrics["loss"], pg.mkPen(color, width=1), name=f"rank {rank}")
            self.memory.add_curve(f"active:{rank}", metrics["mlx_active_bytes"], pg.mkPen(color, width=1))
            self.memory.add_curve(f"peak:{rank}", metrics["mlx_peak_bytes"],
                                  pg.mkPen(color, width=1, style=Qt.PenStyle.DashLine))
            self.speed.add_curve(f"rank:{rank}", metrics[self.speed_metric], pg.mkPen(color, width=1),
                                 name=f"rank {rank}")
        # The mean over ranks: drawn last and thick, in the text colour, so it reads above the ranks.
        self.loss.add_curve("mean", self.series.loss_mean, pg.mkPen(text, width=3), name="mean")
        self.loss.add_curve("val", self.series.val_loss, pg.mkPen(text, width=1, style=Qt.PenStyle.DotLine),
                            name="validation", symbol="o", symbolSize=5, symbolBrush=text, symbolPen=None)
        self._world_size = world
        for chart in (self.loss, self.memory, self.speed):
            chart.cache_text()
        self.slowest = None

    def _color_nodes(self) -> None:
        for index, node in enumerate(self._nodes):
            color = rank_color(index, max(len(self._nodes), 2), dark=self._dark)
            self.node_ram.curves[f"node:{node}"].item.setPen(pg.mkPen(color, width=2))

    def _on_speed_metric_chosen(self, index: int) -> None:
        metric = self.speed_choice.itemData(index)
        self.speed_metric = metric
        title, label, units = self.SPEED_METRICS[metric]
        self.speed.plot.setLabel("left", label, units=units)
        for rank in range(self._world_size):
            self.speed.rebind(f"rank:{rank}", self.series.rank(rank)[metric])
        self.speed.view.enableAutoRange()
        self._show_slowest(self.slowest)

    # -- redraw ----------------------------------------------------------------------------------

    def redraw(self) -> int:
        """Bring every chart up to date; returns how many curves were redrawn. Call from a ~10 Hz timer."""
        self._sync_curves()
        updated = sum(chart.redraw() for chart in self.charts.values())
        if updated:
            self._skip_first_step_time()
            self._update_slowest()
            # Auto-range now, not when the views paint: pyqtgraph would otherwise change the ranges (and so the
            # axes) in the middle of the paint, and every view would paint twice. The loss chart first: the
            # others' x follows it.
            for chart in self.charts.values():
                chart.view.prepareForPaint()  # a new y range retitles the speed chart (sigYRangeChanged)
        return updated

    def _skip_first_step_time(self) -> None:
        """Leave a rank's first step out of the step-time chart's auto-range when it is an outlier.

        A run's first step compiles and allocates: 40 s against 0.5 s for the next ones here, which flattened
        every later step onto the axis. It is still drawn (a line off the top) and the title gives its time.
        """
        for rank in range(self._world_size):
            curve = self.speed.curves.get(f"rank:{rank}")
            if curve is None:
                continue
            series = curve.series
            skip = None
            if self.speed_metric == "step_time_s" and len(series) > 1:
                rest = finite_median(series.y[1 : FIRST_STEP_WINDOW + 1])
                if rest is not None and series.y[0] > FIRST_STEP_OUTLIER * rest:  # a NaN first step compares False
                    skip = float(series.x[0])
            if curve.item.range_skips_x != skip:
                curve.item.range_skips_x = skip
                curve.item.invalidateBounds()
                curve.item.informViewBoundsChanged()

    def _update_slowest(self) -> None:
        slowest = self.series.slowest_rank()
        if slowest is not None and slowest.excess < SLOWEST_MIN_EXCESS:
            slowest = None
        changed = (self.slowest.rank if self.slowest else None) != (slowest.rank if slowest else None)
        self.slowest = slowest
        self._show_slowest(slowest, restyle=changed)
        if changed:
            self.slowest_changed.emit(slowest)

    def _show_speed_title(self) -> None:
        title = self.SPEED_METRICS[self.speed_metric][0]
        slowest = self.slowest
        if slowest is not None:
            title += f" · slowest: rank {slowest.rank} (+{slowest.excess:.0%} step time)"
        first = self._first_step_off_scale()
        if first is not None:
            step, seconds = first
            duration = f"{seconds:.3g} s" if seconds < 100 else f"{seconds:,.0f} s"
            title += f" · step {step:,.0f} ({duration}) off the scale"
        if self.speed.title.text() != title:
            self.speed.title.setText(title)

    def _first_step_off_scale(self) -> tuple[float, float] | None:
        """(step, seconds) of the slowest first step when it lies above the step-time chart's view."""
        if self.speed_metric != "step_time_s":
            return None
        top = self.speed.view.viewRange()[1][1]
        firsts = [(float(curve.series.y[0]), float(curve.series.x[0])) for key, curve in self.speed.curves.items()
                  if key.startswith("rank:") and curve.item.range_skips_x is not None and curve.item.isVisible()]
        if not firsts:
            return None
        seconds, step = max(firsts)
        return (step, seconds) if seconds > top else None

    def _show_slowest(self, slowest: SlowestRank | None, *, restyle: bool = True) -> None:
        self._show_speed_title()
        if not restyle:
            return
        # The slowest rank's speed curve is drawn thick, and its legend entry says so.
        for rank in range(self._world_size):
            curve = self.speed.curves.get(f"rank:{rank}")
            if curve is None:
                continue
            flagged = slowest is not None and slowest.rank == rank
            width = 3 if flagged else 1
            # Only the ranks that gained or lost the flag: a new pen repaints and re-bounds the curve.
            if curve.item.opts["pen"].widthF() != width:
                color = rank_color(rank, self._world_size, dark=self._dark)
                curve.item.setPen(pg.mkPen(color, width=width))
            self._set_legend_label(self.loss, f"rank {rank}", f"rank {rank} (slowest)" if flagged else f"rank {rank}")

    @staticmethod
    def _set_legend_label(chart: Chart, name: str, text: str) -> None:
        if chart.legend is None:
            return
        for sample, label in chart.legend.items:
            if getattr(sample.item, "name", lambda: None)() == name:
                if label.text != text:
                    label.setText(text)
                return

    def legend_labels(self) -> list[str]:
        """The loss chart's legend texts (what a test checks for the slowest flag)."""
        if self.loss.legend is None:
            return []
        return [label.text for _, label in self.loss.legend.items]

    # -- look ------------------------------------------------------------------------------------

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.Type.PaletteChange:
            self._dark = is_dark(self.palette())
            self._apply_palette()
            if self._world_size:
                self._build_rank_curves(self._world_size)
                self._color_nodes()
        super().changeEvent(event)

    def _apply_palette(self) -> None:
        for chart in self.charts.values():
            chart.apply_palette(self.palette())


__all__ = ["Chart", "DecimatedCurve", "LiveCurve", "RankCharts", "SLOWEST_MIN_EXCESS",
           "align_left_axes", "rank_color"]
