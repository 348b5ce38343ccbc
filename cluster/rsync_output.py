"""Read what rsync prints (itemized files, ``--info=progress2`` lines, ``--stats``) into typed numbers.

rsync's output is meant for people, so this is the one place that knows its shapes. Numbers carry
thousands separators (``3,000,017``; the separator follows the locale) from rsync 3.1 on, and
progress lines end in ``\\r`` rather than ``\\n``; rsync 2.6.9 (macOS) prints neither progress2 lines
nor separators, and names the transferred-files count differently. Every shape is a case in
``tests/unit/data/rsync_output/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The --out-format corral asks for: a marker no other rsync line starts with, the itemized change
# string (%i), the file's size (%l) and its name (%n, relative to the project folder).
ITEM_MARKER = "corral-item"
OUT_FORMAT = f"{ITEM_MARKER} %i %l %n"

_NUMBER = r"(\d[\d,.']*)"
_PROGRESS2 = re.compile(
    rf"^\s*{_NUMBER}\s+(\d+)%\s+\S+\s+\S+"  # bytes so far, percent, rate, elapsed or ETA
    r"(?:\s+\(xfr#(\d+), (to|ir)-chk=(\d+)/(\d+)\))?\s*$"
)
_STATS = {
    "files_total": re.compile(rf"^Number of files: {_NUMBER}"),
    "files_deleted": re.compile(rf"^Number of deleted files: {_NUMBER}"),
    # "regular files" from rsync 3.1 on; 2.6.9 says "Number of files transferred".
    "files_transferred": re.compile(rf"^Number of (?:regular )?files transferred: {_NUMBER}"),
    "bytes_total": re.compile(rf"^Total file size: {_NUMBER} bytes"),
    "bytes_transferred": re.compile(rf"^Total transferred file size: {_NUMBER} bytes"),
    "bytes_sent": re.compile(rf"^Total bytes sent: {_NUMBER}"),
    "bytes_received": re.compile(rf"^Total bytes received: {_NUMBER}"),
}


def parse_number(text: str) -> int:
    """``3,000,017`` (or ``3.000.017``, ``3'000'017`` in other locales) → 3000017."""
    return int(re.sub(r"\D", "", text))


@dataclass(frozen=True)
class SyncStats:
    """rsync's ``--stats`` summary for one node: what was compared and what crossed the wire."""

    files_total: int = 0  # files, directories and links in the project (after excludes)
    files_transferred: int = 0  # regular files whose content was sent
    files_deleted: int = 0  # removed on the node because they are gone here
    bytes_total: int = 0  # size of the project's files
    bytes_transferred: int = 0  # size of the files that were sent
    bytes_sent: int = 0  # what actually went over the network (deltas, file list, protocol)
    bytes_received: int = 0


@dataclass(frozen=True)
class ItemLine:
    """One ``corral-item`` line: rsync changed this path on the node."""

    change: str  # the itemize string, e.g. "<f.st......" (file sent), "cd+++++++++" (dir created)
    size: int
    path: str

    @property
    def is_file_sent(self) -> bool:
        # '<' = sent to the remote side (pushing), '>' = received (a local copy, as in tests); 'f' = file.
        return len(self.change) >= 2 and self.change[0] in "<>" and self.change[1] == "f"

    @property
    def is_deletion(self) -> bool:
        return self.change.startswith("*deleting")


@dataclass(frozen=True)
class ProgressLine:
    """One ``--info=progress2`` line: totals for the whole transfer so far."""

    bytes_done: int
    percent: int
    files_sent: int | None = None
    files_to_check: int | None = None
    files_total: int | None = None
    # False while rsync is still discovering files (``ir-chk``): files_total will grow.
    total_is_final: bool = False


@dataclass
class RsyncOutputParser:
    """Feed it rsync's stdout in chunks as they arrive; it returns the lines it understood."""

    _partial: str = ""
    _stats: dict[str, int] = field(default_factory=dict)
    other_lines: list[str] = field(default_factory=list)

    def feed(self, text: str) -> list[ItemLine | ProgressLine]:
        """Parse every complete line in ``text`` (``\\r`` ends a line too); keep the rest for later."""
        data = self._partial + text
        pieces = re.split(r"[\r\n]", data)
        self._partial = pieces.pop()
        return [parsed for piece in pieces if (parsed := self._line(piece)) is not None]

    def finish(self) -> list[ItemLine | ProgressLine]:
        """Parse whatever is left after the output closed."""
        rest, self._partial = self._partial, ""
        parsed = self._line(rest)
        return [parsed] if parsed is not None else []

    def stats(self) -> SyncStats | None:
        """The ``--stats`` numbers, or None if rsync never printed them (it failed first)."""
        if "files_total" not in self._stats:
            return None
        return SyncStats(**self._stats)

    def _line(self, line: str) -> ItemLine | ProgressLine | None:
        if not line.strip():
            return None
        if line.startswith(ITEM_MARKER + " "):
            return parse_item_line(line)
        progress = parse_progress_line(line)
        if progress is not None:
            return progress
        for key, pattern in _STATS.items():
            match = pattern.match(line)
            if match:
                self._stats[key] = parse_number(match.group(1))
                return None
        self.other_lines.append(line)
        return None


def parse_item_line(line: str) -> ItemLine | None:
    """``corral-item <f+++++++++ 1234 src/model.py`` → ItemLine; the path may contain spaces."""
    parts = line.split(" ", 3)
    if len(parts) < 4 or parts[0] != ITEM_MARKER:
        return None
    _, change, size, path = parts
    if change == "*deleting":
        # rsync pads "*deleting" to the width of the itemize field, so the size column is empty.
        rest = f"{size} {path}".lstrip()
        size_text, _, path = rest.partition(" ")
        return ItemLine(change, parse_number(size_text) if size_text.isdigit() else 0, path)
    try:
        return ItemLine(change, parse_number(size), path)
    except ValueError:
        return None


def parse_progress_line(line: str) -> ProgressLine | None:
    match = _PROGRESS2.match(line)
    if not match:
        return None
    done, percent, sent, kind, to_check, total = match.groups()
    return ProgressLine(
        bytes_done=parse_number(done),
        percent=int(percent),
        files_sent=int(sent) if sent else None,
        files_to_check=int(to_check) if to_check else None,
        files_total=int(total) if total else None,
        total_is_final=kind == "to",
    )
