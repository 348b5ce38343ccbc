"""The app's remembered preferences and window layout (QSettings), never passwords, redirectable for tests."""

from __future__ import annotations

import os

from PySide6.QtCore import QSettings

ORGANIZATION = "corral"
APPLICATION = "corral"
# Tests (and anyone who wants a portable setup) point this at an INI file so the user's own settings
# are never read or written.
SETTINGS_FILE_ENV = "CORRAL_SETTINGS_FILE"

GEOMETRY = "window/geometry"
WINDOW_STATE = "window/state"
LAST_VIEW = "window/last_view"
COLOR_SCHEME = "appearance/color_scheme"  # "system", "light" or "dark"
EXPORT_FOLDER = "export/folder"


def app_settings() -> QSettings:
    """corral's settings store: the platform's usual place, or the INI file named by $CORRAL_SETTINGS_FILE."""
    path = os.environ.get(SETTINGS_FILE_ENV)
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(ORGANIZATION, APPLICATION)


def read_text(key: str, default: str = "") -> str:
    value = app_settings().value(key, default)
    return value if isinstance(value, str) else default


def write_text(key: str, value: str) -> None:
    settings = app_settings()
    settings.setValue(key, value)
    settings.sync()
