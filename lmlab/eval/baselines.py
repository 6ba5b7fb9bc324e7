"""Baselines printed beside every task result: what a score means is how far it is above doing nothing clever.

- translation: :func:`copy_baseline` (output the source unchanged; shared names, numbers and cognates score);
- summarization: :func:`lead_baseline` (the first sentence(s) of the article, a strong baseline for news);
- classification: :func:`majority_baseline` (always the most frequent training label).

(The language-modelling baseline, :func:`lmlab.eval.unigram_loss`, lives in ``lmlab/eval/__init__.py``.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

from lmlab.eval.metrics import split_sentences


def copy_baseline(sources: Sequence[str]) -> list[str]:
    """Translation baseline: each prediction is its source text, unchanged."""
    return list(sources)


def lead_baseline(sources: Sequence[str], n_sentences: int = 1) -> list[str]:
    """Summarization baseline (Lead-n): the first ``n_sentences`` sentences of each source, joined by newlines
    (rouge-score's sentence separator, for rougeLsum). A source with fewer sentences is returned whole; an empty
    one gives "".

    Sentences come from :func:`lmlab.eval.metrics.split_sentences`: boundaries at newlines, at ``. ! ?`` followed
    by whitespace and an uppercase letter or digit, and after ``。！？``; "Dr. Smith" and initials ("J. Doe") do not
    split, other abbreviations before a capitalised word ("U.S. Army") do (see its docstring for the limits).
    """
    if n_sentences < 1:
        raise ValueError(f"n_sentences must be at least 1, got {n_sentences}")
    return ["\n".join(split_sentences(source)[:n_sentences]) for source in sources]


def majority_label(train_labels: Sequence[Hashable]) -> Hashable:
    """The most frequent label in ``train_labels``; among equally frequent labels, the smallest in sort order
    (so the choice never depends on the order of the data)."""
    if len(train_labels) == 0:
        raise ValueError("majority baseline needs at least one training label")
    counts = Counter(train_labels)
    top = max(counts.values())
    return min(label for label, count in counts.items() if count == top)


def majority_baseline(train_labels: Sequence[Hashable], n: int) -> list[Hashable]:
    """Classification baseline: ``n`` predictions, all :func:`majority_label` of ``train_labels``."""
    return [majority_label(train_labels)] * n
