"""The desktop app: QApplication, theme, crash handler, the asyncio worker and the main window."""

from __future__ import annotations

import logging
import sys

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from cluster.cli import setup_logging
from cluster.home import CorralHome, resolve_home
from gui.bridge import AsyncWorker, Bridge
from gui.messages import install_crash_handler
from gui.settings import APPLICATION, ORGANIZATION
from gui.theme import ThemeController

log = logging.getLogger(__name__)


def crash_dir(home: CorralHome):  # noqa: ANN201 - a Path
    return home.root / "crashes"


def make_application(argv: list[str] | None = None) -> QApplication:
    """The one QApplication, named so QSettings and the window title agree."""
    app = QApplication.instance() or QApplication(argv or [sys.argv[0]])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("corral")
    app.setWindowIcon(QIcon.fromTheme("network-workgroup"))
    return app  # type: ignore[return-value]  # instance() is a QApplication here: we made it


def run_app(home_arg: str | None = None, *, verbose: bool = False) -> int:
    """Open the main window and run until it closes; a running training is left running."""
    from gui.main_window import MainWindow

    home = resolve_home(home_arg)
    setup_logging(home, verbose=verbose)
    app = make_application()
    theme = ThemeController(app)
    install_crash_handler(crash_dir(home))
    worker = AsyncWorker()
    bridge = Bridge(worker)
    window = MainWindow(bridge, home, theme)
    window.restore_layout()
    window.show()
    try:
        return app.exec()
    finally:
        # Only corral's own connections and followers stop here: the run itself lives on the head node.
        worker.stop()
