"""GUI tests run offscreen and fail on Qt warnings nobody expected."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
