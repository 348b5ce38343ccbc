"""Check boxes show on the dark palette: an unticked box is framed, not the colour of its background."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QRect
from PySide6.QtGui import QImage, QPainter, QPalette
from PySide6.QtWidgets import QCheckBox, QStyle, QStyleFactory, QStyleOptionButton

from gui.theme import VisibleChecksStyle, dark_palette, light_palette


def indicator_contrast(style: QStyle, palette: QPalette,
                       element: QStyle.PrimitiveElement = QStyle.PrimitiveElement.PE_IndicatorCheckBox) -> int:
    """The largest difference of any pixel of an unticked indicator from the base colour."""
    box = QCheckBox("Same user and password on every machine")
    box.setPalette(palette)
    option = QStyleOptionButton()
    option.initFrom(box)
    option.state |= QStyle.StateFlag.State_Off
    option.rect = QRect(2, 2, 16, 16)
    image = QImage(20, 20, QImage.Format.Format_RGB32)
    image.fill(palette.color(QPalette.ColorRole.Base))
    painter = QPainter(image)
    style.drawPrimitive(element, option, painter, box)
    painter.end()
    pixels = np.frombuffer(image.constBits(), np.uint8, 20 * 20 * 4).reshape(20, 20, 4)[:, :, :3].astype(int)
    base = palette.color(QPalette.ColorRole.Base)
    return int(np.abs(pixels - [base.blue(), base.green(), base.red()]).max())


@pytest.mark.parametrize("element", [QStyle.PrimitiveElement.PE_IndicatorCheckBox,
                                     QStyle.PrimitiveElement.PE_IndicatorRadioButton])
def test_an_unticked_box_or_radio_button_shows_on_the_dark_palette(qtbot, element):
    fusion = QStyleFactory.create("Fusion")
    assert indicator_contrast(fusion, dark_palette(), element) < 20  # what Fusion alone draws: all but invisible
    assert indicator_contrast(VisibleChecksStyle(), dark_palette(), element) >= 60


def test_the_light_palette_is_drawn_as_fusion_draws_it(qtbot):
    fusion = QStyleFactory.create("Fusion")
    assert indicator_contrast(VisibleChecksStyle(), light_palette()) == indicator_contrast(fusion, light_palette())
