"""GUI tests run offscreen, with their own settings file, never the user's."""

import os

import pytest

from cluster.home import CorralHome
from gui.bridge import AsyncWorker, Bridge

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    """Window layout and choices go to a file of this test's own (QSettings would use ~/.config)."""
    monkeypatch.setenv("CORRAL_SETTINGS_FILE", str(tmp_path / "settings.ini"))


@pytest.fixture
def bridge(qtbot):
    """The asyncio worker thread and its Qt bridge, as the app runs them; stopped after the test."""
    worker = AsyncWorker()
    yield Bridge(worker)
    worker.stop()


@pytest.fixture
def home(tmp_path) -> CorralHome:
    return CorralHome(tmp_path / "home")


@pytest.fixture
def charts(qtbot):
    """The dashboard's four charts, shown at a typical size (no run yet)."""
    from gui.rank_charts import RankCharts

    widget = RankCharts()
    widget.resize(1200, 800)
    qtbot.addWidget(widget)
    widget.show()
    return widget
