"""The main window: which page opens, menus and shortcuts, the remembered layout, the theme, and the entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QApplication, QWidget

from cluster.home import CorralHome
from cluster.inventory import Inventory, Node
from cluster.state import save_cluster
from gui.entry import display_problem, home_argument, wants_window
from gui.main_window import DASHBOARD, WELCOME, WIZARD, MainWindow
from gui.settings import COLOR_SCHEME, GEOMETRY, app_settings, write_text
from gui.setup_wizard.state import WizardNode, WizardState, save_state
from gui.theme import ThemeController, is_dark
from tests.gui.wizard_fakes import FakeCore, found_host, isolated_settings  # noqa: F401 - fixture


class StubDashboard(QWidget):
    """Records what the window asks of the dashboard (the real one is tested with GUI-B's tests)."""

    def __init__(self, bridge, home) -> None:  # noqa: ANN001
        super().__init__()
        self.calls: list[str] = []

    def start_run(self) -> None:
        self.calls.append("start")

    def start_demo(self) -> None:
        self.calls.append("demo")

    def stop_run(self) -> None:
        self.calls.append("stop")


def window(qtbot, bridge, home) -> MainWindow:
    main = MainWindow(bridge, home, wizard_core=FakeCore(home, found=[found_host("10.0.0.11")]),
                      make_dashboard=StubDashboard)
    qtbot.addWidget(main)
    main.show()
    return main


def test_without_a_cluster_the_welcome_page_offers_setup_and_the_local_demo(qtbot, bridge, home):
    main = window(qtbot, bridge, home)
    assert main.current_view() == WELCOME
    assert main.welcome.setup_button.text() == "Set up a cluster"
    assert main.welcome.demo_button.text() == "Try on this computer"
    main.welcome.setup_button.click()
    assert main.current_view() == WIZARD
    assert main.wizard.page_key() == "discover"
    main.wizard.reject()  # "Finish later": nothing set up yet, so back to the welcome page
    assert main.current_view() == WELCOME


def test_try_on_this_computer_opens_the_dashboard(qtbot, bridge, home):
    main = window(qtbot, bridge, home)
    main.welcome.demo_button.click()  # the first click; the demo starts at once, no second dialog
    assert main.current_view() == DASHBOARD
    assert main.dashboard.calls == ["demo"]


def test_an_unfinished_wizard_is_resumed_and_a_cluster_opens_the_dashboard(qtbot, bridge, home):
    save_state(home, WizardState(page="network", nodes=[WizardNode("node1", "10.0.0.11")], completed=["discover"]))
    main = window(qtbot, bridge, home)
    assert main.current_view() == WIZARD
    assert main.wizard.page_key() == "network"

    other = CorralHome(home.root.parent / "other")
    save_cluster(other, Inventory((Node("node1", "10.0.0.11", user="lab1"),)))
    assert window(qtbot, bridge, other).current_view() == DASHBOARD


def test_start_stop_export_and_setup_have_shortcuts(qtbot, bridge, home):
    main = window(qtbot, bridge, home)
    assert main.start_action.shortcut() == QKeySequence("Ctrl+R")
    assert main.stop_action.shortcut() == QKeySequence("Ctrl+.")
    assert main.export_action.shortcut() == QKeySequence("Ctrl+E")
    assert main.setup_action.shortcut() == QKeySequence("Ctrl+N")
    assert all(action in main.actions() for action in (main.start_action, main.stop_action))
    main.stop_action.trigger()  # no dashboard yet: nothing to stop
    main.activateWindow()
    qtbot.waitUntil(main.isActiveWindow, timeout=2000)  # shortcuts reach the active window only
    qtbot.keyClick(main, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert main.current_view() == DASHBOARD
    qtbot.keyClick(main, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)
    assert main.dashboard.calls == ["start", "stop"]


def test_the_real_dashboard_is_embedded_when_there_is_a_cluster(qtbot, bridge, home):
    from gui.dashboard import Dashboard

    save_cluster(home, Inventory((Node("node1", "10.0.0.11", user="lab1"),)))
    main = MainWindow(bridge, home)
    qtbot.addWidget(main)
    assert isinstance(main.stack.currentWidget(), Dashboard)


def test_window_layout_is_kept_between_sessions(qtbot, bridge, home):
    first = window(qtbot, bridge, home)
    first.resize(700, 500)
    first.close()
    assert app_settings().value(GEOMETRY) is not None
    second = MainWindow(bridge, home)
    qtbot.addWidget(second)
    second.restore_layout()
    assert (second.width(), second.height()) == (700, 500)


def test_closing_the_window_keeps_the_wizard_progress(qtbot, bridge, home):
    main = window(qtbot, bridge, home)
    main.open_wizard()
    page = main.wizard.currentPage()
    qtbot.waitUntil(lambda: page.job is None, timeout=5000)
    page.set_selected("node1", True)
    main.close()
    main2 = window(qtbot, bridge, home)
    assert main2.current_view() == WIZARD
    assert main2.wizard.selected_names() == ["node1"]


def test_dark_and_light_follow_the_setting_and_the_system(qtbot):
    app = QApplication.instance()
    system = {"scheme": Qt.ColorScheme.Light}
    theme = ThemeController(app, system_scheme=lambda: system["scheme"])
    theme.choose("system")
    assert not is_dark()
    system["scheme"] = Qt.ColorScheme.Dark
    app.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert is_dark()
    theme.choose("light")
    assert not is_dark()
    assert app_settings().value(COLOR_SCHEME) == "light"
    write_text(COLOR_SCHEME, "dark")
    assert is_dark() is False  # the setting is read when the app starts
    ThemeController(app, system_scheme=lambda: Qt.ColorScheme.Light)
    assert is_dark()
    app.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Light)  # a chosen scheme ignores the system
    assert is_dark()
    # Fusion, with check boxes framed on the dark palette.
    assert app.style().baseStyle().name().lower() == "fusion"


@pytest.mark.parametrize(("argv", "window_expected"), [
    ([], True),
    (["--home", "/tmp/x"], True),
    (["--home=/tmp/x", "-v"], True),
    (["node", "list"], False),
    (["--home", "/tmp/x", "exec", "--", "hostname"], False),
    (["--help"], False),
    (["--home"], False),
])
def test_which_arguments_open_the_window(argv, window_expected):
    assert wants_window(argv) is window_expected


def test_home_argument_and_display_detection():
    assert home_argument(["--home", "/a"]) == "/a"
    assert home_argument(["--home=/b"]) == "/b"
    assert home_argument(["-v"]) is None
    assert "no display" in display_problem({}, "linux")
    assert display_problem({"DISPLAY": ":0"}, "linux") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    assert display_problem({}, "darwin") is None


def run_entry(*args: str, env_changes: dict[str, str | None]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run([sys.executable, "-c", "import sys; from gui.entry import main; rc = main(sys.argv[1:]); "
                           "print('QT LOADED' if 'PySide6' in sys.modules else 'NO QT'); sys.exit(rc)", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_without_a_display_corral_explains_and_shows_the_commands(tmp_path):
    result = run_entry("--home", str(tmp_path / "home"), env_changes={})
    assert result.returncode == 0
    assert "no display here" in result.stderr
    assert "usage: corral" in result.stdout and "NO QT" in result.stdout


def test_commands_do_not_load_qt(tmp_path):
    result = run_entry("--home", str(tmp_path / "home"), "node", "list", env_changes={"DISPLAY": ":0"})
    assert result.returncode == 0, result.stderr
    assert "No nodes yet" in result.stdout and "NO QT" in result.stdout
