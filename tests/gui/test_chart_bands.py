"""BandLayer: dense curves rasterised with numpy look as Qt draws them, and the image is made again only when needed."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QGraphicsItem

from gui.chart_bands import MAX_CURVES_PER_IMAGE, MAX_STRIP_PIXELS, band_strips, column_spans, composite, widened
from gui.rank_charts import Chart
from gui.series import Series


def pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    return np.frombuffer(image.constBits(), np.uint32, image.width() * image.height()).reshape(
        image.height(), image.width()).copy()


def test_column_spans_hold_each_columns_points_and_where_the_line_crosses_its_edges():
    top, bottom = column_spans(np.array([0.5, 1.5, 2.5]), np.array([0.0, 10.0, 10.0]), col0=0, width=4)
    # Column 0: the point at 0 and the crossing into column 1 at 5; column 1: from 5 up to its point at 10;
    # column 2: flat at 10; column 3: past the last point, empty.
    np.testing.assert_array_equal(top[:3], [0.0, 5.0, 10.0])
    np.testing.assert_array_equal(bottom[:3], [5.0, 10.0, 10.0])
    assert np.isnan(top[3]) and np.isnan(bottom[3])


def test_column_spans_drop_points_beyond_the_view_but_keep_the_line_into_it():
    top, bottom = column_spans(np.array([-5.0, 1.5, 9.0]), np.array([0.0, 7.0, 7.0]), col0=0, width=3)
    # The line from (-5, 0) to (1.5, 7) crosses x=0 at y=70/13 and x=1 at y=84/13.
    assert top[0] == pytest.approx(70 / 13) and bottom[0] == pytest.approx(84 / 13)
    assert top[1] == pytest.approx(84 / 13) and bottom[1] == 7.0
    assert top[2] == bottom[2] == 7.0


def painted_one_by_one(tops, bottoms, height, width) -> np.ndarray:
    """The reference: each curve's spans painted over the earlier ones, pixel by pixel (curve k as k + 1)."""
    image = np.zeros((height, width), dtype=np.uint8)
    for color, (top, bottom) in enumerate(zip(tops, bottoms), start=1):
        for column in range(width):
            if np.isnan(top[column]):
                continue
            first = int(np.clip(np.floor(top[column]), 0, height))
            end = int(np.clip(np.floor(bottom[column]) + 1, 0, height))
            image[first:end, column] = color
    return image


def random_spans(curves: int, height: int, width: int) -> tuple[list, list]:
    rng = np.random.default_rng(curves)
    tops, bottoms = [], []
    for _ in range(curves):
        top = rng.uniform(-5, height + 5, width)
        bottom = top + rng.uniform(0, 15, width)
        top[rng.random(width) < 0.2] = np.nan  # columns the curve does not reach
        tops.append(top)
        bottoms.append(bottom)
    return tops, bottoms


@pytest.mark.parametrize("curves", [1, 3, 9, 60, MAX_CURVES_PER_IMAGE])  # 60: more than one pass of 52 curves
def test_composite_paints_later_curves_over_earlier_ones(curves):
    height, width = 40, 30
    tops, bottoms = random_spans(curves, height, width)
    np.testing.assert_array_equal(composite(tops, bottoms, height, width),
                                  painted_one_by_one(tops, bottoms, height, width))


def test_composite_refuses_more_curves_than_an_image_holds():
    tops, bottoms = random_spans(MAX_CURVES_PER_IMAGE + 1, 10, 5)
    with pytest.raises(ValueError, match="at most 255"):
        composite(tops, bottoms, 10, 5)


def test_the_band_image_colours_each_curve_and_leaves_the_rest_transparent():
    numbers = np.array([[0, 1, 2], [2, 0, 1]], dtype=np.uint8)
    [(row, image)] = band_strips(numbers, [pg.mkColor(255, 128, 0, 255), pg.mkColor(0, 0, 255, 128)])
    assert row == 0 and image.format() == QImage.Format.Format_ARGB32_Premultiplied
    raw = np.frombuffer(image.constBits(), np.uint32, 6).reshape(2, 3)
    # Premultiplied: the half-transparent blue keeps half its value.
    np.testing.assert_array_equal(raw, [[0, 0xFFFF8000, 0x80000080], [0x80000080, 0, 0xFFFF8000]])


def test_a_large_band_image_comes_in_strips_small_enough_for_one_thread():
    numbers = np.random.default_rng(0).integers(0, 3, (700, 1000)).astype(np.uint8)
    strips = band_strips(numbers, [pg.mkColor("r"), pg.mkColor("b")])
    assert len(strips) == 6 and all(image.width() * image.height() <= MAX_STRIP_PIXELS for _, image in strips)
    joined = np.vstack([pixels(image) for _, image in strips])
    assert [row for row, _ in strips] == list(range(0, 700, 131))
    np.testing.assert_array_equal(joined, np.array([0, 0xFFFF0000, 0xFF0000FF], dtype=np.uint32)[numbers])


def test_a_wide_pen_covers_its_width_across_and_along_the_line():
    top = np.array([np.nan, 5.5, 5.5, 5.5, np.nan])
    grown_top, grown_bottom = widened(top, top.copy(), 3)
    # Three rows (4.5 .. 6.5) where the line is, and its ends reach one column further.
    np.testing.assert_array_equal(grown_top[1:4], [4.5, 4.5, 4.5])
    np.testing.assert_array_equal(grown_bottom[1:4], [6.5, 6.5, 6.5])
    assert grown_top[0] == grown_top[4] == 5.5


# -- in a chart --------------------------------------------------------------------------------


def noisy(steps: int, offset: float = 0.0, seed: int = 0) -> Series:
    series = Series()
    x = np.arange(1, steps + 1, dtype=float)
    series.extend(x, offset + np.sin(x / steps * 6) + 0.3 * np.random.default_rng(seed).standard_normal(steps))
    return series


@pytest.fixture
def chart(qtbot):
    widget = Chart("Loss", "loss")
    widget.resize(700, 420)
    qtbot.addWidget(widget)
    widget.show()
    return widget


def show(chart: Chart, qtbot) -> np.ndarray:
    chart.redraw()
    chart.view.prepareForPaint()  # the auto-range now, as RankCharts.redraw does: one paint, not two
    qtbot.wait(1)
    return pixels(chart.plot_widget.grab().toImage())


# The ends of a wide pen's strokes (Qt: square caps) differ from the layer's round ones by a pixel here and there.
@pytest.mark.parametrize("width, differing", [(1, 0.01), (3, 0.04)])
def test_banded_curves_look_as_qt_draws_them(chart, qtbot, width, differing):
    for key, offset in (("a", 0.0), ("b", 0.5)):
        chart.add_curve(key, noisy(100_000, offset, seed=len(key) + ord(key)), pg.mkPen((200, 40, 40), width=width))
    banded = show(chart, qtbot)
    assert all(curve.item.banded for curve in chart.curves.values())
    for curve in chart.curves.values():
        curve.item.layer = None  # Qt draws them again
        curve.item.setData(*curve.item.getData())
    assert not any(curve.item.banded for curve in chart.curves.values())
    drawn_by_qt = show(chart, qtbot)
    curve_pixels = (drawn_by_qt == 0xFFC82828).sum()
    assert curve_pixels > 5000
    assert abs(int((banded == 0xFFC82828).sum()) - int(curve_pixels)) < 0.03 * curve_pixels
    assert (banded != drawn_by_qt).mean() < differing


def test_the_band_image_is_made_again_only_when_data_or_view_changed(chart, qtbot):
    series = noisy(50_000)
    chart.add_curve("a", series, pg.mkPen("r"))
    show(chart, qtbot)
    show(chart, qtbot)  # the left axis settles its width after the first paint
    made = chart.bands.renders
    assert made >= 1
    chart.plot_widget.viewport().update()  # a repaint for something else: the kept image is drawn
    show(chart, qtbot)
    assert chart.bands.renders == made
    series.append(50_001, 0.5)  # the run grew, the view follows: a new image
    show(chart, qtbot)
    assert chart.bands.renders == made + 1
    chart.plot.setXRange(1000, 20_000, padding=0)  # zoomed in
    show(chart, qtbot)
    assert chart.bands.renders == made + 2
    chart.resize(600, 400)
    show(chart, qtbot)
    assert chart.bands.renders == made + 3


def test_after_appends_the_chart_shows_what_a_fresh_one_shows(qtbot):
    def make(series: Series) -> Chart:
        widget = Chart("Loss", "loss")
        widget.resize(700, 420)
        qtbot.addWidget(widget)
        widget.show()
        widget.add_curve("a", series, pg.mkPen("r"))
        widget.add_curve("b", noisy(30_000, 1.0, seed=2), pg.mkPen("c"))
        return widget

    full = noisy(30_000)
    growing = Series()
    growing.extend(full.x[:20_000], full.y[:20_000])
    live = make(growing)
    show(live, qtbot)
    for x, y in zip(full.x[20_000:], full.y[20_000:]):
        growing.append(x, y)
        if x % 2500 == 0:
            show(live, qtbot)
    fresh = make(full)
    show(fresh, qtbot)  # the left axis settles its width after the first paint
    live_pixels, fresh_pixels = show(live, qtbot), show(fresh, qtbot)
    np.testing.assert_array_equal(live_pixels, fresh_pixels)


def test_only_dense_solid_unbroken_curves_are_banded(chart, qtbot):
    gapped = noisy(1000)  # ~1.6 points a pixel column: drawn as they are, gap included
    gapped.append(1001, None)
    gapped.append(1002, 1.0)
    sparse = Series()
    sparse.extend([1.0, 25_000.0, 50_000.0], [0.0, 1.0, 0.5])
    chart.add_curve("dense", noisy(50_000), pg.mkPen("r"))
    chart.add_curve("thick", noisy(50_000, seed=3), pg.mkPen("g", width=3))
    chart.add_curve("dashed", noisy(50_000, seed=4), pg.mkPen("b", style=Qt.PenStyle.DashLine))
    chart.add_curve("gapped", gapped, pg.mkPen("y"))
    chart.add_curve("sparse", sparse, pg.mkPen("m"))
    show(chart, qtbot)
    banded = {key for key, curve in chart.curves.items() if curve.item.banded}
    assert banded == {"dense", "thick"}
    flags = chart.curves["dense"].item.flags()
    assert flags & QGraphicsItem.GraphicsItemFlag.ItemHasNoContents
    # A pen the layer cannot draw hands the curve back to Qt at once.
    chart.curves["thick"].item.setPen(pg.mkPen("g", width=3, style=Qt.PenStyle.DotLine))
    assert not chart.curves["thick"].item.banded
    assert not chart.curves["thick"].item.flags() & QGraphicsItem.GraphicsItemFlag.ItemHasNoContents


def test_hiding_a_banded_curve_takes_it_out_of_the_image(chart, qtbot):
    chart.add_curve("a", noisy(50_000), pg.mkPen((200, 40, 40)))
    chart.add_curve("b", noisy(50_000, 3.0, seed=5), pg.mkPen((40, 40, 200)))
    shown = show(chart, qtbot)
    assert (shown == 0xFF2828C8).sum() > 5000
    chart.view.disableAutoRange()  # the view stays as it is: only the hidden curve changes the picture
    show(chart, qtbot)
    made = chart.bands.renders
    chart.curves["b"].item.setVisible(False)  # what a click on its legend entry does
    hidden = show(chart, qtbot)
    assert (hidden == 0xFF2828C8).sum() == 0
    assert (hidden == 0xFFC82828).sum() > 5000
    assert chart.bands.renders == made + 1


def test_on_a_2x_screen_a_dense_band_has_no_stripes(qtbot, monkeypatch):
    # What a Retina display does: the band is rendered in device pixels, twice as many columns as logical ones.
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QPainter

    widget = Chart("Loss", "loss")
    widget.resize(700, 420)
    qtbot.addWidget(widget)
    widget.show()
    monkeypatch.setattr(widget.plot_widget, "devicePixelRatioF", lambda: 2.0)
    widget.add_curve("a", noisy(200_000), pg.mkPen((200, 40, 40)))
    widget.redraw()
    widget.view.prepareForPaint()
    qtbot.wait(1)
    image = QImage(1400, 840, QImage.Format.Format_ARGB32_Premultiplied)
    image.setDevicePixelRatio(2.0)
    image.fill(0)
    painter = QPainter(image)
    widget.plot_widget.render(painter, QRectF(0, 0, 700, 420))  # in logical pixels: the image's own size
    painter.end()
    ours = pixels(image) == 0xFFC82828
    columns = ours.sum(axis=0)
    band = columns[columns > 0]
    # Noisy data: every device column of the band is a full stroke; a stripe is a column of only a few pixels.
    assert band.size > 1000
    assert (band < 0.25 * np.median(band)).mean() < 0.01
