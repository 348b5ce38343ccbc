"""Reassemble each rank's lines from ``mpirun --tag-output``, which tags chunks of output, not lines.

Open MPI writes ``[job,rank]<stream>:`` before each chunk it forwards and after every newline inside
it. A chunk that does not end in a newline is followed directly by the next chunk's tag, often another
rank's, on the same physical line; the rest of the first rank's line arrives later under a new tag.
Splitting mpirun's output on newlines therefore glues ranks together and cuts lines in two (TESTBED.md
measured 84 bad lines of 6,003 in a burst); keeping a buffer per (rank, stream) loses none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

TAG = re.compile(r"\[(\d+),(\d+)\]<(stdout|stderr|stddiag)>:")


@dataclass(frozen=True)
class RankLine:
    """One complete line of one rank (``rank`` None: mpirun's own output, not from any rank)."""

    rank: int | None
    stream: str
    text: str


@dataclass
class TagReassembler:
    """Feed mpirun's output as it arrives (any chunking); get back whole lines per rank, in order."""

    _pending: str = ""
    _partial: dict[tuple[int, str], str] = field(default_factory=dict)

    def feed(self, data: str) -> list[RankLine]:
        """Lines completed by ``data``; text after the last newline waits for the next call."""
        self._pending += data
        if "\n" not in self._pending:
            return []
        complete, _, self._pending = self._pending.rpartition("\n")
        lines: list[RankLine] = []
        for physical in complete.split("\n"):
            lines.extend(self._physical_line(physical))
        return lines

    def flush(self) -> list[RankLine]:
        """At end of output: whatever is left, including ranks' last lines that had no newline."""
        lines: list[RankLine] = []
        if self._pending:
            lines.extend(self._physical_line(self._pending, ends_line=False))
            self._pending = ""
        for (rank, stream), text in sorted(self._partial.items()):
            if text:
                lines.append(RankLine(rank, stream, text))
        self._partial.clear()
        return lines

    def _physical_line(self, physical: str, *, ends_line: bool = True) -> Iterator[RankLine]:
        pieces = list(_split_tagged(physical))
        for index, (rank, stream, text) in enumerate(pieces):
            if rank is None:
                # mpirun's own text (banners, errors) is untagged and always a whole line of its own.
                yield RankLine(None, "stdout", text)
                continue
            key = (rank, stream)
            buffered = self._partial.pop(key, "") + text
            # Only the last piece of a physical line ended with a newline; earlier ones were cut off
            # by another chunk's tag and continue under a later tag of the same rank.
            if index == len(pieces) - 1 and ends_line:
                yield RankLine(rank, stream, buffered)
            else:
                self._partial[key] = buffered


def _split_tagged(physical: str) -> Iterator[tuple[int | None, str, str]]:
    """``(rank, stream, text)`` for each tagged piece of one physical line; an untagged head has rank None."""
    matches = list(TAG.finditer(physical))
    if not matches:
        yield None, "stdout", physical
        return
    if matches[0].start() > 0:
        yield None, "stdout", physical[: matches[0].start()]
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(physical)
        stream = "stderr" if match.group(3) == "stderr" else "stdout"
        yield int(match.group(2)), stream, physical[match.end() : end]
