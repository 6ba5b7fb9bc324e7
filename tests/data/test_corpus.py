"""Tests of lmlab.data.corpus: reading .txt/.jsonl/.csv/.tsv/.parquet/directories, the text field, replaced bytes,
errors, stdlib docstrings."""

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
    (tmp_path / "x.html").write_text("<p>a</p>")
    with pytest.raises(DataError, match="unsupported suffix"):
        read_documents(tmp_path / "x.html")


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


ROWS = [{"id": "1", "body": "first document,\nwith a comma and a line break"}, {"id": "2", "body": "  "},
        {"id": "3", "body": 'a "quoted" second'}]


def _write_rows(path, rows) -> None:
    """``rows`` as a .jsonl, .csv, .tsv or .parquet file (by the suffix of ``path``)."""
    import csv

    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_rows_give_documents_from_the_text_field(tmp_path, suffix):
    f = tmp_path / f"a{suffix}"
    _write_rows(f, ROWS)
    stats = CorpusStats()
    assert list(read_documents(f, stats, text_field="body")) == [ROWS[0]["body"], ROWS[2]["body"]]  # blank skipped
    assert (stats.files, stats.documents) == (1, 2)
    line = 2 if suffix in (".csv", ".tsv") else 1  # the first row (CSV/TSV: after the header)
    with pytest.raises(DataError, match=rf"a\{suffix}:{line}: no string field \"text\" \(the row has "
                       r"\['body', 'id'\]\); name the field that holds the text with --text-field"):
        list(read_documents(f))


def test_a_directory_reads_every_kind_of_corpus_file(tmp_path):
    (tmp_path / "a.txt").write_text("from a.txt")
    _write_rows(tmp_path / "b.csv", [{"text": "from b.csv"}])
    _write_rows(tmp_path / "c.parquet", [{"text": "from c.parquet"}])
    _write_rows(tmp_path / "d.tsv", [{"text": "from d.tsv"}])
    assert list(read_documents(tmp_path)) == ["from a.txt", "from b.csv", "from c.parquet", "from d.tsv"]


def test_a_csv_document_may_be_longer_than_the_csv_modules_cell_limit(tmp_path):
    long = "word " * 60_000  # 300,000 characters: above csv's default limit of 131,072
    _write_rows(tmp_path / "a.csv", [{"text": long}, {"text": "short"}])
    assert list(read_documents(tmp_path / "a.csv")) == [long, "short"]


def test_bad_row_files_are_errors_naming_the_file_and_line(tmp_path, monkeypatch):
    import sys

    bad = tmp_path / "a.csv"
    bad.write_text("text,id\nfine,1\nthree,cells,here\n")
    with pytest.raises(DataError, match=r"a\.csv:3: 3 columns, but the header \(line 1\) names 2"):
        list(read_documents(bad))
    bad.write_text('text\n"first line\nsecond line"\n"unterminated\nand more\nlines\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.csv:4: not valid CSV"):
        list(read_documents(bad))
    bad.write_bytes(b"text\nabc\x00def\n")
    with pytest.raises(DataError, match=r"a\.csv holds NUL bytes"):
        list(read_documents(bad))
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: a line must be a JSON object"):
        list(read_documents(tmp_path / "b.jsonl"))
    (tmp_path / "c.jsonl").write_text('{"text": null}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:1: no string field \"text\""):
        list(read_documents(tmp_path / "c.jsonl"))
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    with pytest.raises(DataError, match=r"g\.parquet is not a readable parquet file"):
        list(read_documents(garbage))
    _write_rows(tmp_path / "ok.parquet", [{"text": "fine"}])
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"reading .*ok\.parquet needs pyarrow: pip install pyarrow"):
        list(read_documents(tmp_path / "ok.parquet"))
