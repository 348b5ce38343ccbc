"""Reassembling ranks' lines from mpirun --tag-output: synthetic cases, then a real mpirun burst."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest

from cluster.mpi_output import RankLine, TagReassembler


def reassemble(*chunks: str) -> list[RankLine]:
    reassembler = TagReassembler()
    lines = [line for chunk in chunks for line in reassembler.feed(chunk)]
    return lines + reassembler.flush()


def test_whole_lines_per_rank():
    assert reassemble("[1,0]<stdout>:hello\n[1,1]<stdout>:world\n") == [
        RankLine(0, "stdout", "hello"), RankLine(1, "stdout", "world")]


def test_a_line_cut_by_another_ranks_chunk_is_rejoined():
    # Rank 0 wrote "abc" without a newline; rank 1's chunk follows on the same physical line.
    stream = "[1,0]<stdout>:abc[1,1]<stdout>:xyz\n[1,0]<stdout>:def\n"
    assert reassemble(stream) == [RankLine(1, "stdout", "xyz"), RankLine(0, "stdout", "abcdef")]


def test_any_chunking_of_the_input_gives_the_same_lines():
    stream = "[1,0]<stdout>:ab[1,1]<stderr>:oops\n[1,0]<stdout>:cd\n--- mpirun says ---\n[1,2]<stdout>:\n"
    expected = reassemble(stream)
    assert expected == [
        RankLine(1, "stderr", "oops"), RankLine(0, "stdout", "abcd"),
        RankLine(None, "stdout", "--- mpirun says ---"), RankLine(2, "stdout", "")]
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), 5))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        assert reassemble(*chunks) == expected


def test_a_last_line_without_newline_comes_out_at_flush():
    assert reassemble("[1,3]<stdout>:bye") == [RankLine(3, "stdout", "bye")]


BURST = textwrap.dedent("""
    import os, sys
    rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
    for i in range(LINES):
        # Lines of varied length, written in odd pieces, to provoke chunks that end mid-line.
        text = f"rank={rank} i={i} " + "x" * (i % 97)
        sys.stdout.write(text[: len(text) // 2])
        sys.stdout.write(text[len(text) // 2 :] + "\\n")
        if i % 50 == 0:
            sys.stdout.flush()
""")


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI's mpirun is not installed")
def test_a_real_mpirun_burst_loses_and_corrupts_no_line(tmp_path):
    ranks, lines_per_rank = 3, 2000
    script = tmp_path / "burst.py"
    script.write_text(BURST.replace("LINES", str(lines_per_rank)))
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    argv = ["mpirun", "--oversubscribe", "-np", str(ranks), "--tag-output", sys.executable, str(script)]
    output = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=True).stdout
    lines = reassemble(output)
    by_rank: dict[int, list[str]] = {}
    for line in lines:
        assert line.rank is not None, f"untagged line from mpirun: {line.text!r}"
        by_rank.setdefault(line.rank, []).append(line.text)
    for rank in range(ranks):
        expected = [f"rank={rank} i={i} " + "x" * (i % 97) for i in range(lines_per_rank)]
        assert by_rank[rank] == expected
