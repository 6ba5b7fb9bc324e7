"""Reading text corpora: plain text, rows (JSON lines, CSV, TSV, parquet), directories of them, and the stdlib's
docstrings.

A corpus is a ``.txt``/``.md`` file, a file of rows or a directory holding such files.

* ``.txt`` / ``.md``: if the file contains a blank line (a line holding only whitespace), each
  blank-line-separated block is one document; otherwise the whole file is one document. Documents
  are stripped of surrounding whitespace and empty ones are dropped.
* ``.jsonl`` (one JSON object per line), ``.csv`` / ``.tsv`` (a header row naming the columns) and ``.parquet``
  (read with pyarrow): each row is one document, the string in its text field (``text`` unless another is
  named); rows whose text is empty or blank are skipped. Rows are read by :func:`lmlab.data.examples.read_rows`,
  as fine-tuning examples are.
* a directory: every file of those kinds below it, recursively, in sorted order.

Bytes that are not valid UTF-8 are decoded as U+FFFD; how many bytes were replaced is logged per
file as a warning and added up in a :class:`CorpusStats` when one is passed. A file that is not text
(NUL bytes, or more than a quarter of its bytes invalid UTF-8) is a :class:`~lmlab.errors.DataError`.
"""

from __future__ import annotations

import ast
import codecs
import inspect
import json
import logging
import os
import re
import sysconfig
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.data.examples import read_rows
from lmlab.errors import DataError

log = logging.getLogger(__name__)

ROW_SUFFIXES = (".jsonl", ".csv", ".tsv", ".parquet")  # files of rows, a document in each row's text field
SUFFIXES = (".txt", ".md", *ROW_SUFFIXES)
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")

# A codec error handler that replaces like errors="replace" and counts the bytes it replaced. The
# count lives in thread-local storage so concurrent readers in different threads do not mix.
_replaced = threading.local()


def _count_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _replaced.n = getattr(_replaced, "n", 0) + (exc.end - exc.start)
    return "\ufffd", exc.end


codecs.register_error("lmlab_count_replace", _count_replace)


@dataclass
class CorpusStats:
    """What reading a corpus found: files, documents and bytes of invalid UTF-8 replaced (per file)."""

    files: int = 0
    documents: int = 0
    replaced_bytes: int = 0
    replaced_by_file: dict[str, int] = field(default_factory=dict)


def decode_text(data: bytes, name: str = "<bytes>", stats: CorpusStats | None = None) -> str:
    """Decode UTF-8 ``data``, replacing invalid bytes by U+FFFD and reporting how many were replaced.

    Takes the raw bytes, a name for the warning and optional stats to add the count to; returns the text.
    """
    try:
        return data.decode("utf-8")  # the common case, at full speed
    except UnicodeDecodeError:
        pass
    _replaced.n = 0
    text = data.decode("utf-8", errors="lmlab_count_replace")
    n = _replaced.n
    log.warning("%s: %d byte(s) of invalid UTF-8 replaced by U+FFFD", name, n)
    if stats is not None:
        stats.replaced_bytes += n
        stats.replaced_by_file[name] = stats.replaced_by_file.get(name, 0) + n
    return text


def corpus_files(path: str | Path) -> list[Path]:
    """The text files a corpus path stands for: the file itself, or a directory's files, sorted.

    Raises:
        DataError: the path does not exist, has an unsupported suffix, or the directory holds no text file.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"corpus {p} does not exist; give a {', '.join(SUFFIXES)} file or a directory of them")
    if p.is_file():
        if p.suffix.lower() not in SUFFIXES:
            raise DataError(f"corpus file {p} has an unsupported suffix; use one of {', '.join(SUFFIXES)}")
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(f"corpus directory {p} holds no {', '.join(SUFFIXES)} file")
    return files


MAX_REPLACED_SHARE = 0.25  # a file with more of its bytes invalid UTF-8 is not text in an encoding we read


def _read_text(path: Path, stats: CorpusStats | None) -> str:
    """The text of a corpus file. A file that is not text is refused: one with NUL bytes (a binary file named
    ``.txt``), or one whose bytes are mostly not UTF-8 (another encoding, or random bytes), which would make a
    corpus of U+FFFD."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise DataError(f"{path} holds NUL bytes: it is a binary file, not text; take it out of the corpus")
    own = CorpusStats()
    text = decode_text(data, str(path), own)
    replaced = own.replaced_bytes
    if stats is not None and replaced:
        stats.replaced_bytes += replaced
        stats.replaced_by_file[str(path)] = stats.replaced_by_file.get(str(path), 0) + replaced
    if replaced > MAX_REPLACED_SHARE * len(data):
        raise DataError(f"{path} is not UTF-8 text: {replaced} of its {len(data)} bytes are invalid UTF-8; convert "
                        "it (e.g. `iconv -f latin1 -t utf-8`) or take it out of the corpus")
    return text


def _file_documents(path: Path, stats: CorpusStats | None, text_field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix in ROW_SUFFIXES:
        text = None if suffix == ".parquet" else _read_text(path, stats)  # parquet is binary: pyarrow reads it
        for lineno, row in read_rows(path, text):
            doc = row.get(text_field)
            if not isinstance(doc, str):
                raise DataError(f'{path}:{lineno}: no string field "{text_field}" (the row has {sorted(row)}); '
                                "name the field that holds the text with --text-field (data.text_field)")
            if doc.strip():
                yield doc
        return
    text = _read_text(path, stats)
    blocks = _BLANK_LINE.split(text) if _BLANK_LINE.search(text) else [text]
    for block in blocks:
        block = block.strip()
        if block:
            yield block


def read_documents(path: str | Path, stats: CorpusStats | None = None, text_field: str = "text") -> Iterator[str]:
    """Iterate over the documents of a corpus (see the module docstring for the rules).

    Args:
        path: a ``.txt``/``.md``/``.jsonl``/``.csv``/``.tsv``/``.parquet`` file or a directory of them.
        stats: if given, filled with counts of files, documents and replaced bytes as reading goes on.
        text_field: the field of a row that holds its document.

    Returns:
        An iterator of document strings, in a deterministic order.

    Raises:
        DataError: the path is missing or holds no text file (at call time); a row has no string
            ``text_field``, or a file cannot be read (naming the file and line); the corpus holds no document
            at all (when the iterator is exhausted).
    """
    files = corpus_files(path)

    def gen() -> Iterator[str]:
        n = 0
        for f in files:
            if stats is not None:
                stats.files += 1
            for doc in _file_documents(f, stats, text_field):
                n += 1
                if stats is not None:
                    stats.documents += 1
                yield doc
        if n == 0:
            raise DataError(f"corpus {path} holds no document (all of its files are empty)")

    return gen()


# --------------------------------------------------------------------------- stdlib docstrings

MIN_DOCSTRING_CHARS = 40
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}


def _docstrings_of(path: str) -> list[str]:
    try:
        tree = ast.parse(Path(path).read_bytes(), filename=path)
    except (SyntaxError, ValueError, OSError):  # e.g. lib2to3 test data written in Python 2
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)  # inspect.cleandoc'ed
            if doc and len(doc) >= MIN_DOCSTRING_CHARS:
                out.append(doc)
    return out


def stdlib_root() -> Path:
    """The directory of the Python standard library's sources."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The Python standard library's ``.py`` files (without tests, idlelib and site-packages), sorted."""
    files = []
    for dirpath, dirnames, filenames in os.walk(stdlib_root()):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        files += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return sorted(files)


def stdlib_modules(workers: int | None = None) -> list[tuple[str, list[str]]]:
    """The docstrings of the Python standard library by file: (path relative to the library, its docstrings).

    Modules, classes and functions of every stdlib file except tests, idlelib and site-packages are
    parsed with :mod:`ast`; docstrings are cleaned with :func:`inspect.cleandoc` and those shorter than
    40 characters dropped. The order is deterministic (sorted files, then the order of :func:`ast.walk`).

    Args:
        workers: processes to parse with; default: all cores (1 parses in this process).
    """
    files = stdlib_files()
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        parts = list(map(_docstrings_of, map(str, files)))
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_docstrings_of, map(str, files), chunksize=16))
    root = stdlib_root()
    return [(f.relative_to(root).as_posix(), [inspect.cleandoc(d) for d in docs])
            for f, docs in zip(files, parts, strict=True) if docs]


def stdlib_docstrings(workers: int | None = None) -> list[str]:
    """The docstrings of the Python standard library (:func:`stdlib_modules`, in order): an English corpus
    present on every machine, about 6,700 docstrings (1.7 MB) on CPython 3.11."""
    return [d for _, docs in stdlib_modules(workers) for d in docs]


def write_stdlib_corpus(dst: str | Path) -> Path:
    """Write :func:`stdlib_docstrings` as a corpus: ``dst/stdlib_docstrings.jsonl``, one document a line.

    JSON lines keep each docstring one document even though docstrings hold blank lines.

    Returns:
        The directory ``dst``, usable wherever a corpus path is.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in stdlib_docstrings())
    (dst / "stdlib_docstrings.jsonl").write_text(lines, encoding="utf-8")
    return dst
