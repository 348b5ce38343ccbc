"""A streamed command hands every line to on_line and keeps only the end of its output for the result."""

from __future__ import annotations

import asyncio

from cluster.ssh import _pump_lines


class LinesReader:
    """What asyncssh's SSHReader gives ``async for``: lines with their newline, then an empty read at EOF."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = [*lines, ""]

    def __aiter__(self) -> "LinesReader":
        return self

    async def __anext__(self) -> str:
        if not self._lines:
            raise StopAsyncIteration
        return self._lines.pop(0)


def test_every_line_is_seen_and_only_the_tail_is_kept():
    lines = [f"line {i:05d} " + "x" * (i % 50) + "\n" for i in range(20_000)]
    seen: list[tuple[str, str]] = []
    kept = asyncio.run(_pump_lines(LinesReader(lines), "stdout", lambda stream, line: seen.append((stream, line)),
                                   keep_chars=10_000))
    assert seen == [("stdout", line.rstrip("\n")) for line in lines]
    assert 10_000 - 60 < len(kept) <= 10_000 and "".join(lines).endswith(kept) and kept.startswith("line ")


def test_a_short_output_is_kept_whole_and_a_huge_last_line_too():
    lines = ["a\n", "\n", "b\r\n"]
    assert asyncio.run(_pump_lines(LinesReader(lines), "stderr", lambda *_: None)) == "a\n\nb\r\n"
    huge = "y" * 50 + "\n"
    assert asyncio.run(_pump_lines(LinesReader(["x\n", huge]), "stdout", lambda *_: None, keep_chars=10)) == huge
