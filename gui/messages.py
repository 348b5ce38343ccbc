"""How errors reach the user: a ClusterError is a sentence in the window; anything else is a bug report.

Code calls ``show_error`` or ``report_crash``; it never builds message boxes itself. An unexpected
exception is never swallowed: its traceback goes to a file in corral's logs and a dialog says where.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from PySide6.QtWidgets import QMessageBox, QWidget

from cluster.errors import ClusterError

log = logging.getLogger(__name__)


def show_error(parent: QWidget | None, error: BaseException, *, title: str = "corral") -> None:
    """An explainable error as a warning dialog; anything else goes to ``report_crash``."""
    if isinstance(error, ClusterError):
        QMessageBox.warning(parent, title, str(error))
    else:
        report_crash(type(error), error, error.__traceback__, parent=parent)


_crash_dir: Path | None = None


def install_crash_handler(crash_dir: Path) -> None:
    """Route every uncaught exception (including ones raised in Qt slots) to the crash dialog."""
    global _crash_dir
    _crash_dir = crash_dir
    sys.excepthook = _excepthook


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    report_crash(kind, error, tb)


def save_traceback(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> Path | None:
    text = "".join(traceback.format_exception(kind, error, tb))
    log.error("unexpected error:\n%s", text)
    if _crash_dir is None:
        return None
    try:
        _crash_dir.mkdir(parents=True, exist_ok=True)
        path = _crash_dir / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{id(error):x}.txt"
        path.write_text(text)
    except OSError:
        return None
    return path


# Tests replace this to see the dialog's text without a modal loop.
crash_dialog: Callable[[QWidget | None, str, str], None] = lambda parent, summary, details: _show_crash(
    parent, summary, details
)


def report_crash(
    kind: type[BaseException], error: BaseException, tb: TracebackType | None, *, parent: QWidget | None = None
) -> Path | None:
    path = save_traceback(kind, error, tb)
    where = f"The details were saved to {path}." if path else "The details are in the terminal."
    summary = (
        f"corral hit an unexpected error ({kind.__name__}: {error}). This is a bug in corral, not in your "
        f"cluster. {where} Please include that file when you report it."
    )
    crash_dialog(parent, summary, "".join(traceback.format_exception(kind, error, tb)))
    return path


def _show_crash(parent: QWidget | None, summary: str, details: str) -> None:
    box = QMessageBox(QMessageBox.Icon.Critical, "corral: unexpected error", summary, parent=parent)
    box.setDetailedText(details)
    box.exec()
