"""Screenshots of the welcome page and every wizard page, driven against a live 3-node test cluster (needs root, Xvfb).

    xvfb-run -a -s "-screen 0 1280x900x24" env QT_QPA_PLATFORM=xcb .venv/bin/python scripts/wizard_screenshots.py [--dark]

Writes docs/screenshots/wizard-<n>-<page>.png (with --dark: wizard-<n>-<page>-dark.png).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
WHEEL_CACHE = Path(os.environ.get("CORRAL_TEST_WHEEL_CACHE", "/var/tmp/corral-test-wheel-cache"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dark", action="store_true", help="use the dark palette")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="corral-shots-"))
    os.environ["CORRAL_SETTINGS_FILE"] = str(scratch / "settings.ini")
    os.environ["CORRAL_WHEELHOUSE"] = str(WHEEL_CACHE)

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from cluster.home import CorralHome
    from gui.app import make_application
    from gui.bridge import AsyncWorker, Bridge
    from gui.main_window import MainWindow
    from gui.settings import COLOR_SCHEME, write_text
    from gui.theme import ThemeController
    from tests.testbed.cluster import TestCluster

    write_text(COLOR_SCHEME, "dark" if args.dark else "light")
    app = make_application()
    ThemeController(app, system_scheme=lambda: Qt.ColorScheme.Light)
    worker = AsyncWorker()
    home = CorralHome(scratch / "home")
    project = scratch / "tinyllm"
    project.mkdir()
    (project / "train.py").write_text("print('training')\n")
    (project / "README.md").write_text("A small project.\n")
    suffix = "-dark" if args.dark else ""

    def settle(seconds: float = 0.5) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.02)

    def wait(condition, timeout_s: float) -> None:  # noqa: ANN001
        end = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError("the wizard did not get there in time")
            app.processEvents()
            time.sleep(0.02)

    def shoot(window, number: int, name: str) -> None:  # noqa: ANN001
        settle(0.4)
        path = OUT / f"wizard-{number}-{name}{suffix}.png"
        window.grab().save(str(path))
        print(f"wrote {path}")

    with TestCluster(n=3) as cluster:
        window = MainWindow(Bridge(worker), home)
        window.resize(1180, 820)
        window.show()
        shoot(window, 0, "welcome")
        window.welcome.setup_button.click()
        wizard = window.wizard
        page = wizard.currentPage()
        page.cancel()
        wait(lambda: page.job is None, 10)
        page.subnet_edit.setText(cluster.subnet)
        page.search()
        wait(lambda: page.job is None, 20)
        by_address = {n.address: n.name for n in wizard.state.nodes}
        for node in cluster.nodes:
            page.set_selected(by_address[node.address], True)
        shoot(window, 1, "discover")
        wizard.next()
        shoot(window, 2, "network")
        wizard.next()
        page = wizard.currentPage()
        wait(lambda: page.job is None and len(page.keys) == 3, 20)
        for node in cluster.nodes:
            page.user_edits[node.name].setText(node.user)
            page.password_edits[node.name].setText(node.password)
            page.trust(node.name)
        shoot(window, 3, "credentials")
        wizard.next()
        page = wizard.currentPage()
        wait(page.isComplete, 60)
        shoot(window, 4, "keys")
        wizard.next()
        page = wizard.currentPage()
        page.set_folder(str(project))
        page.copy_button.click()
        wait(page.isComplete, 60)
        shoot(window, 5, "code")
        wizard.next()
        page = wizard.currentPage()
        page.set_wheels("push")
        page.build_button.click()
        wait(page.isComplete, 900)
        shoot(window, 6, "environment")
        wizard.next()
        page = wizard.currentPage()
        wait(page.isComplete, 300)
        shoot(window, 7, "check")
        wizard.next()
        shoot(window, 8, "done")
        window.close()
    worker.stop()
    QApplication.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
