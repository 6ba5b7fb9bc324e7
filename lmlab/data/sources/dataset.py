"""From raw examples to a dataset directory: normalise, drop, deduplicate, split by hash, write.

Shared by every source. A source hands over :class:`Raw` (its examples and what it already dropped); this module
does the rest the same way for all of them, so every ``lmlab data get`` output has the same layout::

    train.jsonl  valid.jsonl  test.jsonl  manifest.json  README.md

Splits are fixed by a hash, not by a random draw: an example's split is decided by the SHA-1 of its (normalised)
split key, which is its first field (source, text or prompt) unless the source names a coarser group. Equal
sources therefore always land in the same split, so no test source is ever trained on, and the same input always
gives the same files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmlab.errors import DataError

Kind = Literal["seq2seq", "classify", "sft", "dpo"]
SPLITS = ("train", "valid", "test")
# the fields of a row of each kind (the first is the split key unless a source names a group), as the
# objective of that name reads them
FIELDS: dict[str, tuple[str, ...]] = {"seq2seq": ("source", "target"), "classify": ("text", "label"),
                                      "sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected")}
MUST_DIFFER = {"seq2seq": ("source", "target"), "dpo": ("chosen", "rejected")}  # equal: dropped
BUCKETS = 10_000


def normalize(text: str) -> str:
    """NFC, whitespace runs collapsed to one space within each line, blank lines and edge spaces removed.
    Line breaks separate paragraphs (a long package description keeps one per line)."""
    lines = (" ".join(line.split()) for line in unicodedata.normalize("NFC", text).split("\n"))
    return "\n".join(line for line in lines if line)


def split_of(key: str, valid: float, test: float) -> str:
    """The split of an example whose (normalised) split key is ``key``: bucket = first 8 hex digits of
    SHA-1(key) mod 10000; the first ``test`` fraction of buckets is test, the next ``valid`` fraction valid."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % BUCKETS
    if bucket < round(test * BUCKETS):
        return "test"
    if bucket < round((test + valid) * BUCKETS):
        return "valid"
    return "train"


@dataclass
class Raw:
    """What a source extracted. ``examples`` are dicts with the fields of their kind (:data:`FIELDS`), plus an
    optional "group": the split key when it should be coarser than the first field (e.g. the first paragraph of
    a package description, shared by a family of packages). ``dropped`` counts what the
    source already left out, by reason."""

    examples: list[dict[str, str]]
    dropped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


@dataclass
class Built:
    splits: dict[str, list[dict[str, str]]]
    dropped: Counter
    rare_labels: dict[str, int] = field(default_factory=dict)  # classify: label -> examples, left out


def build(raw: Raw, kind: Kind, *, valid: float, test: float, min_count: int = 0,
          identical_reason: str = "identical", drop_ambiguous: bool = False) -> Built:
    """Normalise and clean ``raw.examples`` and assign splits. Drops, counted by reason: "empty" (a field empty
    or whitespace only), ``identical_reason`` (seq2seq: both sides the same, e.g. untranslated; dpo: chosen equal
    to rejected), "duplicate" (the same row again), "ambiguous_source" (seq2seq with ``drop_ambiguous``: a
    source with several targets: all its pairs), "conflicting_label" (classify: one text with several labels:
    all its examples), "rare_label" (classify: a label with fewer than ``min_count`` examples)."""
    names = FIELDS[kind]
    a = names[0]
    differ = MUST_DIFFER.get(kind)
    dropped = Counter(raw.dropped)
    seen: set[tuple[str, ...]] = set()
    kept: list[tuple[dict[str, str], str]] = []  # (example, split key)
    for ex in raw.examples:
        row = {f: normalize(ex[f]) for f in names}
        values = tuple(row.values())
        if not all(values):
            dropped["empty"] += 1
        elif differ and row[differ[0]] == row[differ[1]]:
            dropped[identical_reason] += 1
        elif values in seen:
            dropped["duplicate"] += 1
        else:
            seen.add(values)
            kept.append((row, normalize(ex.get("group") or "") or row[a]))
    if kind == "classify" or drop_ambiguous:
        per_x = Counter(ex[a] for ex, _ in kept)  # after dedup: one count per distinct (x, y)
        before = len(kept)
        kept = [(ex, k) for ex, k in kept if per_x[ex[a]] == 1]
        if before - len(kept):
            dropped["conflicting_label" if kind == "classify" else "ambiguous_source"] += before - len(kept)
    if kind == "classify":
        counts = Counter(ex["label"] for ex, _ in kept)
        rare = {lab: n for lab, n in counts.most_common() if n < min_count}
        before = len(kept)
        kept = [(ex, k) for ex, k in kept if counts[ex["label"]] >= min_count]
        if before - len(kept):
            dropped["rare_label"] += before - len(kept)
    else:
        rare = {}
    splits: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for ex, key in kept:
        splits[split_of(key, valid, test)].append(ex)
    return Built(splits, dropped, rare)


def manifest_for(built: Built, kind: Kind, **info) -> dict:
    """The manifest: ``info`` (name, description, languages, origin, licence, ...) plus counts."""
    counts = {s: len(built.splits[s]) for s in SPLITS}
    m = {"name": info.pop("name"), "description": info.pop("description"), "kind": kind}
    if "languages" in info:
        m["languages"] = info.pop("languages")
    m |= {"fields": list(FIELDS[kind]),
          "counts": {**counts, "total": sum(counts.values())}, "dropped": dict(sorted(built.dropped.items()))}
    if kind == "classify":
        per = {s: Counter(ex["label"] for ex in built.splits[s]) for s in SPLITS}
        total = Counter(ex["label"] for s in SPLITS for ex in built.splits[s])
        m["labels"] = {lab: {"total": n, **{s: per[s][lab] for s in SPLITS}} for lab, n in total.most_common()}
        m["majority_label"] = total.most_common(1)[0][0] if total else None
        m["dropped_labels"] = built.rare_labels
    from lmlab import __version__

    return m | info | {"lmlab_version": __version__}


def check_out(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing non-empty output directory unless ``overwrite`` (checked before any download)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out} exists and is not empty: choose another --out, or pass --overwrite")
    return out


def write(out: str | Path, built: Built, manifest: dict, readme: str, overwrite: bool = False) -> Path:
    """Write the splits, ``manifest.json`` and ``README.md`` to a temporary directory beside ``out``, then
    rename it into place: an interrupted run never leaves a half dataset."""
    out = check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for s in SPLITS:
            with open(tmp / f"{s}.jsonl", "w", encoding="utf-8") as f:
                for ex in built.splits[s]:
                    f.write(json.dumps(ex, ensure_ascii=False) + "\n")
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def command(name: str, options: dict) -> str:
    """The ``lmlab data get`` command line that builds ``name`` with ``options``."""
    return " ".join(["lmlab data get", name, *(f"--{k.replace('_', '-')} {v}" for k, v in options.items())])


def readme_for(manifest: dict) -> str:
    """A README.md that says what the dataset is, where it came from, its counts and its licence."""
    m = manifest
    lines = [f"# {m['name']}", "", m["description"], ""]
    if m.get("languages"):
        lines += [f"Languages: source `{m['languages']['source']}` -> target `{m['languages']['target']}`.", ""]
    lines += ["## Files", "",
              f"`train.jsonl`, `valid.jsonl`, `test.jsonl`: one JSON object per line with the fields "
              f"{', '.join(f'`{f}`' for f in m['fields'])} ({m['kind']}). `manifest.json` holds everything below "
              "in machine-readable form.", "",
              "## Counts", "", "| split | examples |", "|---|---|"]
    lines += [f"| {s} | {m['counts'][s]} |" for s in (*SPLITS, "total")]
    lines += ["", "Dropped: " + (", ".join(f"{r} {n}" for r, n in m["dropped"].items()) or "nothing") + "."]
    if m.get("labels"):
        lines += ["", f"{len(m['labels'])} labels (majority: `{m['majority_label']}`):", "",
                  "| label | total | train | valid | test |", "|---|---|---|---|---|"]
        lines += [f"| {lab} | {c['total']} | {c['train']} | {c['valid']} | {c['test']} |"
                  for lab, c in m["labels"].items()]
        if m.get("dropped_labels"):
            lines += ["", f"{len(m['dropped_labels'])} rarer labels left out: "
                      + ", ".join(f"{lab} ({n})" for lab, n in m["dropped_labels"].items()) + "."]
    lines += ["", "## How it was made", "", m["method"], "", m["split_rule"], ""]
    if m.get("notes"):
        lines += [*(f"- {n}" for n in m["notes"]), ""]
    lines += ["## Origin", "", f"Debian {m['origin']['suite']} from {m['origin']['mirror']}:", ""]
    lines += [f"- {f['kind']} `{f['name']}` {f['version']} (sha256 `{f['sha256'][:16]}…`)"
              for f in m["origin"]["fetched"]]
    lines += ["", "## Licence", "", m["licence"]["name"] + ".", "", m["licence"]["text"], "",
              f"Built by `{command(m['name'], m.get('options', {}))} --out DIR` (lmlab {m['lmlab_version']}).", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Source:
    """A named dataset builder. ``collect(archive, **options)`` fetches what it needs through the archive and
    returns the raw examples and the manifest's information about them (description, method, origin notes,
    licence, languages); ``options`` are the options it takes, with their defaults."""

    name: str
    kind: Kind
    summary: str
    collect: Callable[..., tuple[Raw, dict]]
    options: dict = field(default_factory=dict)
    valid: float = 0.02
    test: float = 0.02
    identical_reason: str = "identical"
    drop_ambiguous: bool = False  # seq2seq: drop every pair of a source that has several targets
