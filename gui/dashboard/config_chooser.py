"""What Start trains: the bundled model or a training config file, with what that file is or why it cannot be used.

A config file is read with the trainer's own standard-library reader (``trainer.config``), the same one
``corral train --config`` and the ranks use, so the window, the CLI and the trainer agree on what is valid.
The last few files chosen are remembered in the app's settings. The chosen file is watched: fixing it in an
editor updates the summary (and enables Start) without choosing it again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEvent, QFileSystemWatcher, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QWidget

from gui.settings import read_text, write_text
from gui.theme import status_color

RECENT_CONFIGS = "training/recent_configs"  # a JSON list of absolute paths, newest first
MAX_RECENT = 5
BUNDLED_TEXT = "Bundled model (demo)"
CHOOSE_TEXT = "Choose a config file…"
_CHOOSE = "choose"  # item data of the "Choose a config file…" entry
RETRY_INTERVAL_MS = 2_000  # while the chosen file is unusable, it is read again this often (a missed change)


@dataclass(frozen=True)
class ConfigSummary:
    """What a training config file is (``kind``, and the model for LoRA), or the sentence saying why it is unusable."""

    path: Path
    kind: str | None = None  # "scratch" or "lora"; None when the file cannot be used
    model: str | None = None  # LoRA: the model as the trainer resolves it (a local folder or a hub id)
    steps: int | None = None  # the steps (iters for LoRA) the config trains
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        """``my-lora.toml: a LoRA fine-tune of mlx-community/… with mlx-lm, 1,000 iterations.``, or the problem."""
        if self.problem is not None:
            return self.problem
        if self.kind == "lora":
            text = f"{self.path.name}: a LoRA fine-tune of {self.model} with mlx-lm"
            unit = "iterations"
        else:
            text = f"{self.path.name}: corral's byte-level model"
            unit = "steps"
        return text + (f", {self.steps:,} {unit}." if self.steps else ".")


def _problem_sentence(path: Path, message: str) -> str:
    # The trainer names places as "<path>:<line>:"; in the window the file is named once, so lines suffice.
    text = re.sub(re.escape(str(path)) + r":(\d+):", r"line \1:", message).replace(str(path), path.name)
    text = text.strip().rstrip(".")
    return (f"{path.name} cannot be used for training: {text}. Fix the file (corral reads it again when it is "
            "saved) or choose another one.")


def summarize_config(path: Path) -> ConfigSummary:
    """Read a training config as the trainer will: its kind and model, or a sentence naming what is wrong."""
    from trainer.config import ConfigError, config_kind, parse_any_args

    if not path.is_file():
        return ConfigSummary(path, problem=f"{path.name} is no longer at {path.parent}; choose the file again "
                                           "where it is now, or another one.")
    argv = ["--config", str(path)]
    try:
        kind = config_kind(argv)
        config = parse_any_args(argv).config
    except ConfigError as exc:
        return ConfigSummary(path, problem=_problem_sentence(path, str(exc)))
    except UnicodeDecodeError:
        return ConfigSummary(path, problem=f"{path.name} is not a text file; choose a training config (.toml) "
                                           "like resources/lora.toml.")
    if kind == "lora":
        return ConfigSummary(path, kind, model=str(config.model), steps=config.iters)
    return ConfigSummary(path, kind, steps=config.steps)


def load_recent() -> list[Path]:
    """The remembered config files, newest first (files that are gone are left out)."""
    try:
        saved = json.loads(read_text(RECENT_CONFIGS, "[]"))
    except ValueError:
        return []
    if not isinstance(saved, list):
        return []
    return [Path(p) for p in saved if isinstance(p, str) and Path(p).is_file()][:MAX_RECENT]


def remember(path: Path) -> None:
    try:
        saved = json.loads(read_text(RECENT_CONFIGS, "[]"))
    except ValueError:
        saved = []
    saved = [p for p in (saved if isinstance(saved, list) else []) if isinstance(p, str) and p != str(path)]
    write_text(RECENT_CONFIGS, json.dumps([str(path), *saved][:MAX_RECENT]))


def _ask_for_file(parent: QWidget, start_dir: str) -> str:
    path, _filter = QFileDialog.getOpenFileName(parent, "Choose a training config", start_dir,
                                                "Training configs (*.toml);;All files (*)")
    return path


# Tests replace this to answer the file dialog without a modal loop.
ask_for_file: Callable[[QWidget, str], str] = _ask_for_file


class ConfigChooser(QComboBox):
    """"Bundled model (demo)", the remembered config files, and "Choose a config file…"; ``choice_changed`` says what."""

    choice_changed = Signal(object)  # the ConfigSummary of the chosen file, or None for the bundled model

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("What to train")
        self.setToolTip("What Start trains: the bundled demo model, or a training config file "
                        "(kind = \"lora\" fine-tunes a model with mlx-lm; see docs/lora.md)")
        self.setMinimumContentsLength(20)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.summary: ConfigSummary | None = None
        self._watcher = QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._on_file_changed)
        # A watch can be lost (a save that deleted the file first, a network drive); an unusable file is also
        # re-read on a slow timer, so fixing it always enables Start again.
        self._retry = QTimer(self)
        self._retry.setInterval(RETRY_INTERVAL_MS)
        self._retry.timeout.connect(self._on_file_changed)
        self._fill(load_recent(), None)
        self.activated.connect(self._on_activated)

    # -- what is chosen ------------------------------------------------------------------------

    @property
    def config_file(self) -> Path | None:
        data = self.currentData()
        return Path(data) if isinstance(data, str) and data != _CHOOSE else None

    @property
    def can_start(self) -> bool:
        """The bundled model, or a config file that reads as valid."""
        return self.summary is None or self.summary.ok

    def what(self) -> str:
        """What Start trains, for sentences: ``the bundled model`` or ``my-lora.toml``."""
        return "the bundled model" if self.summary is None else self.summary.path.name

    def recheck(self) -> ConfigSummary | None:
        """Read the chosen file again (it may have changed since it was chosen) and say so if it did."""
        path = self.config_file
        summary = summarize_config(path) if path is not None else None
        if summary != self.summary:
            self.summary = summary
            self._update_tooltip()
            self._retry_while_unusable()
            self.choice_changed.emit(summary)
        return summary

    def _retry_while_unusable(self) -> None:
        if self.summary is not None and not self.summary.ok:
            self._retry.start()
        else:
            self._retry.stop()

    # -- choosing ------------------------------------------------------------------------------

    def choose_file(self, path: Path) -> None:
        """Use this config file (as the file dialog does): remember it and show what it is."""
        path = path.expanduser().absolute()
        remember(path)
        recent = [path, *(p for p in self._recent() if p != path)][:MAX_RECENT]
        self._fill(recent, path)
        self._chosen()

    def pick(self, index: int) -> None:
        """Choose an entry as the user would (the last one opens the file dialog)."""
        self.setCurrentIndex(index)
        self._on_activated(index)

    def _on_activated(self, index: int) -> None:
        if self.itemData(index) != _CHOOSE:
            self._chosen()
            return
        previous = self.summary.path if self.summary is not None else None  # the entry shown before this one
        recent = self._recent()
        start_dir = str(recent[0].parent) if recent else str(Path.home())
        answer = ask_for_file(self.window(), start_dir)
        if answer:
            self.choose_file(Path(answer))
        else:
            # Cancelled: back to what was chosen before.
            self._select(previous)

    def _chosen(self) -> None:
        path = self.config_file
        if self._watcher.files():
            self._watcher.removePaths(self._watcher.files())
        if path is not None:
            self._watcher.addPath(str(path))
        self.summary = summarize_config(path) if path is not None else None
        self._update_tooltip()
        self._retry_while_unusable()
        self.choice_changed.emit(self.summary)

    def _on_file_changed(self, _name: str = "") -> None:
        path = self.config_file
        if path is None:
            return
        # Editors that save by renaming a new file into place end the watch; watch the new file.
        if str(path) not in self._watcher.files() and path.is_file():
            self._watcher.addPath(str(path))
        self.recheck()

    # -- the list ------------------------------------------------------------------------------

    def _recent(self) -> list[Path]:
        data = [self.itemData(i) for i in range(1, self.count())]
        return [Path(d) for d in data if isinstance(d, str) and d != _CHOOSE]  # not the separator or "Choose…"

    def _fill(self, recent: list[Path], current: Path | None) -> None:
        self.blockSignals(True)
        self.clear()
        self.addItem(BUNDLED_TEXT, None)
        self.setItemData(0, "corral's small byte-level transformer on the bundled stories: a quick try of the cluster",
                         Qt.ItemDataRole.ToolTipRole)
        names = [p.name for p in recent]
        for path in recent:
            # Two remembered files of the same name are told apart by their folder.
            text = path.name if names.count(path.name) == 1 else f"{path.parent.name}/{path.name}"
            self.addItem(text, str(path))
            self.setItemData(self.count() - 1, str(path), Qt.ItemDataRole.ToolTipRole)
        self.insertSeparator(self.count())
        self.addItem(CHOOSE_TEXT, _CHOOSE)
        self._select(current)
        self.blockSignals(False)

    def _select(self, path: Path | None) -> None:
        index = self.findData(str(path)) if path is not None else 0
        self.setCurrentIndex(max(index, 0))

    def _update_tooltip(self) -> None:
        path = self.config_file
        index = self.currentIndex()
        if path is not None and index >= 0:
            self.setItemData(index, f"{path}\n{self.summary.describe() if self.summary else ''}",
                             Qt.ItemDataRole.ToolTipRole)


class ConfigLine(QLabel):
    """One line under the bar: what the chosen config file is, or (in the failure colour) why it cannot be used."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary: ConfigSummary | None = None
        self.setVisible(False)

    def show_summary(self, summary: ConfigSummary | None) -> None:
        self.summary = summary
        self.setVisible(summary is not None)
        # A valid file's line says it is what Start trains next (the run line below is about the shown run).
        text = "" if summary is None else f"Start trains {summary.describe()}" if summary.ok else summary.describe()
        self.setText(text)
        self.setToolTip(str(summary.path) if summary is not None else "")
        self._restyle()

    def _restyle(self) -> None:
        if self.summary is None:
            return
        kind = "muted" if self.summary.ok else "fail"
        self.setStyleSheet(f"color: {status_color(kind)}")  # the application's palette: the one in use

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        # The colours are picked for the background: follow a switch between light and dark.
        if event.type() == QEvent.Type.ApplicationPaletteChange:
            self._restyle()
        super().changeEvent(event)


__all__ = ["ConfigChooser", "ConfigLine", "ConfigSummary", "ask_for_file", "load_recent", "summarize_config"]
