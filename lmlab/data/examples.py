"""Fine-tuning examples: reading them, tokenizing them once into memory-mapped shards, and batching by length.

An example is a (source, target) pair for text-to-text tasks (translation, summarization), a (text, label) pair
for classification, or for instruction tuning a (prompt, completion) pair or a conversation (``messages``). They
are read from ``.jsonl``, ``.tsv``, ``.csv`` or ``.parquet`` files (field names are settable), or from a
directory holding ``train.*`` and optionally ``valid.*`` / ``test.*`` files, as ``lmlab data get`` writes.
A directory written by :func:`build_shards` holds::

    manifest.json               kind, tokenizer fingerprint, token dtype, labels, counts per split, source files
    train/source.bin            every source's tokens back to back (uint16, or uint32 for large vocabularies)
    train/source_offsets.npy    int64 start of each source, plus the final end
    train/target.bin, train/target_offsets.npy      the same for targets (seq2seq)
    train/labels.npy            int64 label index of each example (classify)
    train/scored.bin, train/scored_offsets.npy      sft: 1 for each token of source.bin the loss scores
    train/rejected.bin, train/rejected_offsets.npy, train/rejected_scored.bin      dpo: the rejected rows (source.bin
                                holds the chosen ones), and which of their tokens are scored
    train/reference.npy         dpo: (N, 2) float64 log-probs of chosen and rejected under the reference model,
                                NaN until the reference pass (lmlab.train.reference) has computed them
    valid/...                   the same for the validation split

Shards hold the plain tokens of each text; the task objective adds special tokens, the source prefix and
truncation when it builds a batch, so the same shards serve every such setting. Instruction tuning (``sft``) and
preference optimisation (``dpo``) are the exception: their rows are laid out (chat template, separator) by the
objective as the shards are written.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lmlab.chat_template import MESSAGE_ROLES, Message, prompt_messages
from lmlab.data.shards import token_dtype
from lmlab.errors import DataError, TokenizerError

Kind = Literal["seq2seq", "classify", "sft", "dpo"]
Text = str | list[Message]  # an example's input: a text, or a conversation (sft, dpo)
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REFERENCE = "reference.npy"  # dpo: a split's reference log-probs (module docstring)
SUFFIXES = (".jsonl", ".tsv", ".csv", ".parquet")
SPLIT_NAMES = {"train": ("train",), "valid": ("valid", "validation", "val", "dev"), "test": ("test",)}
Split = Literal["train", "valid", "test"]
CSV_FIELD_LIMIT = 2**31 - 1  # a CSV cell may hold a whole document; the csv module stops at 128 KiB by default


@dataclass
class Fields:
    """Which fields of a row hold what (``DataConfig``'s ``*_field`` and ``*_lang`` options)."""

    source: str = "source"
    target: str = "target"
    text: str = "text"
    label: str = "label"
    source_lang: str = ""
    target_lang: str = ""
    prompt: str = "prompt"
    completion: str = "completion"
    messages: str = "messages"
    chosen: str = "chosen"
    rejected: str = "rejected"

    @classmethod
    def from_config(cls, data: Any) -> Fields:
        return cls(data.source_field, data.target_field, data.text_field, data.label_field, data.source_lang,
                   data.target_lang, data.prompt_field, data.completion_field, data.messages_field,
                   data.chosen_field, data.rejected_field)


@dataclass
class RawExamples:
    """Examples as text: ``inputs`` (sources, texts, prompts or whole conversations) and ``outputs`` (targets,
    labels, completions, a conversation's last assistant turn, or the chosen completions of preference pairs),
    with where they came from (``origin[i]`` is ``"file:line"``, for error messages); for preference pairs
    (dpo) the ``rejected`` completions too (texts, or in the conversational form lists of messages)."""

    inputs: list[Text]
    outputs: list[Text]
    origin: list[str]
    rejected: list[Text] | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, index: np.ndarray | list[int]) -> RawExamples:
        return RawExamples([self.inputs[i] for i in index], [self.outputs[i] for i in index],
                           [self.origin[i] for i in index],
                           None if self.rejected is None else [self.rejected[i] for i in index])


# --------------------------------------------------------------------------- reading


def read_rows(path: Path, text: str | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a .jsonl, .tsv, .csv or .parquet file; rows are dicts of field -> value.

    ``text`` is the file's text when the caller has decoded it already (the corpus reader, which counts and
    refuses invalid UTF-8); otherwise invalid bytes are replaced. A parquet file is read with pyarrow.

    Raises:
        DataError: another suffix, invalid JSON, a row of the wrong width, an unreadable parquet file or no
            pyarrow to read it, naming the file (and line).
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from enumerate(_parquet_rows(path), 1)
        return
    if suffix not in (".jsonl", ".tsv", ".csv"):
        raise DataError(f"{path}: rows are read from {', '.join(SUFFIXES)} files, not {suffix or 'this'}")
    if text is None:
        text = path.read_bytes().decode("utf-8", errors="replace")
    if suffix == ".jsonl":
        for n, line in enumerate(io.StringIO(text), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: a line must be a JSON object, got {type(row).__name__}")
            yield n, row
        return
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",", strict=True)
    start = 1  # the line the row being read starts on (a quoted cell may hold line breaks)
    try:
        header = next(reader, None)
        if header is None:
            return
        start = reader.line_num + 1
        for values in reader:
            n, start = start, reader.line_num + 1
            if not values:
                continue
            if len(values) != len(header):
                raise DataError(f"{path}:{n}: {len(values)} columns, but the header (line 1) names "
                                f"{len(header)}: {header}")
            yield n, dict(zip(header, values, strict=True))
    except csv.Error as e:
        raise DataError(f"{path}:{start}: not valid {suffix[1:].upper()} ({e})") from None


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is not a readable parquet file ({e})") from None


def _field(row: dict[str, Any], name: str, where: str, option: str) -> str:
    if name not in row:
        raise DataError(f"{where}: no field {name!r} (the row has {sorted(row)}); name the right one with "
                        f"--{option}")
    value = row[name]
    if isinstance(value, (dict, list)) or value is None:
        raise DataError(f"{where}: field {name!r} must be a string, got {json.dumps(value)[:60]}")
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: field {name!r} is empty")
    return text


def _conversation(row: dict[str, Any], name: str, where: str, assistant: bool = True) -> list[Message]:
    """The messages of field ``name``: a list of ``{"role", "content"}`` with a known role and, with
    ``assistant``, at least one assistant turn (no assistant turn may be empty)."""
    messages = row[name]
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field {name!r} must be a non-empty list of {{\"role\", \"content\"}} messages")
    for k, m in enumerate(messages, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {k} of {name!r} must be an object with string \"role\" and "
                            f"\"content\", got {json.dumps(m)[:60]}")
        if m["role"] not in MESSAGE_ROLES:
            raise DataError(f"{where}: message {k} has the unknown role {m['role']!r}; roles: "
                            f"{', '.join(MESSAGE_ROLES)}")
        if m["role"] == "assistant" and not m["content"].strip():
            raise DataError(f"{where}: message {k}, an assistant turn, is empty")
    if assistant and not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the conversation of {name!r} has no assistant turn, so there is nothing to learn")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _sft_example(row: dict[str, Any], fields: Fields, where: str) -> tuple[Text, str]:
    if fields.messages in row:
        messages = _conversation(row, fields.messages, where)
        return messages, next(m["content"] for m in reversed(messages) if m["role"] == "assistant")
    if fields.prompt not in row:
        raise DataError(f"{where}: an sft row gives {fields.prompt!r} and {fields.completion!r}, or "
                        f"{fields.messages!r} (the row has {sorted(row)}); name them with --data.prompt_field, "
                        "--data.completion_field or --data.messages_field")
    return (_field(row, fields.prompt, where, "data.prompt_field"),
            _field(row, fields.completion, where, "data.completion_field"))


def _dpo_example(row: dict[str, Any], fields: Fields, where: str) -> tuple[Text, Text, Text]:
    """A preference pair: ``prompt``, ``chosen`` and ``rejected`` texts, or TRL's conversational form (the prompt
    a list of messages, chosen and rejected lists holding the assistant's turn)."""
    names = (fields.prompt, fields.chosen, fields.rejected)
    if any(name not in row for name in names):
        raise DataError(f"{where}: a preference row gives {', '.join(map(repr, names))} (the row has "
                        f"{sorted(row)}); name them with --data.prompt_field, --data.chosen_field and "
                        "--data.rejected_field")
    if isinstance(row[fields.prompt], list):
        return (_conversation(row, fields.prompt, where, assistant=False), _conversation(row, fields.chosen, where),
                _conversation(row, fields.rejected, where))
    return (_field(row, fields.prompt, where, "data.prompt_field"), _field(row, fields.chosen, where,
            "data.chosen_field"), _field(row, fields.rejected, where, "data.rejected_field"))


def read_examples(path: str | Path, kind: Kind, fields: Fields | None = None) -> RawExamples:
    """Read the examples of one file.

    Seq2seq rows give ``fields.source`` and ``fields.target``, or, with ``source_lang``/``target_lang`` set,
    Hugging Face's ``{"translation": {"de": ..., "en": ...}}``; classification rows give ``fields.text`` and
    ``fields.label`` (a string or a number); instruction-tuning (sft) rows give ``fields.prompt`` and
    ``fields.completion``, or ``fields.messages``, a conversation; preference (dpo) rows give ``fields.prompt``,
    ``fields.chosen`` and ``fields.rejected``, as texts or (TRL's conversational form) lists of messages. TSV and
    CSV files have a header row naming the fields.

    Raises:
        DataError: a missing or unreadable file, a row without a needed field, or an empty field, naming the
            file and line.
    """
    path, fields = Path(path), fields or Fields()
    if not path.is_file():
        raise DataError(f"example file {path} does not exist")
    inputs, outputs, origin, rejected = [], [], [], []
    for n, row in read_rows(path):
        where = f"{path}:{n}"
        if kind == "dpo":
            x, y, z = _dpo_example(row, fields, where)
            inputs.append(x)
            outputs.append(y)
            rejected.append(z)
        elif kind == "classify":
            inputs.append(_field(row, fields.text, where, "data.text_field"))
            outputs.append(_field(row, fields.label, where, "data.label_field"))
        elif kind == "sft":
            x, y = _sft_example(row, fields, where)
            inputs.append(x)
            outputs.append(y)
        elif fields.source_lang:
            pair = row.get("translation")
            if not isinstance(pair, dict):
                raise DataError(f"{where}: data.source_lang is set, so each row needs a \"translation\" object "
                                f"({{\"{fields.source_lang}\": ..., \"{fields.target_lang}\": ...}})")
            inputs.append(_field(pair, fields.source_lang, where, "data.source_lang"))
            outputs.append(_field(pair, fields.target_lang, where, "data.target_lang"))
        else:
            inputs.append(_field(row, fields.source, where, "data.source_field"))
            outputs.append(_field(row, fields.target, where, "data.target_field"))
        origin.append(where)
    if not inputs:
        raise DataError(f"{path} holds no examples")
    return RawExamples(inputs, outputs, origin, rejected if kind == "dpo" else None)


def split_file(path: str | Path, split: Split) -> Path | None:
    """The file of ``split`` in an examples directory (``train.jsonl``, ``valid.tsv``, ``dev.csv``...), or
    ``path`` itself when it is a file and ``split`` is train; None when there is none."""
    path = Path(path)
    if path.is_file():
        return path if split == "train" else None
    if not path.is_dir():
        raise DataError(f"examples {path} do not exist: give a .jsonl/.tsv/.csv/.parquet file or a directory "
                        "holding train.* (e.g. from `lmlab data get`)")
    for stem in SPLIT_NAMES[split]:
        for suffix in SUFFIXES:
            if (f := path / f"{stem}{suffix}").is_file():
                return f
    return None


def source_hash(text: Text) -> int:
    """A stable 64-bit hash of a source text (of a conversation, its prompt: the turns before the last assistant
    turn): held-out splits are chosen by it, so they never depend on order."""
    if not isinstance(text, str):
        text = json.dumps(prompt_messages(text), sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def examples_digest(splits: dict[str, RawExamples]) -> str:
    """A SHA-256 of the examples of every split (their text, not where they came from): whether shards written
    earlier were built from these very examples."""
    h = hashlib.sha256()
    for split, ex in sorted(splits.items()):
        h.update(json.dumps([split, ex.inputs, ex.outputs, ex.rejected], ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def valid_count(n: int, size: float) -> int:
    """How many of ``n >= 2`` items a validation split of ``size`` takes: below 1 a share of them, else a count;
    at least one, and at least one item is left for training."""
    k = round(n * size) if size < 1 else int(size)
    return min(max(k, 1), n - 1)


def hold_out(examples: RawExamples, size: float) -> tuple[RawExamples, RawExamples]:
    """Split off a validation set: ``size`` below 1 is a share, else a count. Every example whose source has
    one of the smallest hashes goes there, so a source seen twice is never on both sides."""
    n = len(examples)
    if n < 2:
        raise DataError(f"{examples.origin[0].rsplit(':', 1)[0]} has {n} example: too few to hold out a "
                        "validation split; give data.valid")
    hashes = np.array([source_hash(t) for t in examples.inputs], dtype=np.uint64)
    threshold = np.sort(hashes)[valid_count(n, size) - 1]
    valid = hashes <= threshold
    return examples.take(np.flatnonzero(~valid)), examples.take(np.flatnonzero(valid))


def load_splits(data: Any, kind: Kind) -> dict[str, RawExamples]:
    """The train and valid examples a :class:`~lmlab.config.DataConfig` names: ``data.train`` (a file or a
    directory), ``data.valid`` or the directory's valid file, or else ``data.valid_size`` of train held out."""
    if not data.train:
        raise DataError("data.train is empty: set it to a file of examples or a directory from `lmlab data get`")
    fields = Fields.from_config(data)
    train_file = split_file(data.train, "train")
    if train_file is None:
        raise DataError(f"{data.train} holds no train.jsonl/.tsv/.csv/.parquet file")
    train = read_examples(train_file, kind, fields)
    valid_file = Path(data.valid) if data.valid else split_file(data.train, "valid")
    if valid_file is not None:
        return {"train": train, "valid": read_examples(valid_file, kind, fields)}
    train, valid = hold_out(train, data.valid_size)
    return {"train": train, "valid": valid}


# --------------------------------------------------------------------------- shards


def _write_stream(directory: Path, name: str, rows: list[list[int]], dtype: np.dtype) -> None:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for r in rows for t in r), dtype=dtype, count=int(offsets[-1]))
    flat.tofile(directory / f"{name}.bin")
    np.save(directory / f"{name}_offsets.npy", offsets)


RowBuilder = Callable[[Text, Text], tuple[list[int], list[int]]]  # sft, dpo: (input, output) -> (ids, scored)


def _sft_rows(examples: RawExamples, build: RowBuilder, outputs: list[Text] | None = None
              ) -> tuple[list[list[int]], list[list[int]]]:
    """The rows of the examples (with ``outputs`` for theirs: dpo's rejected completions) and their scored flags."""
    rows, scored = [], []
    for x, y, where in zip(examples.inputs, outputs or examples.outputs, examples.origin, strict=True):
        try:
            ids, mask = build(x, y)
        except TokenizerError as e:
            raise DataError(f"{where}: {e}") from None
        rows.append(ids)
        scored.append(mask)
    return rows, scored


def build_shards(out_dir: str | Path, tokenizer: Any, splits: dict[str, RawExamples], kind: Kind,
                 labels: list[str] | None = None, rows: RowBuilder | None = None) -> dict[str, Any]:
    """Tokenize ``splits`` once and write them to ``out_dir`` (see the module docstring); return the manifest.

    Args:
        labels: classification only: the label names, in index order; by default the sorted labels of train.
        rows: sft and dpo only: the objective's row of an example, its ids and a 0/1 per id for the ones scored.

    Raises:
        DataError: a label of another split that train does not have, or an sft or dpo example the chat template
            does not render (naming its file and line).
    """
    out_dir = Path(out_dir)
    dtype = token_dtype(tokenizer.vocab_size)
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "kind": kind, "dtype": dtype.name,
                                "tokenizer_fingerprint": tokenizer.sha256(), "splits": {}}
    if kind == "classify":
        labels = labels or sorted(set(splits["train"].outputs))
        manifest["labels"] = labels
    index = {label: i for i, label in enumerate(labels or [])}
    for split, examples in splits.items():
        d = out_dir / split
        d.mkdir(parents=True, exist_ok=True)
        if kind in ("sft", "dpo"):  # dpo: source.bin holds the chosen rows
            sources, scored = _sft_rows(examples, rows)
            _write_stream(d, "scored", scored, np.dtype(np.uint8))
        else:
            sources = tokenizer.encode_batch(examples.inputs)
        _write_stream(d, "source", sources, dtype)
        info = {"examples": len(examples), "source_tokens": sum(map(len, sources))}
        if kind in ("sft", "dpo"):
            info["scored_tokens"] = sum(map(sum, scored))
        if kind == "dpo":
            rejected, rejected_scored = _sft_rows(examples, rows, examples.rejected)
            _write_stream(d, "rejected", rejected, dtype)
            _write_stream(d, "rejected_scored", rejected_scored, np.dtype(np.uint8))
            info.update(rejected_tokens=sum(map(len, rejected)),
                        rejected_scored_tokens=sum(map(sum, rejected_scored)))
        elif kind == "classify":
            for label, where in zip(examples.outputs, examples.origin, strict=True):
                if label not in index:
                    known = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
                    raise DataError(f"{where}: label {label!r} is not one of the {len(index)} labels of the "
                                    f"training examples ({known})")
            np.save(d / "labels.npy", np.array([index[x] for x in examples.outputs], dtype=np.int64))
        elif kind == "seq2seq":
            targets = tokenizer.encode_batch(examples.outputs)
            _write_stream(d, "target", targets, dtype)
            info["target_tokens"] = sum(map(len, targets))
        manifest["splits"][split] = info
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of an example shard directory, or None when there is none (or it is of another format)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return manifest if manifest.get("format_version") == FORMAT_VERSION else None


class ExampleDataset:
    """One split of an example shard directory, memory-mapped.

    Attributes:
        source_lengths, target_lengths: (N,) int64 token counts (``target_lengths`` is None for classify).
        labels: (N,) int64 label indices (classify) or None.
        rejected_lengths: (N,) int64 token counts of the rejected rows (dpo; ``source_lengths`` are the chosen's).
        reference: (N, 2) float64 reference log-probs of chosen and rejected (dpo, once the reference pass has
            begun; NaN where it has not reached yet), or None.
    """

    def __init__(self, directory: str | Path, split: str) -> None:
        directory = Path(directory)
        manifest = read_manifest(directory)
        if manifest is None or split not in manifest["splits"]:
            raise DataError(f"{directory} holds no example shards of the {split} split")
        self.kind: Kind = manifest["kind"]
        self.split = split
        dtype = np.dtype(manifest["dtype"])
        d = directory / split

        def stream(name: str, dtype: np.dtype = dtype) -> tuple[np.ndarray, np.ndarray]:
            offsets = np.load(d / f"{name}_offsets.npy")
            tokens = np.memmap(d / f"{name}.bin", dtype=dtype, mode="r") if offsets[-1] else np.zeros(0, dtype)
            return tokens, offsets

        self._source, self._source_offsets = stream("source")
        self.source_lengths = np.diff(self._source_offsets)
        self.target_lengths = self.labels = self.rejected_lengths = self.reference = None
        if self.kind == "seq2seq":
            self._target, self._target_offsets = stream("target")
            self.target_lengths = np.diff(self._target_offsets)
        elif self.kind in ("sft", "dpo"):
            self._scored, _ = stream("scored", np.dtype(np.uint8))
        else:
            self.labels = np.load(d / "labels.npy")
        if self.kind == "dpo":
            self._rejected, self._rejected_offsets = stream("rejected")
            self._rejected_scored, _ = stream("rejected_scored", np.dtype(np.uint8))
            self.rejected_lengths = np.diff(self._rejected_offsets)
            if (d / REFERENCE).is_file():
                self.reference = np.load(d / REFERENCE, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.source_lengths)

    def batch(self, index: np.ndarray) -> Examples:
        """The examples ``index`` ((B,) ints) as token arrays."""
        o = self._source_offsets
        sources = [np.asarray(self._source[o[i]:o[i + 1]], dtype=np.int64) for i in index]
        targets = labels = scored = None
        if self.kind in ("sft", "dpo"):
            scored = [np.asarray(self._scored[o[i]:o[i + 1]], dtype=bool) for i in index]
        elif self.kind == "seq2seq":
            o = self._target_offsets
            targets = [np.asarray(self._target[o[i]:o[i + 1]], dtype=np.int64) for i in index]
        else:
            labels = torch.from_numpy(self.labels[index])
        examples = Examples(sources, targets, labels, scored)
        if self.kind == "dpo":
            o = self._rejected_offsets
            examples.rejected = [np.asarray(self._rejected[o[i]:o[i + 1]], dtype=np.int64) for i in index]
            examples.rejected_scored = [np.asarray(self._rejected_scored[o[i]:o[i + 1]], dtype=bool) for i in index]
            if self.reference is not None:
                examples.reference = torch.from_numpy(np.array(self.reference[index], dtype=np.float64))
        return examples


@dataclass
class Examples:
    """A batch of tokenized examples, the input of a task objective's ``make_batch``."""

    sources: list[np.ndarray]  # B arrays of token ids (sources, texts to classify, sft's whole rows, dpo's chosen)
    targets: list[np.ndarray] | None = None  # B arrays (seq2seq)
    labels: Tensor | None = None  # (B,) long (classify)
    scored: list[np.ndarray] | None = None  # B bool arrays, True where a source token is scored (sft, dpo)
    packs: np.ndarray | None = None  # (B,) the packed row each example goes to (sft with packing); None: its own
    rejected: list[np.ndarray] | None = None  # B arrays: the rejected rows (dpo)
    rejected_scored: list[np.ndarray] | None = None  # B bool arrays, True where a rejected token is scored (dpo)
    reference: Tensor | None = None  # (B, 2) float64 reference log-probs of chosen and rejected (dpo)

    def __len__(self) -> int:
        return len(self.sources)


# --------------------------------------------------------------------------- batching


def pack(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Example indices grouped into rows of at most ``capacity`` tokens, best fit decreasing: the longest example
    first, each into the fullest row that still has room (deterministic; an example never split)."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in np.argsort(-np.asarray(lengths), kind="stable").tolist():
        n = int(min(lengths[i], capacity))
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            rows.append([i])
            bisect.insort(free, (capacity - n, len(rows) - 1))
            continue
        room, r = free.pop(k)
        rows[r].append(i)
        bisect.insort(free, (room - n, r))
    return [np.array(sorted(r), dtype=np.int64) for r in rows]


class PackedDataset:
    """The examples of a dataset packed into rows (:func:`pack`): one item per row, for :class:`ExampleSampler`,
    whose batches then count rows; a row's examples keep apart in the model (the objective's segments)."""

    def __init__(self, dataset: ExampleDataset, lengths: np.ndarray, capacity: int) -> None:
        self.dataset, self.kind, self.split = dataset, dataset.kind, dataset.split
        self.packs = pack(lengths, capacity)
        self.lengths = np.array([int(np.minimum(lengths[p], capacity).sum()) for p in self.packs], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.packs)

    def batch(self, index: np.ndarray) -> Examples:
        members = [self.packs[i] for i in index]
        examples = self.dataset.batch(np.concatenate(members))
        examples.packs = np.repeat(np.arange(len(members)), [len(m) for m in members])
        return examples


class ExampleSampler:
    """Epochs of batches of similar length, in a random order, resumable exactly.

    Each epoch is a permutation of the examples drawn from a generator seeded by ``(seed, epoch)``; it is cut
    into pools of ``pool`` batches, each pool sorted by length and cut into batches (so a batch pads little),
    and the batches of the epoch are shuffled. The last incomplete batch of an epoch is left out (another
    remainder each epoch). The whole state is ``(epoch, index)``: :meth:`checkpoint_state` and :meth:`restore`.

    Batches are global (``batch_size`` is the micro-batch times the number of ranks): every rank draws the same
    batch and keeps its rows, so 2 processes see what 1 process with twice the batch sees.
    """

    def __init__(self, dataset: ExampleDataset, lengths: np.ndarray, batch_size: int, seed: int,
                 pool: int = 50) -> None:
        if len(dataset) < batch_size:
            raise DataError(f"the {dataset.split} split has {len(dataset)} examples, fewer than a batch "
                            f"({batch_size}); use a smaller train.batch_size")
        self.dataset, self.lengths = dataset, np.asarray(lengths)
        self.batch_size, self.seed, self.pool = batch_size, seed, pool
        self.epoch = self.index = 0
        self._plan: tuple[int, np.ndarray] | None = None

    def epoch_batches(self, epoch: int) -> np.ndarray:
        """(num_batches, batch_size) example indices of ``epoch``, in the order they are drawn."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=g).numpy()
        n = len(order) // self.batch_size * self.batch_size
        order = order[:n]
        pool = self.pool * self.batch_size
        for start in range(0, n, pool):  # longest first within a pool; ties keep the random order
            chunk = order[start:start + pool]
            order[start:start + pool] = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
        batches = order.reshape(-1, self.batch_size)
        batches = batches[torch.randperm(len(batches), generator=g).numpy()]
        self._plan = (epoch, batches)
        return batches

    def sample(self) -> tuple[Examples]:
        """The next global batch, as the arguments of the objective's ``make_batch``."""
        batches = self.epoch_batches(self.epoch)
        if self.index >= len(batches):
            self.epoch, self.index = self.epoch + 1, 0
            batches = self.epoch_batches(self.epoch)
        index = batches[self.index]
        self.index += 1
        return (self.dataset.batch(index),)

    def padding_share(self, sides: list[np.ndarray]) -> float:
        """The share of padding among the tokens of this epoch's batches, for per-example lengths of each
        side (e.g. sources and targets)."""
        batches = self.epoch_batches(self.epoch)
        real = sum(int(s[batches].sum()) for s in sides)
        padded = sum(int(s[batches].max(1).sum()) * self.batch_size for s in sides)
        return 1 - real / max(padded, 1)

    def checkpoint_state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def eval_batches(dataset: ExampleDataset, lengths: np.ndarray, batch_size: int,
                 max_batches: int = 0) -> Iterator[tuple[Examples]]:
    """Fixed batches over a split for validation, sorted by length (the same at every call): all of them, or
    the first ``max_batches`` of the split in its own order (shortest batches are not preferred)."""
    n = len(dataset)
    chosen = np.arange(n) if not max_batches else np.arange(min(n, max_batches * batch_size))
    chosen = chosen[np.argsort(-np.asarray(lengths)[chosen], kind="stable")]
    for start in range(0, len(chosen), batch_size):
        yield (dataset.batch(chosen[start:start + batch_size]),)


def epochs(steps: int, batch_size: int, n_examples: int) -> float:
    """How many passes over ``n_examples`` ``steps`` optimizer steps of ``batch_size`` examples make."""
    return steps * batch_size / max(n_examples, 1)


__all__ = ["REFERENCE", "ExampleDataset", "ExampleSampler", "Examples", "Fields", "PackedDataset", "RawExamples",
           "build_shards", "epochs", "eval_batches", "examples_digest", "hold_out", "load_splits", "pack",
           "read_examples", "read_manifest", "read_rows", "source_hash", "split_file", "valid_count"]

