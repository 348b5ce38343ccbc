"""The main window: welcome page, setup wizard and dashboard in one stack, with menus, shortcuts and a remembered layout."""

from __future__ import annotations

import logging

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMessageBox, QStackedWidget, QWidget

from cluster.errors import ClusterError
from cluster.home import CorralHome
from gui.bridge import Bridge
from gui.settings import GEOMETRY, LAST_VIEW, WINDOW_STATE, app_settings
from gui.setup_wizard.state import load_state
from gui.theme import SCHEMES, ThemeController
from gui.welcome import WelcomePage

if TYPE_CHECKING:
    from gui.dashboard import Dashboard

log = logging.getLogger(__name__)

WELCOME, WIZARD, DASHBOARD = "welcome", "wizard", "dashboard"
START_SHORTCUT = QKeySequence("Ctrl+R")
STOP_SHORTCUT = QKeySequence("Ctrl+.")


class MainWindow(QMainWindow):
    def __init__(self, bridge: Bridge, home: CorralHome, theme: ThemeController | None = None,
                 parent: QWidget | None = None, *, wizard_core: object | None = None,
                 make_dashboard: Callable[[Bridge, CorralHome], Dashboard] | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.home = home
        self.theme = theme
        self._wizard_core = wizard_core  # tests hand the wizard a fake core
        self._make_dashboard = make_dashboard or _real_dashboard
        self.setWindowTitle("corral")
        self.resize(1100, 760)
        self.stack = QStackedWidget()
        self.setCentralWidget(self.stack)
        self.welcome = WelcomePage()
        self.welcome.setup_requested.connect(lambda: self.open_wizard(fresh=True))
        self.welcome.demo_requested.connect(self.try_locally)
        self.stack.addWidget(self.welcome)
        self.wizard = None
        self.dashboard: Dashboard | None = None
        self._build_menus()
        self.show_initial_view()

    # --- menus and shortcuts ---

    def _build_menus(self) -> None:
        cluster = self.menuBar().addMenu("&Cluster")
        self.setup_action = self._action(cluster, "&Set up a cluster…", "Ctrl+N", lambda: self.open_wizard())
        self.dashboard_action = self._action(cluster, "&Dashboard", "Ctrl+D", self.show_dashboard)
        self.export_action = self._action(cluster, "&Export for the terminal…", "Ctrl+E", self.open_export)
        cluster.addSeparator()
        self._action(cluster, "&Quit", QKeySequence.StandardKey.Quit, self.close)

        training = self.menuBar().addMenu("&Training")
        self.start_action = self._action(training, "&Start training", START_SHORTCUT, self.start_training)
        self.stop_action = self._action(training, "S&top training", STOP_SHORTCUT, self.stop_training)

        view = self.menuBar().addMenu("&View")
        appearance = view.addMenu("&Appearance")
        group = QActionGroup(self)
        self.scheme_actions: dict[str, QAction] = {}
        for scheme in SCHEMES:
            action = QAction({"system": "Follow the system", "light": "Light", "dark": "Dark"}[scheme], self,
                             checkable=True)
            action.setChecked(self.theme is not None and self.theme.choice == scheme)
            action.triggered.connect(lambda _=False, s=scheme: self.choose_scheme(s))
            group.addAction(action)
            appearance.addAction(action)
            self.scheme_actions[scheme] = action

        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About corral", None, self._about)

    def _action(self, menu, text: str, shortcut, slot) -> QAction:  # noqa: ANN001 - a QMenu, a key sequence
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda _=False: slot())
        menu.addAction(action)
        self.addAction(action)  # shortcuts work whichever page is shown
        return action

    def choose_scheme(self, scheme: str) -> None:
        if self.theme is not None:
            self.theme.choose(scheme)

    def _about(self) -> None:
        QMessageBox.about(self, "About corral", "corral turns the machines of a home lab into one MLX training "
                                                f"cluster.\n\nIts state lives in {self.home.root}.")

    # --- views ---

    def current_view(self) -> str:
        widget = self.stack.currentWidget()
        if widget is self.welcome:
            return WELCOME
        if widget is self.wizard:
            return WIZARD
        return DASHBOARD

    def show_initial_view(self) -> None:
        """Resume an unfinished wizard; else the dashboard when there is a cluster or a run; else welcome."""
        saved = load_state(self.home)
        if saved is not None and not saved.finished and (saved.completed or any(n.selected for n in saved.nodes)):
            self.open_wizard()
        elif self._has_cluster_or_runs():
            self.show_dashboard()
        else:
            self.show_welcome()

    def _has_cluster_or_runs(self) -> bool:
        from cluster.state import load_cluster

        try:
            if load_cluster(self.home).nodes:
                return True
        except ClusterError:
            return True  # the dashboard shows the inventory's problem where the nodes would be
        try:
            from cluster.runs import list_runs

            return bool(list_runs(self.home))
        except (ImportError, ClusterError, OSError):
            return False

    def show_welcome(self) -> None:
        self.stack.setCurrentWidget(self.welcome)

    def open_wizard(self, *, fresh: bool = False) -> None:
        from gui.setup_wizard import SetupWizard

        if self.wizard is None:
            self.wizard = SetupWizard(self.bridge, self.home, self._wizard_core, questions=None)  # type: ignore[arg-type]  # a WizardCore or a test fake
            self.wizard.setup_finished.connect(self._on_setup_finished)
            self.wizard.setup_closed.connect(self._on_setup_closed)
            self.wizard.resume()  # before it is shown: showing an unstarted wizard would start it a second time
            self.stack.addWidget(self.wizard)
            self.stack.setCurrentWidget(self.wizard)
        else:
            self.stack.setCurrentWidget(self.wizard)
        self.wizard.show()

    def _on_setup_finished(self) -> None:
        self._drop_wizard()
        self.show_dashboard()

    def _on_setup_closed(self) -> None:
        self._drop_wizard()
        self.show_initial_view_after_wizard()

    def show_initial_view_after_wizard(self) -> None:
        if self._has_cluster_or_runs():
            self.show_dashboard()
        else:
            self.show_welcome()

    def _drop_wizard(self) -> None:
        if self.wizard is not None:
            self.stack.removeWidget(self.wizard)
            self.wizard.deleteLater()
            self.wizard = None

    def show_dashboard(self) -> Dashboard:
        if self.dashboard is None:
            self.dashboard = self._make_dashboard(self.bridge, self.home)
            self.stack.addWidget(self.dashboard)
        self.stack.setCurrentWidget(self.dashboard)
        return self.dashboard

    def try_locally(self) -> None:
        """"Try on this computer": the dashboard, already training the bundled model on local ranks."""
        self.show_dashboard().start_demo()

    def start_training(self) -> None:
        self.show_dashboard().start_run()

    def stop_training(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop_run()  # it asks for confirmation and ignores a run that is not live

    def open_export(self) -> None:
        from gui.export_dialog import ExportDialog

        ExportDialog(self.home, self).exec()

    # --- layout between sessions ---

    def restore_layout(self) -> None:
        settings = app_settings()
        geometry = settings.value(GEOMETRY)
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = settings.value(WINDOW_STATE)
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def save_layout(self) -> None:
        settings = app_settings()
        settings.setValue(GEOMETRY, self.saveGeometry())
        settings.setValue(WINDOW_STATE, self.saveState())
        settings.setValue(LAST_VIEW, self.current_view())
        settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        # Training is never stopped here: the run lives on the head node and the dashboard reattaches.
        if self.wizard is not None:
            self.wizard.cancel_work()
            self.wizard.save()
        self.save_layout()
        event.accept()


def _real_dashboard(bridge: Bridge, home: CorralHome) -> Dashboard:
    from gui.dashboard import Dashboard  # imported when first shown: pyqtgraph is not needed before

    return Dashboard(bridge, home)
