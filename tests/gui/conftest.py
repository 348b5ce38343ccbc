"""GUI tests run offscreen, with their own settings file, never the user's."""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    """Window layout and choices go to a file of this test's own (QSettings would use ~/.config)."""
    monkeypatch.setenv("CORRAL_SETTINGS_FILE", str(tmp_path / "settings.ini"))
