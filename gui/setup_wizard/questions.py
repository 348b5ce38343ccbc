"""The core's questions to the user (trust this host key?) asked in the GUI thread while the core waits in its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget

from cluster.inventory import Node

Answer = Callable[[bool], None]


class HostKeyQuestions(QObject):
    """``confirm`` is the async callback KeySetup awaits; the question itself is shown by the GUI thread.

    The signal is emitted from the asyncio thread; Qt queues it to this object's (the GUI) thread,
    whose answer completes the waiting future through ``call_soon_threadsafe``.
    """

    asked = Signal(object, str, object)  # node, fingerprint, answer(bool)

    def __init__(self, parent: QWidget | None = None,
                 ask: Callable[[QWidget | None, Node, str], bool] | None = None) -> None:
        super().__init__(parent)
        self._parent_widget = parent
        self._ask = ask or ask_with_dialog
        self.asked.connect(self._on_asked)

    async def confirm(self, node: Node, fingerprint: str) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def answer(accepted: bool) -> None:  # runs in the GUI thread
            def settle() -> None:
                if not future.done():
                    future.set_result(accepted)

            loop.call_soon_threadsafe(settle)

        self.asked.emit(node, fingerprint, answer)
        return await future

    @Slot(object, str, object)
    def _on_asked(self, node: Node, fingerprint: str, answer: Answer) -> None:
        answer(self._ask(self._parent_widget, node, fingerprint))


def ask_with_dialog(parent: QWidget | None, node: Node, fingerprint: str) -> bool:
    text = (f"{node.describe()} presents the host key\n\n{fingerprint}\n\nwhich corral has not accepted yet. "
            "Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on that machine. Trust it?")
    reply = QMessageBox.question(parent, f"Trust {node.name}?", text,
                                 QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                 QMessageBox.StandardButton.No)
    return reply == QMessageBox.StandardButton.Yes
