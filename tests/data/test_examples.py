"""Fine-tuning examples: reading, held-out splits, shards and batching by length."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.data.examples import (
    ExampleDataset,
    ExampleSampler,
    Fields,
    build_shards,
    hold_out,
    read_examples,
)
from lmlab.errors import DataError
from lmlab.tokenizer import Tokenizer


def test_reads_jsonl_tsv_csv_and_hf_translation_rows(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"src": "Hallo", "tgt": "Hello"}\n\n{"src": "Welt", "tgt": "World"}\n')
    (tmp_path / "a.tsv").write_text("source\ttarget\nHallo\tHello\nWelt\tWorld\n")
    (tmp_path / "a.csv").write_text('source,target\nHallo,Hello\n"Welt, schön","World, nice"\n')
    (tmp_path / "hf.jsonl").write_text(json.dumps({"translation": {"de": "Hallo", "en": "Hello"}}) + "\n")
    assert read_examples(tmp_path / "a.jsonl", "seq2seq", Fields(source="src", target="tgt")).outputs == \
        ["Hello", "World"]
    assert read_examples(tmp_path / "a.tsv", "seq2seq").inputs == ["Hallo", "Welt"]
    assert read_examples(tmp_path / "a.csv", "seq2seq").outputs == ["Hello", "World, nice"]
    hf = read_examples(tmp_path / "hf.jsonl", "seq2seq", Fields(source_lang="de", target_lang="en"))
    assert (hf.inputs, hf.outputs) == (["Hallo"], ["Hello"])


def test_reads_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["apple", "car"], "label": ["fruit", "vehicle"]}), tmp_path / "a.parquet")
    examples = read_examples(tmp_path / "a.parquet", "classify")
    assert (examples.inputs, examples.outputs) == (["apple", "car"], ["fruit", "vehicle"])


@pytest.mark.parametrize("content, message", [
    ('{"source": "a"}\n', "a.jsonl:1: no field 'target'"),
    ('{"source": "a", "target": "b"}\n{"source": "a", "target": "  "}\n', "a.jsonl:2: field 'target' is empty"),
    ('{"source": "a", "target": "b"}\nnot json\n', "a.jsonl:2: not valid JSON"),
    ("", "holds no examples"),
])
def test_bad_examples_name_the_file_and_line(tmp_path, content, message):
    (tmp_path / "a.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        read_examples(tmp_path / "a.jsonl", "seq2seq")


def test_hold_out_is_by_source_hash_not_order(tmp_path):
    rows = [{"source": f"s{i}", "target": f"t{i}"} for i in range(200)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
    train_a, valid_a = hold_out(read_examples(tmp_path / "a.jsonl", "seq2seq"), 0.1)
    train_b, valid_b = hold_out(read_examples(tmp_path / "b.jsonl", "seq2seq"), 0.1)
    assert len(valid_a) == 20 and sorted(valid_a.inputs) == sorted(valid_b.inputs)
    assert not set(valid_a.inputs) & set(train_a.inputs)


def test_reads_instructions_and_holds_out_by_prompt(tmp_path):
    """sft rows: prompt/completion (fields settable) and conversations; a conversation's prompt is its turns
    before the last answer, so two answers to one prompt are never on both sides of the split."""
    chat = lambda i, answer: {"messages": [{"role": "user", "content": f"q{i}"},
                                           {"role": "assistant", "content": answer}]}
    rows = [{"q": f"p{i}", "a": f"c{i}"} for i in range(50)] + [chat(i, a) for i in range(50) for a in "xy"]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = read_examples(tmp_path / "a.jsonl", "sft", Fields(prompt="q", completion="a"))
    assert examples.inputs[0] == "p0" and examples.outputs[:1] == ["c0"]
    assert examples.inputs[50] == rows[50]["messages"] and examples.outputs[50:52] == ["x", "y"]
    train, valid = hold_out(examples, 0.2)
    prompts = lambda e: {json.dumps(x[:-1]) for x in e.inputs if not isinstance(x, str)}
    assert len(valid) == 30 and prompts(valid) and not prompts(valid) & prompts(train)


def test_label_not_in_training_labels_is_an_error(tmp_path, task_tokenizer):
    tok = Tokenizer.load(task_tokenizer)
    (tmp_path / "train.jsonl").write_text('{"text": "apple", "label": "fruit"}\n')
    (tmp_path / "valid.jsonl").write_text('{"text": "car", "label": "fruit"}\n{"text": "bus", "label": "car"}\n')
    splits = {s: read_examples(tmp_path / f"{s}.jsonl", "classify") for s in ("train", "valid")}
    with pytest.raises(DataError, match=r"valid.jsonl:2: label 'car' is not one of the 1 labels"):
        build_shards(tmp_path / "shards", tok, splits, "classify")


def test_sampler_resumes_exactly_and_pads_little(tmp_path, task_tokenizer, reversal_data):
    tok = Tokenizer.load(task_tokenizer)
    splits = {"train": read_examples(reversal_data / "train.jsonl", "seq2seq")}
    build_shards(tmp_path, tok, splits, "seq2seq")
    ds = ExampleDataset(tmp_path, "train")
    assert len(ds) == 2000 and ds.source_lengths.min() >= 3
    lengths = ds.source_lengths + ds.target_lengths
    a = ExampleSampler(ds, lengths, 32, seed=3)
    first = [a.sample()[0] for _ in range(70)]  # past the end of the first epoch (62 batches)
    b = ExampleSampler(ds, lengths, 32, seed=3)
    for _ in range(40):
        b.sample()
    c = ExampleSampler(ds, lengths, 32, seed=3)
    c.restore(b.checkpoint_state())
    for expected in first[40:]:
        got = c.sample()[0]
        assert all(np.array_equal(x, y) for x, y in zip(got.sources, expected.sources, strict=True))
    # each epoch is a new order of whole batches, each batch of similar lengths
    assert not np.array_equal(a.epoch_batches(0), a.epoch_batches(1))
    assert a.padding_share([ds.source_lengths, ds.target_lengths]) < 0.10
    wide = np.random.default_rng(0).integers(5, 200, len(ds))  # long-tailed lengths still pad under 10%
    assert ExampleSampler(ds, wide, 32, seed=0).padding_share([wide]) < 0.10
