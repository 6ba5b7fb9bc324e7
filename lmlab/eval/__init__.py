"""Evaluation: task metrics (:mod:`lmlab.eval.metrics`), baselines (:mod:`lmlab.eval.baselines` and
:func:`unigram_loss`) that put a model's scores and loss in context."""

from __future__ import annotations

import math

import numpy as np

from lmlab.eval.baselines import copy_baseline, lead_baseline, majority_baseline, majority_label
from lmlab.eval.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    ROUGE_TYPES,
    Scores,
    UnicodeTokenizer,
    accuracy,
    bleu,
    bleu_tokenizer,
    chrf,
    compute,
    higher_is_better,
    macro_f1,
    per_class_f1,
    rouge,
    rouge_tokenizer,
    split_sentences,
)

__all__ = [
    "HIGHER_IS_BETTER", "METRICS", "ROUGE_TYPES", "Scores", "UnicodeTokenizer", "accuracy", "bleu", "bleu_tokenizer",
    "chrf", "compute", "copy_baseline", "higher_is_better", "lead_baseline", "macro_f1", "majority_baseline",
    "majority_label", "per_class_f1", "rouge", "rouge_tokenizer", "split_sentences", "unigram_loss",
]


def unigram_loss(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int,
                 exclude_ids: list[int] | None = None) -> float:
    """Cross-entropy (nats/token) of ``eval_tokens`` under a unigram model fit on ``train_tokens``.

    The unigram model is what a language model learns first: token frequencies with no context
    (add-one smoothed). A trained model's validation loss should fall well below it. Tokens in
    ``exclude_ids`` (e.g. special tokens an objective never scores) are dropped from both sides.
    """
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    keep = np.ones(vocab_size, dtype=bool)
    if exclude_ids:
        keep[list(exclude_ids)] = False
    counts = np.where(keep, counts + 1.0, 0.0)
    logp = np.log(counts / counts.sum(), where=counts > 0, out=np.full(vocab_size, -math.inf))
    ev = np.asarray(eval_tokens, dtype=np.int64)
    ev = ev[keep[ev]]
    return float(-logp[ev].mean())
