"""Tokenize a corpus into memory-mapped token shards (see :mod:`lmlab.data.shards` for the layout)."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lmlab.data.corpus import SUFFIXES, CorpusStats, read_documents
from lmlab.data.examples import valid_count
from lmlab.data.shards import MANIFEST, OFFSETS_FILE, SPLITS, TOKENS_FILE, Manifest, SplitInfo, token_dtype
from lmlab.errors import DataError, make_output_dir

CHUNK_DOCS = 2000  # documents encoded per call: large enough to keep the Rust threads busy


def _count_documents(path: Path, text_field: str) -> int:
    return sum(1 for _ in read_documents(path, text_field=text_field))


def _val_mask(n_docs: int, valid_size: float, seed: int) -> np.ndarray:
    """(n_docs,) bool: which documents go to validation; a fixed-seed random choice of ``valid_size`` of them (a
    share, or a count)."""
    mask = np.zeros(n_docs, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_docs, size=valid_count(n_docs, valid_size), replace=False)] = True
    return mask


def _chunks(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    while chunk := list(islice(docs, size)):
        yield chunk


class _SplitWriter:
    """Appends token arrays of whole documents to ``tokens_000.bin`` and keeps their offsets."""

    def __init__(self, directory: Path, dtype: np.dtype) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.file = open(directory / TOKENS_FILE, "wb")  # noqa: SIM115 - closed in finish()
        self.directory, self.dtype = directory, dtype
        self.lengths: list[np.ndarray] = []

    def write(self, stream: np.ndarray, lengths: np.ndarray) -> None:
        self.file.write(stream.astype(self.dtype, copy=False).tobytes())
        self.lengths.append(lengths)

    def finish(self) -> SplitInfo:
        self.file.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(self.directory / OFFSETS_FILE, offsets)
        return SplitInfo(docs=len(lengths), tokens=int(offsets[-1]))


def check_shard_dir(path: str | Path) -> None:
    """Check that ``path`` (``data.path`` of a run) is a directory written by :func:`prepare`, and say what to do
    when it is not: a raw corpus (text files) is the most common mistake.

    Raises:
        DataError: the path is missing, a corpus, or a directory without a manifest.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data.path {p} does not exist; set it to a directory written by `lmlab prepare`")
    if (p / MANIFEST).is_file():
        return
    if p.is_file() or any(f.suffix.lower() in SUFFIXES for f in p.rglob("*") if f.is_file()):
        raise DataError(f"data.path {p} is a text corpus, not token shards: run `lmlab prepare {p} --tokenizer TOK "
                        "--out SHARDS` first, then set data.path to SHARDS")
    raise DataError(f"data.path {p} has no {MANIFEST}: it is not a directory written by `lmlab prepare`; "
                    "run `lmlab prepare CORPUS --tokenizer TOK --out SHARDS` and set data.path to SHARDS")


def prepare(corpus_path: str | Path, tokenizer: Any, out_dir: str | Path, valid_size: float = 0.01,
            num_workers: int | None = None, seed: int = 0, progress: bool = True, valid: str | Path | None = None,
            text_field: str = "text", overwrite: bool = False) -> Manifest:
    """Tokenize a corpus into ``out_dir/{train,val}`` token shards, a manifest and a copy of the tokenizer.

    Each document is encoded without special tokens and followed by the tokenizer's eos token (``</s>``;
    ``[SEP]`` for WordPiece), the separator that tells documents apart in a packed row. The validation
    documents are those of ``valid`` when it is given (every corpus document is then for training), else
    ``valid_size`` of the corpus's documents chosen at random with a fixed ``seed``; the same corpus and seed
    always give the same split. The corpus is read twice (once to count documents), so memory holds only one
    chunk of documents at a time.

    Encoding runs on the Rust threads of ``tokenizers`` (``encode_batch``), which measured as fast as a
    pool of worker processes on this kind of corpus while avoiding forking a threaded process.

    Args:
        corpus_path: a ``.txt``/``.md``/``.jsonl``/``.csv``/``.tsv``/``.parquet`` file or a directory
            (see :func:`lmlab.data.read_documents`).
        tokenizer: the :class:`lmlab.tokenizer.Tokenizer` to encode with.
        out_dir: the directory to write; one that already holds shards (a manifest) is refused unless
            ``overwrite``.
        valid_size: the documents held out for validation when there is no ``valid``: below 1 a share of them
            (at least one document), else a count (as ``data.valid_size`` of fine-tuning).
        num_workers: 1 encodes one document at a time in this thread; more (default: all cores) encodes
            chunks in parallel on the library's thread pool (its size is set by ``RAYON_NUM_THREADS``).
        seed: seeds the choice of validation documents.
        progress: show a tqdm progress bar over documents.
        valid: a corpus (file or directory) of validation documents.
        text_field: the field of a row (``.jsonl``, ``.csv``, ``.tsv``, ``.parquet``) that holds its document.
        overwrite: replace the manifest, splits and tokenizer of shards already in ``out_dir`` (its other files
            are left).

    Returns:
        The :class:`Manifest` written to ``out_dir/manifest.json``.

    Raises:
        DataError: the corpus (or ``valid``) is missing or empty, or a row lacks its text field (naming the
            file and line); without ``valid``, the corpus has a single document; ``valid_size`` is neither a
            share in (0, 1) nor a whole count; the tokenizer has no eos token to separate documents with;
            ``out_dir`` already holds shards and ``overwrite`` is false.
    """
    if not (0.0 < valid_size < 1.0 or (math.isfinite(valid_size) and valid_size >= 1 and valid_size % 1 == 0)):
        raise DataError(f"valid_size must be a share in (0, 1) or a whole count of documents >= 1, got {valid_size}")
    sep = tokenizer.eos_id
    if sep is None:
        raise DataError("the tokenizer has no eos/sep token to put between documents; use a tokenizer "
                        "with one (every tokenizer trained by lmlab has it)")
    if (Path(out_dir) / MANIFEST).is_file() and not overwrite:  # (before the corpus is read: it may be large)
        raise DataError(f"{out_dir} already holds token shards ({MANIFEST}); choose another --out, or pass "
                        "--overwrite to replace them")
    corpus_path = Path(corpus_path)
    n_docs = _count_documents(corpus_path, text_field)
    if valid is not None:  # the corpus is for training, valid for validation: one stream, train documents first
        n_valid = _count_documents(Path(valid), text_field)
        is_val = np.repeat([False, True], [n_docs, n_valid])
        n_docs += n_valid
    elif n_docs < 2:
        raise DataError(f"corpus {corpus_path} holds a single document, which cannot be split into train and "
                        "validation; separate documents with blank lines, give several files, or give a "
                        "validation corpus (--valid)")
    else:
        is_val = _val_mask(n_docs, valid_size, seed)
    dtype = token_dtype(tokenizer.vocab_size)
    workers = num_workers or os.cpu_count() or 1

    out = make_output_dir(out_dir, "output directory", DataError)
    (out / MANIFEST).unlink(missing_ok=True)  # no manifest until every file is complete
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
    writers = {s: _SplitWriter(out / s, dtype) for s in SPLITS}
    stats = CorpusStats()
    bar = tqdm(total=n_docs, unit="doc", disable=not progress, dynamic_ncols=True, desc="tokenizing")
    start = 0
    try:
        docs = read_documents(corpus_path, stats, text_field)
        if valid is not None:
            docs = chain(docs, read_documents(valid, stats, text_field))
        for chunk in _chunks(docs, CHUNK_DOCS):
            ids = tokenizer.encode_batch(chunk) if workers > 1 else [tokenizer.encode(d) for d in chunk]
            for x in ids:
                x.append(sep)  # each document is closed by the separator
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            # chain.from_iterable walks the lists in C: no Python bytecode per token.
            stream = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
            doc_val = is_val[start:start + len(chunk)]
            tok_val = np.repeat(doc_val, lengths)
            writers["train"].write(stream[~tok_val], lengths[~doc_val])
            writers["val"].write(stream[tok_val], lengths[doc_val])
            start += len(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
        infos = {s: w.finish() for s, w in writers.items()}

    tokenizer.save(out)
    manifest = Manifest(dtype=dtype.str, vocab_size=tokenizer.vocab_size,
                        tokenizer_fingerprint=tokenizer.fingerprint, separator_id=int(sep), splits=infos,
                        source=str(corpus_path.resolve()), replaced_bytes=stats.replaced_bytes,
                        valid_size=valid_size, valid=str(Path(valid).resolve()) if valid is not None else "",
                        seed=seed)
    manifest.write(out)
    return manifest
