"""Datasets in the usual shapes, line-numbered errors, byte tokens, and each rank's own share of the samples."""

from __future__ import annotations

import json

import pytest

from trainer.data import (
    BUNDLED_CORPUS,
    EOS,
    DataError,
    Position,
    ShardedSamples,
    decode,
    eval_micro_batches,
    load_splits,
    read_documents,
    tokenize,
)

RECORD_CASES = [
    ({"text": "hello"}, "hello"),
    ({"prompt": "Q: 2+2? ", "completion": "4"}, "Q: 2+2? 4"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "user: hi\nassistant: hello"),
    ({"text": "héllo ✓", "meta": 1}, "héllo ✓"),
]


@pytest.mark.parametrize(("record", "document"), RECORD_CASES)
def test_jsonl_shapes(tmp_path, record, document):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(record) + "\n\n" + json.dumps(record) + "\n")  # a blank line is skipped
    assert read_documents(path) == [document, document]


MALFORMED = [
    ('{"text": "ok"}\n{"text": "broken\n', ":2: not valid JSON"),
    ('{"text": "ok"}\n\n{"title": "no text"}\n', ':3: expected {"text": ...}'),
    ('["a list"]\n', ":1: expected"),
    ('{"prompt": "only a prompt"}\n', ":1: expected"),
    ('{"messages": [{"role": "user"}]}\n', ':1: messages[0] needs a string "content"'),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED)
def test_malformed_line_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_documents(path)
    assert f"{path}{message}" in str(caught.value)


def test_plain_text_is_one_document(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("line one\nline two\n")
    assert read_documents(path) == ["line one\nline two\n"]


def test_missing_and_binary_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_documents(tmp_path / "nope.jsonl")
    (tmp_path / "blob.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        read_documents(tmp_path / "blob.txt")


def test_tokens_are_utf8_bytes_with_eos_after_each_document():
    tokens = tokenize(["ab", "é"])
    assert list(tokens) == [97, 98, EOS, 0xC3, 0xA9, EOS]
    assert decode(list(tokens)) == "ab\n\né\n\n"


def test_directory_with_train_and_valid_files(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "abcdefgh"}\n')
    (tmp_path / "valid.txt").write_text("xyz")
    splits = load_splits(str(tmp_path), val_fraction=0.5)
    assert list(splits.train) == [*b"abcdefgh", EOS]
    assert list(splits.val) == [*b"xyz", EOS]


def test_split_holds_out_the_tail_and_bundled_corpus_is_used_by_default(tmp_path):
    (tmp_path / "c.txt").write_text("a" * 99)
    splits = load_splits(str(tmp_path / "c.txt"), val_fraction=0.1)
    assert (len(splits.train), len(splits.val)) == (90, 10)
    bundled = load_splits("", 0.05)
    assert bundled.source == str(BUNDLED_CORPUS)
    assert 1_000_000 < len(bundled.train) + len(bundled.val) < 4_000_000
    with pytest.raises(DataError, match="no train.jsonl or train.txt"):
        load_splits(str(tmp_path), 0.1)


def _epoch_ids(samples: ShardedSamples, epoch: int) -> list[int]:
    ids, position = [], Position(epoch, 0)
    while position.epoch == epoch:
        for micro in samples.micro_batches(position):
            ids.extend(micro)
        position = samples.advance(position)
    return ids


@pytest.mark.parametrize(("world", "batch", "accum"), [(1, 4, 1), (2, 4, 1), (3, 2, 2), (4, 1, 3)])
def test_no_sample_twice_in_an_epoch_across_ranks(world, batch, accum):
    ranks = [ShardedSamples(1000, 8, batch, accum, rank, world, seed=5) for rank in range(world)]
    per_rank = [_epoch_ids(samples, epoch=0) for samples in ranks]
    everything = [i for ids in per_rank for i in ids]
    assert len(everything) == len(set(everything)) == ranks[0].steps_per_epoch * batch * accum * world
    assert all(0 <= i < ranks[0].n_samples for i in everything)
    assert _epoch_ids(ranks[0], epoch=1) != per_rank[0]  # reshuffled each epoch


def test_one_process_with_the_union_batch_sees_exactly_the_ranks_batches():
    ranks = [ShardedSamples(5000, 16, 4, 1, rank, 2, seed=1) for rank in range(2)]
    single = ShardedSamples(5000, 16, 8, 1, 0, 1, seed=1)
    position = Position(0, 3)
    assert single.micro_batches(position) == [ranks[0].micro_batches(position)[0] + ranks[1].micro_batches(position)[0]]


def test_positions_advance_through_epochs():
    samples = ShardedSamples(10 * 4 + 1, 4, 3, 1, 0, 1, seed=0)  # 10 samples, 3 whole steps per epoch
    assert samples.steps_per_epoch == 3
    position = Position()
    seen = []
    for _ in range(4):
        seen.append(position)
        position = samples.advance(position)
    assert seen == [Position(0, 0), Position(0, 1), Position(0, 2), Position(1, 0)]


def test_too_little_data_for_one_step_is_a_clear_error():
    with pytest.raises(DataError, match="fewer than one step needs"):
        ShardedSamples(100, 64, 16, 1, 0, 2, seed=0)


def test_eval_batches_are_disjoint_across_ranks():
    shares = [eval_micro_batches(10_000, 10, 4, 3, rank, 2) for rank in range(2)]
    ids = [i for share in shares for micro in share for i in micro]
    assert len(ids) == len(set(ids)) == 3 * 4 * 2
    assert all(len(micro) == 4 for share in shares for micro in share)
