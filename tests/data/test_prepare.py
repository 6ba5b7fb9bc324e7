"""Tests of lmlab.data.prepare and TokenDataset: layout, dtype, round trip, manifest, validation errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lmlab.data import Manifest, TokenDataset, prepare, read_documents, token_dtype
from lmlab.errors import DataError
from lmlab.tokenizer import Tokenizer, train_tokenizer


def test_dtype_selection():
    assert token_dtype(8192) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert token_dtype(65537) == np.uint32
    assert token_dtype(250_000) == np.uint32


def test_layout_and_manifest(shards, docs, tokenizer):
    for name in ("manifest.json", "tokenizer.json", "tokenizer_config.json", "train/tokens_000.bin",
                 "train/doc_offsets.npy", "val/tokens_000.bin", "val/doc_offsets.npy"):
        assert (shards / name).is_file(), name
    m = Manifest.read(shards)
    raw = json.loads((shards / "manifest.json").read_text())
    assert raw["format_version"] == 1 and raw["dtype"] == "<u2" and raw["vocab_size"] == tokenizer.vocab_size
    assert m.tokenizer_fingerprint == tokenizer.fingerprint
    assert m.separator_id == tokenizer.eos_id
    assert m.splits["train"].docs + m.splits["val"].docs == len(docs)
    assert m.splits["val"].docs == round(0.05 * len(docs))
    assert m.replaced_bytes == 0
    assert Tokenizer.load(shards).fingerprint == tokenizer.fingerprint


def test_round_trip_decodes_to_the_documents(shards, docs, tokenizer):
    got = []
    for split in ("train", "val"):
        ds = TokenDataset.open(shards, split, tokenizer)
        assert ds.tokens.dtype == np.uint16
        assert ds.num_tokens == ds.manifest.splits[split].tokens and ds.num_docs > 0
        seps = np.flatnonzero(np.asarray(ds.tokens) == tokenizer.eos_id)
        np.testing.assert_array_equal(seps + 1, ds.doc_offsets[1:])  # one separator closing each document
        got += [tokenizer.decode(ds.document(i)) for i in range(ds.num_docs)]
    assert sorted(got) == sorted(docs)


def test_split_is_deterministic_and_seeded(tmp_path, corpus_file, tokenizer, shards):
    prepare(corpus_file, tokenizer, tmp_path / "again", val_fraction=0.05, progress=False, num_workers=1)
    for split in ("train", "val"):
        a = (shards / split / "tokens_000.bin").read_bytes()
        assert (tmp_path / "again" / split / "tokens_000.bin").read_bytes() == a
    prepare(corpus_file, tokenizer, tmp_path / "seed1", val_fraction=0.05, progress=False, seed=1)
    other = (tmp_path / "seed1/val/tokens_000.bin").read_bytes()
    assert other != (shards / "val/tokens_000.bin").read_bytes()


def test_val_has_at_least_one_doc(tmp_path, tokenizer):
    f = tmp_path / "c.txt"
    f.write_text("one doc\n\nanother doc\n\nthird doc")
    m = prepare(f, tokenizer, tmp_path / "s", val_fraction=0.001, progress=False)
    assert (m.splits["train"].docs, m.splits["val"].docs) == (2, 1)


def test_replaced_bytes_recorded(tmp_path, tokenizer):
    f = tmp_path / "c.txt"
    f.write_bytes(b"caf\xe9 one\n\nthe other doc\n")
    assert prepare(f, tokenizer, tmp_path / "s", progress=False).replaced_bytes == 1


def test_prepare_errors(tmp_path, tokenizer):
    with pytest.raises(DataError, match="does not exist"):
        prepare(tmp_path / "missing", tokenizer, tmp_path / "s", progress=False)
    (tmp_path / "one.txt").write_text("just one document")
    with pytest.raises(DataError, match="single document"):
        prepare(tmp_path / "one.txt", tokenizer, tmp_path / "s", progress=False)
    with pytest.raises(DataError, match="val_fraction"):
        prepare(tmp_path / "one.txt", tokenizer, tmp_path / "s", val_fraction=0.0, progress=False)


def test_tokenizer_mismatch(shards, docs):
    other = train_tokenizer(docs[:100], kind="bpe", vocab_size=280)
    with pytest.raises(DataError, match="different tokenizer"):
        TokenDataset.open(shards, "train", other)


@pytest.fixture
def copy(tmp_path, shards):
    dst = tmp_path / "copy"
    shutil.copytree(shards, dst)
    return dst


def test_truncated_token_file(copy):
    f = copy / "train" / "tokens_000.bin"
    f.write_bytes(f.read_bytes()[:-2])
    with pytest.raises(DataError, match="re-run `lmlab prepare`"):
        TokenDataset.open(copy, "train")
    TokenDataset.open(copy, "val")  # the other split is intact


def test_corrupt_offsets_and_manifest(copy):
    (copy / "val" / "doc_offsets.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="doc_offsets.npy is corrupt"):
        TokenDataset.open(copy, "val")
    (copy / "train" / "tokens_000.bin").unlink()
    with pytest.raises(DataError, match="missing"):
        TokenDataset.open(copy, "train")
    (copy / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="corrupt"):
        TokenDataset.open(copy, "train")
    (copy / "manifest.json").unlink()
    with pytest.raises(DataError, match="manifest.json is missing"):
        TokenDataset.open(copy, "train")
    with pytest.raises(DataError, match="does not exist"):
        TokenDataset.open(copy / "nowhere", "train")


def test_jsonl_and_directory_corpus(tmp_path, tokenizer, docs):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[:50]))
    (d / "b.txt").write_text("\n\n".join(docs[50:60]))
    m = prepare(d, tokenizer, tmp_path / "s", progress=False)
    assert m.splits["train"].docs + m.splits["val"].docs == len(list(read_documents(d))) == 60


def test_prepare_refuses_a_corpus_that_is_not_text(tmp_path, tokenizer):
    (tmp_path / "a.txt").write_bytes(bytes(range(256)) * 8)  # a binary file named .txt
    with pytest.raises(DataError, match="binary file"):
        prepare(tmp_path / "a.txt", tokenizer, tmp_path / "s", progress=False)


def test_check_shard_dir_says_run_prepare_first(tmp_path, corpus_file, shards):
    from lmlab.data.prepare import check_shard_dir

    check_shard_dir(shards)
    for corpus in (corpus_file, corpus_file.parent):
        with pytest.raises(DataError, match="is a text corpus, not token shards: run `lmlab prepare"):
            check_shard_dir(corpus)
    with pytest.raises(DataError, match="does not exist"):
        check_shard_dir(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="no manifest.json"):
        check_shard_dir(tmp_path / "other")
