"""The first page without a cluster: set one up with the wizard, or try corral on this computer alone."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


class WelcomePage(QWidget):
    setup_requested = Signal()
    demo_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("<h1>Welcome to corral</h1>")
        title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        intro = QLabel("corral turns the Macs and Linux boxes of your home lab into one MLX training cluster: "
                       "it finds them, installs SSH keys, copies your code, builds the same Python environment "
                       "everywhere and checks it all, then trains with live charts for every rank.")
        intro.setWordWrap(True)
        intro.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setup_button = QPushButton("Set up a cluster")
        self.setup_button.setDefault(True)
        self.setup_button.clicked.connect(self.setup_requested)
        self.demo_button = QPushButton("Try on this computer")
        self.demo_button.clicked.connect(self.demo_requested)
        for button in (self.setup_button, self.demo_button):
            button.setMinimumSize(240, 48)
        cards = QHBoxLayout()
        cards.addStretch(1)
        cards.addWidget(_card(self.setup_button, "Find your machines on the network and make them one cluster, "
                                                 "step by step (about five minutes)."))
        cards.addWidget(_card(self.demo_button, "No cluster yet? Train corral's small model with 2 ranks on this "
                                                "computer and watch the live charts."))
        cards.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addSpacing(24)
        layout.addLayout(cards)
        layout.addStretch(2)
        layout.setContentsMargins(48, 24, 48, 24)


def _card(button: QPushButton, text: str) -> QFrame:
    frame = QFrame()
    frame.setFrameShape(QFrame.Shape.StyledPanel)
    frame.setMaximumWidth(360)
    label = QLabel(text)
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(16, 16, 16, 16)
    layout.addWidget(button, 0, Qt.AlignmentFlag.AlignHCenter)
    layout.addWidget(label)
    return frame
