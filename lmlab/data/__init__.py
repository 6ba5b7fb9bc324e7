"""Data: corpus readers, token shards, and deterministic resumable sampling of packed sequences."""

from lmlab.data.corpus import (
    CorpusStats,
    corpus_files,
    read_documents,
    stdlib_docstrings,
    write_stdlib_corpus,
)
from lmlab.data.prepare import prepare
from lmlab.data.sampler import Sampler
from lmlab.data.shards import Manifest, SplitInfo, TokenDataset, token_dtype

__all__ = [
    "CorpusStats",
    "Manifest",
    "Sampler",
    "SplitInfo",
    "TokenDataset",
    "corpus_files",
    "prepare",
    "read_documents",
    "stdlib_docstrings",
    "token_dtype",
    "write_stdlib_corpus",
]
