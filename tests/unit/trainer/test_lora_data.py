"""LoRA data: every bad line is reported with its file and line; mlx-lm's datasets are built from the good ones."""

from __future__ import annotations

import json

import pytest

from trainer.lora.data import DataError, load_datasets, read_jsonl
from tests.lora_fixtures import make_lora_dataset, make_tiny_llama

LINE_ERRORS = [
    ('{"text": "a"}\n{"text": "b"\n', ":2: not valid JSON (Expecting ',' delimiter at column 13)"),
    ('{"text": "a"}\n\n["a", "b"]\n', ":3: expected a JSON object, got list"),
    ('{"txt": "a"}\n', ':1: no "text", "prompt" + "completion" or "messages" field'),
    ('{"text": "a"}\n{"prompt": "p", "completion": "c"}\n', ":2: no 'text' field, but the first line is text data"),
    ('{"prompt": "p", "completion": "c"}\n{"prompt": "p"}\n', ":2: no 'completion' field, but the first line is prompt/completion"),
]


@pytest.mark.parametrize(("text", "message"), LINE_ERRORS)
def test_bad_lines_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "train.jsonl"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_jsonl(path)
    assert str(caught.value).startswith(f"{path}{message}")


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a"}\n\n   \n{"text": "b"}\n\n')
    assert read_jsonl(path) == [{"text": "a"}, {"text": "b"}]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("mlx_lm")
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return load_tokenizer(make_tiny_llama(tmp_path_factory.mktemp("tiny")))


def test_load_datasets_builds_mlx_lm_datasets(tmp_path, tokenizer):
    data = make_lora_dataset(tmp_path, n_train=8, n_valid=4)
    train, valid = load_datasets(data, tokenizer, mask_prompt=False, batch_size=4, need_valid=True)
    assert type(train).__name__ == "TextDataset" and len(train) == 8 and len(valid) == 4
    tokens, offset = train.process(train[0])
    assert tokens[-1] == tokenizer.eos_token_id and offset == 0
    assert load_datasets(data, tokenizer, False, 4, need_valid=False)[1] is None


DATASET_ERRORS = [
    (None, None, "data directory {dir} does not exist"),
    ({}, None, "{dir}/train.jsonl does not exist"),
    ({"train": 3}, None, "{dir}/train.jsonl has 3 examples but batch_size is 4"),
    ({"train": 8, "valid": 2}, None, "{dir}/valid.jsonl has 2 examples but batch_size is 4"),
    ({"train": 0}, None, "{dir}/train.jsonl has no examples"),
    ({"train": 8}, [{"prompt": "p", "completion": "c"}] * 8, "has prompt/completion data, which mlx-lm formats with the tokenizer's chat template"),
]


@pytest.mark.parametrize(("counts", "records", "message"), DATASET_ERRORS)
def test_dataset_errors_name_the_file(tmp_path, tokenizer, counts, records, message):
    data = tmp_path / "data"
    if counts is not None:
        data.mkdir()
        for name, count in counts.items():
            lines = records or [{"text": f"alice likes figs {i}"} for i in range(count)]
            (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines[:count]))
    with pytest.raises(DataError) as caught:
        load_datasets(data, tokenizer, mask_prompt=False, batch_size=4, need_valid=True)
    assert message.format(dir=data) in str(caught.value)


def test_mask_prompt_on_text_data_names_the_file(tmp_path, tokenizer):
    data = make_lora_dataset(tmp_path, n_train=8, n_valid=4)
    with pytest.raises(DataError, match=r"train.jsonl: Prompt masking not supported for text dataset"):
        load_datasets(data, tokenizer, mask_prompt=True, batch_size=4, need_valid=True)
