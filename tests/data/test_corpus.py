"""Tests of lmlab.data.corpus: reading .txt/.jsonl/directories, replaced bytes, errors, stdlib docstrings."""

from __future__ import annotations

import json
import logging

import pytest

from lmlab.data import CorpusStats, read_documents, stdlib_docstrings, write_stdlib_corpus
from lmlab.errors import DataError


def test_txt_blank_lines_make_documents(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first doc\nstill first\n\n  \nsecond doc\n\n\n\nthird\n", encoding="utf-8")
    assert list(read_documents(f)) == ["first doc\nstill first", "second doc", "third"]


def test_txt_without_blank_lines_is_one_document(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("line one\nline two\n", encoding="utf-8")
    assert list(read_documents(f)) == ["line one\nline two"]


def test_jsonl(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"text": "one\n\ntwo", "id": 1}) + "\n\n" + json.dumps({"text": "three"}) + "\n")
    assert list(read_documents(f)) == ["one\n\ntwo", "three"]


def test_jsonl_line_without_text_names_file_and_line(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match=r"a\.jsonl:2: no string field \"text\""):
        list(read_documents(f))
    f.write_text("{broken\n")
    with pytest.raises(DataError, match=r"a\.jsonl:1: not valid JSON"):
        list(read_documents(f))


def test_directory_recursive_sorted_and_filtered(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.txt").write_text("from b/z")
    (tmp_path / "a.md").write_text("from a.md")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "from c"}) + "\n")
    (tmp_path / "ignored.py").write_text("print('no')")
    stats = CorpusStats()
    assert list(read_documents(tmp_path, stats)) == ["from a.md", "from b/z", "from c"]
    assert (stats.files, stats.documents, stats.replaced_bytes) == (3, 3, 0)


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path, caplog):
    f = tmp_path / "latin1.txt"
    f.write_bytes(b"caf" + b"\xe9 and na\xefve \xff\xfe end".replace(b"end", "é".encode()))
    stats = CorpusStats()
    with caplog.at_level(logging.WARNING):
        docs = list(read_documents(f, stats))
    assert docs == ["caf\ufffd and na\ufffdve \ufffd\ufffd é"]
    assert stats.replaced_bytes == 4 and stats.replaced_by_file == {str(f): 4}
    assert "4 byte(s) of invalid UTF-8" in caplog.text


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_documents(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="holds no"):
        read_documents(tmp_path)
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(DataError, match="holds no document"):
        list(read_documents(tmp_path))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="unsupported suffix"):
        read_documents(tmp_path / "x.csv")


def test_stdlib_docstrings_deterministic_and_corpus(tmp_path):
    docs = stdlib_docstrings()
    assert len(docs) > 5000 and sum(map(len, docs)) > 1_000_000
    assert min(map(len, docs)) >= 40
    assert stdlib_docstrings(workers=1)[:200] == docs[:200]
    corpus = write_stdlib_corpus(tmp_path / "corpus")
    assert list(read_documents(corpus)) == docs


def test_binary_and_non_utf8_files_are_refused_by_name(tmp_path):
    import random

    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(DataError, match=r"image\.txt holds NUL bytes"):
        list(read_documents(binary))
    noise = tmp_path / "noise.txt"
    noise.write_bytes(bytes(random.Random(0).randrange(0x80, 0x100) for _ in range(4000)))  # no valid UTF-8 at all
    with pytest.raises(DataError, match=r"noise\.txt is not UTF-8 text"):
        list(read_documents(noise))
    latin1 = tmp_path / "latin1.txt"  # a few accented letters in another encoding: replaced and counted, as before
    latin1.write_bytes("Le café est très bon, à la française.".encode("latin-1"))
    stats = CorpusStats()
    assert len(list(read_documents(latin1, stats))) == 1 and stats.replaced_bytes == 4
