"""Tests of lmlab.data.prepare and TokenDataset: layout, dtype, round trip, manifest, validation errors."""

from __future__ import annotations

import json
import re
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
    prepare(corpus_file, tokenizer, tmp_path / "again", valid_size=0.05, progress=False, num_workers=1)
    for split in ("train", "val"):
        a = (shards / split / "tokens_000.bin").read_bytes()
        assert (tmp_path / "again" / split / "tokens_000.bin").read_bytes() == a
    prepare(corpus_file, tokenizer, tmp_path / "seed1", valid_size=0.05, progress=False, seed=1)
    other = (tmp_path / "seed1/val/tokens_000.bin").read_bytes()
    assert other != (shards / "val/tokens_000.bin").read_bytes()


def test_val_has_at_least_one_doc(tmp_path, tokenizer):
    f = tmp_path / "c.txt"
    f.write_text("one doc\n\nanother doc\n\nthird doc")
    m = prepare(f, tokenizer, tmp_path / "s", valid_size=0.001, progress=False)
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
    with pytest.raises(DataError, match="valid_size"):
        prepare(tmp_path / "one.txt", tokenizer, tmp_path / "s", valid_size=0.0, progress=False)


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


def _val_docs(shards, tokenizer) -> list[str]:
    ds = TokenDataset.open(shards, "val", tokenizer)
    return [tokenizer.decode(ds.document(i)) for i in range(ds.num_docs)]


def test_valid_size_is_a_share_or_a_count(tmp_path, tokenizer, docs):
    f = tmp_path / "c.txt"
    f.write_text("\n\n".join(docs[:233]))
    share = prepare(f, tokenizer, tmp_path / "share", valid_size=0.01, progress=False)
    assert (share.splits["train"].docs, share.splits["val"].docs) == (231, 2)  # 1% of 233 documents
    count = prepare(f, tokenizer, tmp_path / "count", valid_size=40, progress=False)
    assert (count.splits["train"].docs, count.splits["val"].docs) == (193, 40) and count.valid_size == 40
    assert set(_val_docs(tmp_path / "share", tokenizer)) < set(docs[:233])
    for bad in (0, -1, 2.5, float("inf"), float("nan")):
        with pytest.raises(DataError, match="valid_size must be a share in \\(0, 1\\) or a whole count"):
            prepare(f, tokenizer, tmp_path / "bad", valid_size=bad, progress=False)


def test_a_validation_corpus_is_the_val_split(tmp_path, tokenizer, docs):
    train, valid = tmp_path / "train.txt", tmp_path / "valid.jsonl"
    train.write_text("\n\n".join(docs[:50]))
    valid.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[50:60]))
    m = prepare(train, tokenizer, tmp_path / "s", progress=False, valid=valid)
    assert (m.splits["train"].docs, m.splits["val"].docs) == (50, 10) and m.valid == str(valid.resolve())
    assert _val_docs(tmp_path / "s", tokenizer) == docs[50:60]
    ds = TokenDataset.open(tmp_path / "s", "train", tokenizer)
    assert [tokenizer.decode(ds.document(i)) for i in range(ds.num_docs)] == docs[:50]
    (tmp_path / "one.txt").write_text(docs[0])  # a single training document is enough with a validation corpus
    assert prepare(tmp_path / "one.txt", tokenizer, tmp_path / "one", progress=False, valid=valid).splits[
        "train"].docs == 1
    with pytest.raises(DataError, match="missing.txt does not exist"):
        prepare(train, tokenizer, tmp_path / "t", progress=False, valid=tmp_path / "missing.txt")


def test_rows_of_csv_and_parquet_with_another_text_field(tmp_path, tokenizer, docs):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "body"], *[[i, d] for i, d in enumerate(docs[:30])]])
    pq.write_table(pa.table({"body": docs[30:35]}), tmp_path / "valid.parquet")
    m = prepare(tmp_path / "train.csv", tokenizer, tmp_path / "s", progress=False, valid=tmp_path / "valid.parquet",
                text_field="body")
    assert (m.splits["train"].docs, m.splits["val"].docs) == (30, 5)
    assert _val_docs(tmp_path / "s", tokenizer) == docs[30:35]
    with pytest.raises(DataError, match=r"train\.csv:2: no string field \"text\""):
        prepare(tmp_path / "train.csv", tokenizer, tmp_path / "t", progress=False)


def test_shards_already_there_are_replaced_only_with_overwrite(tmp_path, tokenizer, docs, capsys):
    from lmlab.cli import main

    corpus, out = tmp_path / "c.txt", tmp_path / "s"
    corpus.write_text("\n\n".join(docs[:40]))
    prepare(corpus, tokenizer, out, valid_size=4, progress=False)
    (out / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    corpus.write_text("\n\n".join(docs[40:100]))
    with pytest.raises(DataError, match=re.escape(f"{out} already holds token shards (manifest.json); choose "
                                                  "another --out, or pass --overwrite")):
        prepare(corpus, tokenizer, out, valid_size=4, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    tokenizer.save(tmp_path / "tok")
    assert main(["prepare", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--out", str(out), "--valid-size",
                 "4", "--quiet", "--workers", "1", "--overwrite"]) == 0
    assert f"wrote {out}: train 56 documents" in capsys.readouterr().out
    assert set(_val_docs(out, tokenizer)) < set(docs[40:100]) and (out / "notes.txt").read_text() == "mine"


def test_a_manifest_written_before_valid_size_reads(shards, tmp_path):
    raw = json.loads((shards / "manifest.json").read_text())
    raw["val_fraction"] = raw.pop("valid_size")  # as lmlab wrote it then, without valid
    del raw["valid"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    assert Manifest.read(tmp_path).valid_size == 0.05


def test_cli_prepare_takes_the_text_field_and_the_validation_split(tmp_path, tokenizer, docs, capsys):
    from lmlab.cli import main

    tokenizer.save(tmp_path / "tok")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"content": d}) + "\n" for d in docs[:100]))
    args = ["prepare", str(corpus), "--tokenizer", str(tmp_path / "tok"), "--quiet", "--workers", "1"]
    assert main([*args, "--out", str(tmp_path / "a"), "--text-field", "content", "--valid-size", "7"]) == 0
    assert "train 93 documents" in capsys.readouterr().out
    (tmp_path / "v.txt").write_text("\n\n".join(docs[100:103]))
    assert main([*args, "--out", str(tmp_path / "b"), "--text-field", "content", "--valid",
                 str(tmp_path / "v.txt")]) == 0
    assert "train 100 documents" in capsys.readouterr().out
    assert Manifest.read(tmp_path / "b").splits["val"].docs == 3
    assert main([*args, "--out", str(tmp_path / "c"), "--val-fraction", "0.05", "--text-field", "content"]) == 0
    assert Manifest.read(tmp_path / "c").splits["val"].docs == 5  # the option's older name
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error: ") and "c.jsonl:1: no string field \"text\"" in err and "--text-field" in err
    assert "Traceback" not in err
    assert main([*args, "--out", str(tmp_path / "d"), "--text-field", "content", "--valid-size", "1.5"]) == 2
    assert "valid_size" in capsys.readouterr().err
