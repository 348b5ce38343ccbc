"""Chart axes: the step axis writes 950, 12.5k, 1.2M and keeps its label; linked x axes share their drawing."""

from __future__ import annotations

import numpy as np
import pytest

from gui.chart_axes import step_tick_label
from gui.series import RunSeries


@pytest.mark.parametrize("value, spacing, text", [
    (0, 200, "0"),
    (950, 50, "950"),
    (12_500, 500, "12.5k"),
    (250_000, 50_000, "250k"),
    (1_200_000, 200_000, "1.2M"),
    (3_000_000, 1_000_000, "3M"),
    (1_000_010, 10, "1000010"),  # zoomed in far: every digit counts
    (250_100, 100, "250.1k"),
    (2.5, 0.5, "2.5"),
    (-0.0, 1, "0"),
])
def test_step_ticks_read_as_people_write_step_counts(value, spacing, text):
    assert step_tick_label(value, spacing) == text


def test_a_million_steps_keep_the_label_step_and_ticks_in_millions(qtbot, charts):
    series = RunSeries(rank_nodes=["node1"])
    x = np.arange(1, 1_000_001, dtype=float)
    series.rank(0)["loss"].extend(x, np.sin(x / 1e5))
    charts.set_run(series)
    charts.redraw()
    qtbot.wait(10)
    axis = charts.loss.plot.getAxis("bottom")
    label = axis.labelString()
    assert "step" in label and "x1e" not in label
    ticks = [text for level in axis.tickValues(*axis.range, axis.width()) for text in
             axis.tickStrings(level[1], axis.autoSIPrefixScale * axis.scale, level[0])]
    assert any(text.endswith("M") for text in ticks), ticks
    charts.loss.plot.setXRange(10_000, 20_000, padding=0)
    charts.redraw()
    assert axis.labelString() == label


def spec_values(specs) -> tuple:
    """Drawing specs as plain values (pens by colour and width, points and rects by coordinates)."""
    axis, ticks, texts = specs

    def point(at) -> tuple:
        return round(at.x(), 9), round(at.y(), 9)

    return ((axis[0].color().rgba(), point(axis[1]), point(axis[2])),
            [(pen.color().rgba(), pen.widthF(), point(a), point(b)) for pen, a, b in ticks],
            [((round(r.x(), 9), round(r.y(), 9), round(r.width(), 9), round(r.height(), 9)), int(flags), text)
             for r, flags, text in texts])


@pytest.mark.parametrize("orientation", ["left", "bottom"])
def test_the_lean_tick_drawing_specs_equal_pyqtgraphs(qtbot, charts, orientation):
    import pyqtgraph as pg
    from PySide6.QtGui import QImage, QPainter

    series = RunSeries(rank_nodes=["node1"])
    series.rank(0)["loss"].extend(np.arange(1.0, 5001.0), np.linspace(3, 1, 5000))
    charts.set_run(series)
    charts.redraw()
    qtbot.wait(10)
    axis = charts.loss.plot.getAxis(orientation)
    image = QImage(10, 10, QImage.Format.Format_ARGB32_Premultiplied)
    painter = QPainter(image)
    rng = np.random.default_rng(1)
    texts = 0
    try:
        for _ in range(300):
            low = float(rng.choice([0.0, -1.0, 1e-3, 7.0, 1e5, 3e6])) * rng.uniform(0.5, 2)
            width = float(rng.choice([1e-3, 0.37, 5.0, 120.0, 4e4, 2e6])) * rng.uniform(0.5, 2)
            axis.setRange(low, low + width)
            size = axis.geometry().height() if orientation == "left" else axis.geometry().width()
            assert axis.tickValues(low, low + width, size) == pg.AxisItem.tickValues(axis, low, low + width, size)
            ours = spec_values(axis.generateDrawSpecs(painter))
            assert ours == spec_values(pg.AxisItem.generateDrawSpecs(axis, painter))
            texts += len(ours[2])
    finally:
        painter.end()
    assert texts > 300 * 3  # labelled ticks were compared, not only empty axes


# -- the shared tick images ----------------------------------------------------------------------


@pytest.fixture
def shown_charts(qtbot, charts):
    series = RunSeries(rank_nodes=["node1", "node2"])
    for rank in range(2):
        series.rank(rank)["loss"].extend(np.arange(1.0, 20_001.0), np.linspace(3, 1, 20_000) + rank)
    charts.set_run(series)
    charts.redraw()
    qtbot.wait(20)
    return charts


def drawn(axis, *, ratio: float = 1.0, plain: bool = False) -> np.ndarray:
    """The axis painted into an image: by our paint, or (plain) by pyqtgraph's own AxisItem.paint."""
    import pyqtgraph as pg
    from PySide6.QtGui import QImage, QPainter

    rect = axis.boundingRect()
    image = QImage(int(rect.width() * ratio), int(rect.height() * ratio), QImage.Format.Format_ARGB32_Premultiplied)
    image.setDevicePixelRatio(ratio)
    image.fill(0)
    painter = QPainter(image)
    painter.translate(-rect.left(), -rect.top())
    if plain:
        axis.picture = None
        pg.AxisItem.paint(axis, painter, None, None)
    else:
        axis.paint(painter, None, None)
    painter.end()
    return np.frombuffer(image.constBits(), np.uint32, image.width() * image.height()).copy()


@pytest.mark.parametrize("ratio", [1.0, 2.0])
@pytest.mark.parametrize("name", ["left", "bottom"])
def test_tick_images_look_exactly_as_pyqtgraph_draws_the_axis(shown_charts, name, ratio):
    axis = shown_charts.loss.plot.getAxis(name)
    ours = drawn(axis, ratio=ratio)
    assert (ours != 0).sum() > 200  # ticks and labels, not an empty image
    np.testing.assert_array_equal(ours, drawn(axis, ratio=ratio, plain=True))


def test_the_four_linked_x_axes_share_one_image_per_range(shown_charts):
    images = shown_charts.loss.plot.getAxis("bottom")._tick_images
    axes = [chart.plot.getAxis("bottom") for chart in shown_charts.charts.values()]
    assert all(axis._tick_images is images for axis in axes)
    keys = {axis._image_key(1.0, axis.style["tickFont"] or axis.font()) for axis in axes}
    assert len(keys) == 1 and keys <= set(images)


@pytest.mark.parametrize("change", ["setTextPen", "setTickPen", "setPen"])
def test_a_new_pen_draws_new_tick_images(shown_charts, change):
    axis = shown_charts.loss.plot.getAxis("left")
    before = drawn(axis)
    getattr(axis, change)("#ff0000")
    after = drawn(axis)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, drawn(axis, plain=True))


def test_vector_devices_and_scaled_exports_get_pyqtgraphs_own_drawing(shown_charts):
    from PySide6.QtGui import QPainter, QPicture

    axis = shown_charts.loss.plot.getAxis("left")
    axis._tick_images.clear()
    picture = QPicture()  # what an SVG or print export paints on: vectors, not a bitmap
    painter = QPainter(picture)
    axis.paint(painter, None, None)
    painter.end()
    assert not axis._tick_images and picture.size() > 0
    from PySide6.QtGui import QImage

    image = QImage(400, 900, QImage.Format.Format_ARGB32_Premultiplied)
    painter = QPainter(image)
    painter.scale(2, 2)  # an export at twice the size: drawn as vectors at that size, not a stretched bitmap
    axis.paint(painter, None, None)
    painter.end()
    assert not axis._tick_images
    plain = drawn(axis, ratio=1.0)  # a plain image at its own size: kept
    assert len(axis._tick_images) == 1 and (plain != 0).any()
