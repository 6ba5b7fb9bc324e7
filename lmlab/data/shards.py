"""Token shards on disk: the layout, the manifest and :class:`TokenDataset`, their memory-mapped reader.

A directory written by :func:`lmlab.data.prepare` holds::

    manifest.json             format version, dtype, tokenizer fingerprint, counts per split, source
    tokenizer.json            the tokenizer the shards were made with (+ tokenizer_config.json)
    train/tokens_000.bin      every document's tokens followed by a separator, back to back (raw
                              little-endian uint16, or uint32 when the vocabulary exceeds 65,536)
    train/doc_offsets.npy     int64 start offset of each document in that stream, plus the final end
    val/...                   the same for the validation split
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lmlab.errors import DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS_FILE = "tokens_000.bin"
OFFSETS_FILE = "doc_offsets.npy"
SPLITS = ("train", "val")
Split = Literal["train", "val"]
_RERUN = "re-run `lmlab prepare` to rebuild it"


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id: uint16 up to 65,536 tokens, else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


@dataclass
class SplitInfo:
    """Counts of one split: documents and tokens (separators included)."""

    docs: int
    tokens: int


@dataclass
class Manifest:
    """What ``manifest.json`` records about a shard directory."""

    dtype: str
    vocab_size: int
    tokenizer_fingerprint: str
    separator_id: int
    splits: dict[str, SplitInfo]
    source: str
    replaced_bytes: int = 0
    valid_size: float = 0.01  # held out of the corpus (a share, or a count) when no validation corpus was given
    valid: str = ""  # the validation corpus, if one was given
    seed: int = 0
    format_version: int = FORMAT_VERSION
    files: dict[str, list[str]] = field(default_factory=lambda: {s: [TOKENS_FILE] for s in SPLITS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, out_dir: Path) -> None:
        (out_dir / MANIFEST).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, out_dir: str | Path) -> Manifest:
        """Read ``out_dir/manifest.json``.

        Raises:
            DataError: the directory or manifest is missing, unreadable, or of another format version.
        """
        path = Path(out_dir) / MANIFEST
        if not Path(out_dir).is_dir():
            raise DataError(f"token shard directory {out_dir} does not exist; create it with `lmlab prepare`")
        if not path.is_file():
            raise DataError(f"{path} is missing (an unfinished or foreign directory); {_RERUN}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format_version") != FORMAT_VERSION:
                raise DataError(f"{path} has format version {raw.get('format_version')}, this lmlab reads "
                                f"version {FORMAT_VERSION}; {_RERUN}")
            raw["splits"] = {k: SplitInfo(**v) for k, v in raw["splits"].items()}
            if "val_fraction" in raw:  # the name before valid_size could be a count
                raw["valid_size"] = raw.pop("val_fraction")
            return cls(**raw)
        except DataError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise DataError(f"{path} is corrupt ({e}); {_RERUN}") from None


class TokenDataset:
    """One split of a shard directory: a memory-mapped token stream and its document offsets.

    Attributes:
        tokens: (N,) the concatenated token stream, a read-only ``np.memmap`` of uint16/uint32.
        doc_offsets: (D + 1,) int64, ``doc_offsets[i]`` is where document ``i`` starts; the last is N.
        manifest: the directory's :class:`Manifest`.
        separator_id: the token closing each document (the tokenizer's eos; ``[SEP]`` for WordPiece).
    """

    def __init__(self, tokens: np.ndarray, doc_offsets: np.ndarray, manifest: Manifest, split: str) -> None:
        self.tokens = tokens
        self.doc_offsets = doc_offsets
        self.manifest = manifest
        self.split = split
        self.separator_id = manifest.separator_id

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_docs(self) -> int:
        return int(self.doc_offsets.shape[0] - 1)

    def __len__(self) -> int:
        return self.num_tokens

    def document(self, i: int) -> np.ndarray:
        """The tokens of document ``i``, its separator included."""
        return np.asarray(self.tokens[self.doc_offsets[i]:self.doc_offsets[i + 1]])

    @classmethod
    def open(cls, out_dir: str | Path, split: Split = "train", tokenizer: Any = None) -> TokenDataset:
        """Memory-map one split of a directory written by :func:`lmlab.data.prepare`.

        Args:
            out_dir: the shard directory.
            split: ``"train"`` or ``"val"``.
            tokenizer: if given, a :class:`lmlab.tokenizer.Tokenizer` that must be the one the shards were
                made with (compared by fingerprint).

        Raises:
            DataError: missing or corrupt manifest or files, sizes that disagree with the manifest, or a
                tokenizer other than the one the shards were made with.
        """
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        out = Path(out_dir)
        m = Manifest.read(out)
        if tokenizer is not None and tokenizer.fingerprint != m.tokenizer_fingerprint:
            raise DataError(f"the shards in {out} were made with a different tokenizer than the one given "
                            f"(fingerprint {m.tokenizer_fingerprint[:12]} vs {tokenizer.fingerprint[:12]}); "
                            f"use {out / 'tokenizer.json'} or re-run `lmlab prepare` with this tokenizer")
        info = m.splits.get(split)
        if info is None:
            raise DataError(f"{out / MANIFEST} has no {split!r} split; {_RERUN}")
        try:
            dtype = np.dtype(m.dtype)
        except TypeError:
            raise DataError(f"{out / MANIFEST} names an unknown dtype {m.dtype!r}; {_RERUN}") from None
        tok_path, off_path = out / split / TOKENS_FILE, out / split / OFFSETS_FILE
        for p in (tok_path, off_path):
            if not p.is_file():
                raise DataError(f"{p} is missing; {_RERUN}")
        size = tok_path.stat().st_size
        if size != info.tokens * dtype.itemsize:
            raise DataError(f"{tok_path} holds {size} bytes but the manifest expects {info.tokens} tokens of "
                            f"{dtype.itemsize} bytes (a truncated or foreign file); {_RERUN}")
        try:
            offsets = np.load(off_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{off_path} is corrupt ({e}); {_RERUN}") from None
        if (offsets.dtype != np.int64 or offsets.ndim != 1 or offsets.shape[0] != info.docs + 1
                or offsets[0] != 0 or offsets[-1] != info.tokens or np.any(np.diff(offsets) <= 0)):
            raise DataError(f"{off_path} does not match the manifest ({info.docs} documents, {info.tokens} "
                            f"tokens); {_RERUN}")
        if info.tokens == 0:
            raise DataError(f"the {split} split in {out} is empty; {_RERUN} with more text")
        tokens = np.memmap(tok_path, dtype=dtype, mode="r", shape=(info.tokens,))
        return cls(tokens, offsets, m, split)

    def __repr__(self) -> str:
        return f"TokenDataset(split={self.split!r}, docs={self.num_docs}, tokens={self.num_tokens})"
