"""The demo's data from the Python standard library's docstrings: a pretraining corpus and two real tasks.

Files are split by module (a hash of the module's path, as ``lmlab data get`` splits by source): the docstrings of
the validation and test modules are kept out of the pretraining corpus as well, so no test docstring is ever
trained on, by the pretrained models or by fine-tuning.

- ``summarize``: a docstring's body -> its first (summary) line, for docstrings written as PEP 257 asks (a summary
  line, a blank line, then the rest);
- ``classify``: a docstring -> the top-level package its module belongs to (``email``, ``asyncio``, ``xml``, ...),
  for the packages of at least :data:`MIN_MODULES` modules and :data:`MIN_DOCSTRINGS` docstrings.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from lmlab.data.corpus import stdlib_modules
from lmlab.data.sources.dataset import Raw, build, split_of

VALID, TEST = 0.06, 0.06  # shares of the modules (by hash) held out for validation and test
MIN_MODULES, MIN_DOCSTRINGS = 5, 90  # a package is a class with at least this many of each
MIN_BODY_CHARS = 40  # a summarization source shorter than this says too little
HELD_OUT_PER_MODULE = 15  # classification: validation and test docstrings kept per module, so that no one big
# module (asyncio's base_events has 60) decides the score


def split_module(module: str) -> str:
    """The split (``train``, ``valid`` or ``test``) of every docstring of ``module`` (a path in the library)."""
    return split_of(module, VALID, TEST)


def summary_pair(doc: str) -> dict[str, str] | None:
    """``{"source": body, "target": summary line}`` of a docstring with a one-line summary, a blank line and a
    body of at least :data:`MIN_BODY_CHARS` characters; None for any other."""
    summary, sep, body = doc.partition("\n\n")
    body = body.strip()
    if not sep or "\n" in summary.strip() or len(body) < MIN_BODY_CHARS:
        return None
    return {"source": body, "target": summary.strip()}


def packages(modules: list[tuple[str, list[str]]]) -> list[str]:
    """The top-level packages that are classes: at least MIN_MODULES modules and MIN_DOCSTRINGS docstrings."""
    files, docs = Counter(), Counter()
    for module, docstrings in modules:
        if "/" in module:
            files[module.split("/")[0]] += 1
            docs[module.split("/")[0]] += len(docstrings)
    return sorted(p for p in files if files[p] >= MIN_MODULES and docs[p] >= MIN_DOCSTRINGS)


def write_demo_data(out: str | Path, modules: list[tuple[str, list[str]]] | None = None) -> dict[str, Path]:
    """Write the pretraining corpus (``out/corpus/stdlib_docstrings.jsonl``, training modules only) and the two
    tasks (``out/summarize`` and ``out/classify``: ``train``/``valid``/``test.jsonl``); return the three paths.

    ``modules`` defaults to :func:`~lmlab.data.corpus.stdlib_modules`."""
    out = Path(out)
    modules = stdlib_modules() if modules is None else modules
    corpus = out / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    with open(corpus / "stdlib_docstrings.jsonl", "w", encoding="utf-8") as f:
        for module, docs in modules:
            if split_module(module) == "train":
                f.writelines(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    classes = set(packages(modules))
    summaries = Raw([{**pair, "group": module} for module, docs in modules for d in docs
                     if (pair := summary_pair(d)) is not None])
    labelled = Raw([{"text": d, "label": module.split("/")[0], "group": module} for module, docs in modules
                    if module.split("/")[0] in classes and "/" in module
                    for d in (docs if split_module(module) == "train" else docs[:HELD_OUT_PER_MODULE])])
    paths = {"corpus": corpus}
    for name, raw, kind in (("summarize", summaries, "seq2seq"), ("classify", labelled, "classify")):
        built = build(raw, kind, valid=VALID, test=TEST)
        if kind == "classify":  # a class the training split lacks cannot be learned (nor scored)
            seen = {ex["label"] for ex in built.splits["train"]}
            built.splits = {s: [ex for ex in exs if ex["label"] in seen] for s, exs in built.splits.items()}
        paths[name] = out / name
        paths[name].mkdir(parents=True, exist_ok=True)
        for split, examples in built.splits.items():
            with open(paths[name] / f"{split}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples)
    return paths
