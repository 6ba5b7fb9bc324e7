"""Task metrics: BLEU and chrF (sacrebleu), ROUGE (rouge-score), accuracy and macro-F1.

Every score is on a 0-100 scale (BLEU, chrF and ROUGE as their libraries report them; accuracy and F1 as
percentages too), so a report can print them side by side. The scores come from the libraries themselves; this
module only chooses their settings (tokenizer, sentence splitting) and averages as Hugging Face ``evaluate`` does.

References are one string per prediction, or a list of reference strings per prediction (the lists may differ
in length). The entry point is :func:`compute`; :func:`higher_is_better` says which way a metric improves.

sacrebleu and rouge-score are imported inside the functions that use them: ``import lmlab.eval`` stays cheap
(rouge-score pulls in nltk, about 0.3 s) for code that only needs :func:`lmlab.eval.unigram_loss`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Hashable, Sequence

import numpy as np

from lmlab.errors import ConfigError

Scores = dict[str, float | str]
References = Sequence[str] | Sequence[Sequence[str]]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
METRICS = ("bleu", "chrf", *ROUGE_TYPES, "accuracy", "macro_f1")

HIGHER_IS_BETTER: dict[str, bool] = {
    **{name: True for name in METRICS},
    "loss": False, "val_loss": False, "train_loss": False, "ppl": False, "val_ppl": False,
}

# sacrebleu tokenizer for a target language written without spaces between words. sacrebleu's own choice for
# "ja" is "ja-mecab", which needs MeCab (not a dependency): character n-grams are the usual fallback.
_BLEU_TOKENIZE = {"zh": "zh", "ja": "char"}


def higher_is_better(name: str) -> bool:
    """True if a larger value of metric ``name`` is better (every task metric), False for losses and perplexity.

    Raises :class:`ConfigError` for a name it does not know, listing the ones it does.
    """
    if name not in HIGHER_IS_BETTER:
        raise ConfigError(f"unknown metric {name!r}; known metrics: {', '.join(HIGHER_IS_BETTER)}")
    return HIGHER_IS_BETTER[name]


# ---------------------------------------------------------------------------------------------- text helpers

def _is_kana(ch: str) -> bool:
    return 0x3040 <= ord(ch) <= 0x30FF


def _is_cjk(ch: str) -> bool:
    """Han ideographs, hiragana and katakana: scripts written without spaces between words."""
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F \
        or _is_kana(ch)


def _reference_texts(references: References) -> list[str]:
    return [t for r in references for t in ([r] if isinstance(r, str) else r)]


def _letter_shares(texts: Sequence[str]) -> tuple[float, float, float]:
    """Shares of ASCII letters, of Han/kana characters and of kana among all the letters in ``texts``
    ((1, 0, 0) if there are none)."""
    n_letters = n_ascii = n_cjk = n_kana = 0
    for text in texts:
        for ch in text:
            if ch.isalpha():
                n_letters += 1
                n_ascii += ch.isascii()
                n_cjk += _is_cjk(ch)
                n_kana += _is_kana(ch)
    if n_letters == 0:
        return 1.0, 0.0, 0.0
    return n_ascii / n_letters, n_cjk / n_letters, n_kana / n_letters


# A sentence may end at . ! ? (then any closing quotes/brackets) followed by whitespace; split_sentences then
# looks at what follows. A full-width 。！？ (then any closing quotes/brackets) always ends one.
_LATIN_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_CJK_END = re.compile(r"[。！？]+[”’」』）]*")
_OPENING = "\"'“‘(["
# Words whose final "." does not end a sentence (titles, Latin abbreviations); lowercase, without the final ".".
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "cf", "approx"})


def _split_latin(text: str) -> list[str]:
    pieces, start = [], 0
    for m in _LATIN_END.finditer(text):
        nxt = text[m.end():].lstrip(_OPENING)
        if not nxt or not (nxt[0].isupper() or nxt[0].isdigit()):
            continue
        if m.group()[0] == "." and m.group()[:2] != "..":
            before = text[:m.start()].split()
            word = before[-1].lstrip(_OPENING) if before else ""
            if word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
                continue
        pieces.append(text[start:m.end()])
        start = m.end()
    return [*pieces, text[start:]]


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (stripped, none empty).

    Boundaries: every newline; right after a full-width ``。``, ``！`` or ``？`` (and any closing quotes); and
    ``.``, ``!`` or ``?`` (with any closing quotes or brackets) followed by whitespace and then (after any opening
    quote or bracket) an uppercase letter or a digit, in any script with case (Latin, Cyrillic, Greek). A ``.``
    does not end a sentence after a title or abbreviation in a short English list (Mr, Mrs, Ms, Dr, Prof, St,
    Jr, Sr, vs, e.g, i.e, cf, approx) or after a single capital letter (an initial), so "Dr. Smith met J. Doe."
    is one sentence.

    Limits (a heuristic, not a trained splitter): other abbreviations followed by a capitalised word
    ("U.S. Army", "Inc. The") split there; "No. 5" splits; a sentence that starts in lowercase or with a symbol
    is not split from the one before; text in scripts without case or full-width stops (Thai, Devanagari) only
    splits on newlines and before digits.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        pieces = _CJK_END.split(line)
        ends = [*_CJK_END.findall(line), ""]
        for piece, end in zip(pieces, ends, strict=True):
            sentences += _split_latin(piece + end)
    return [s.strip() for s in sentences if s.strip()]


class UnicodeTokenizer:
    """A rouge-score tokenizer (an object with ``tokenize(text) -> list[str]``) that keeps every script.

    rouge-score's default tokenizer deletes every character outside ``[a-z0-9]``, so Chinese or Cyrillic text
    has no tokens and scores 0. This one lowercases, splits on whitespace, punctuation and symbols (Unicode
    categories Z*, P*, S*, C*), keeps letters, combining marks and digits of any script together as words, and
    makes each Han, hiragana or katakana character a token of its own (those scripts put no spaces between
    words; character n-grams are the usual ROUGE units for them). It does not stem: the Porter stemmer is English.
    """

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        word: list[str] = []
        for ch in text.lower():
            if _is_cjk(ch) or unicodedata.category(ch)[0] in "ZPSC":
                if word:
                    tokens.append("".join(word))
                    word = []
                if _is_cjk(ch):
                    tokens.append(ch)
            else:
                word.append(ch)
        if word:
            tokens.append("".join(word))
        return tokens


# ---------------------------------------------------------------------------------------------- inputs

def _per_example(predictions: Sequence[str], references: References) -> list[list[str]]:
    """References as a list of reference strings per prediction; ValueError on a length mismatch (a bug)."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not a single string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("no predictions to score")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(len(r) == 0 for r in refs):
        raise ValueError("every prediction needs at least one reference")
    return refs


def _sacrebleu_streams(refs: list[list[str]]) -> list[list[str | None]]:
    """Per-example reference lists → sacrebleu's reference streams (one list per reference slot, ``None`` where an
    example has fewer references: sacrebleu's way of allowing a variable number)."""
    n = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(n)]


# ---------------------------------------------------------------------------------------------- BLEU, chrF

def bleu_tokenizer(references: References, target_lang: str | None = None) -> str:
    """The sacrebleu tokenizer :func:`bleu` uses when none is given.

    With ``target_lang``: ``"zh"`` for Chinese, ``"char"`` for Japanese (sacrebleu's own "ja-mecab" needs MeCab),
    ``"13a"`` (sacrebleu's default, the WMT standard) for every other language. Without it, the same choice
    made from the references' script: when most of their letters are Han or kana characters, ``"char"`` if any
    is kana (Japanese) and ``"zh"`` if none is; else ``"13a"``. (13a would make a whole Chinese sentence one
    token.)
    """
    if target_lang is not None:
        return _BLEU_TOKENIZE.get(target_lang.lower().split("-")[0], "13a")
    _, cjk, kana = _letter_shares(_reference_texts(references))
    if cjk < 0.5:
        return "13a"
    return "char" if kana > 0 else "zh"


def bleu(predictions: Sequence[str], references: References, tokenize: str | None = None,
         target_lang: str | None = None) -> Scores:
    """Corpus BLEU through ``sacrebleu.metrics.BLEU``.

    Args:
        predictions: one hypothesis per example (detokenized text).
        references: one reference per example, or a list of references per example.
        tokenize: a sacrebleu tokenizer name (``"13a"``, ``"zh"``, ``"intl"``, ``"char"``, ``"none"``, ...);
            when None it is chosen by :func:`bleu_tokenizer` from ``target_lang`` or the references' script.
        target_lang: language code of the references (``"zh"``, ``"de"``, ...), used only to choose ``tokenize``.

    Returns:
        ``{"bleu": score, "bleu_signature": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"}``.

    Raises:
        ConfigError: unknown ``tokenize`` name. ValueError: length mismatch or no examples (a bug).
    """
    from sacrebleu.metrics import BLEU

    refs = _per_example(predictions, references)
    tok = tokenize if tokenize is not None else bleu_tokenizer(refs, target_lang)
    if tok not in BLEU.TOKENIZERS:
        raise ConfigError(f"unknown sacrebleu tokenizer {tok!r}; valid: {', '.join(BLEU.TOKENIZERS)}")
    metric = BLEU(tokenize=tok)
    score = metric.corpus_score(list(predictions), _sacrebleu_streams(refs))
    return {"bleu": float(score.score), "bleu_signature": str(metric.get_signature())}


def chrf(predictions: Sequence[str], references: References, word_order: int = 0) -> Scores:
    """Corpus chrF through ``sacrebleu.metrics.CHRF`` (chrF2; ``word_order=2`` gives chrF++).

    chrF works on characters, so it needs no tokenizer and suits every language as it is.

    Returns:
        ``{"chrf": score, "chrf_signature": "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"}``.

    Raises:
        ValueError: length mismatch or no examples (a bug).
    """
    from sacrebleu.metrics import CHRF

    refs = _per_example(predictions, references)
    metric = CHRF(word_order=word_order)
    score = metric.corpus_score(list(predictions), _sacrebleu_streams(refs))
    return {"chrf": float(score.score), "chrf_signature": str(metric.get_signature())}


# ---------------------------------------------------------------------------------------------- ROUGE

def rouge_tokenizer(references: References, lang: str | None = None) -> UnicodeTokenizer | None:
    """The tokenizer :func:`rouge` passes to rouge-score: None (its own, English, tokenizer) or a
    :class:`UnicodeTokenizer`.

    With ``lang``: rouge-score's own tokenizer for ``"en"`` only, the Unicode one for every other language
    (rouge-score's would delete their accented or non-Latin letters). Without it, chosen from the references'
    script: the Unicode tokenizer when fewer than half of their letters are ASCII (Chinese, Cyrillic, Greek,
    Arabic...), else rouge-score's own (English and most Latin-script text; this keeps scores comparable with
    Hugging Face ``evaluate`` and published numbers, at the cost of dropping accented letters).
    """
    if lang is not None:
        return None if lang.lower().split("-")[0] == "en" else UnicodeTokenizer()
    return UnicodeTokenizer() if _letter_shares(_reference_texts(references))[0] < 0.5 else None


def _lsum_text(text: str) -> str:
    """rougeLsum treats newlines as sentence boundaries; text with none is split by :func:`split_sentences`."""
    return text if "\n" in text else "\n".join(split_sentences(text))


def rouge(predictions: Sequence[str], references: References, stem: bool = True, lang: str | None = None) -> Scores:
    """ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum through ``rouge_score.rouge_scorer.RougeScorer``.

    The value of each is the F-measure averaged over examples, x100 (what Hugging Face ``evaluate`` reports,
    without bootstrap aggregation). With several references an example scores its best one (rouge-score's
    ``score_multi``).

    Args:
        predictions: one summary per example.
        references: one reference per example, or a list of references per example.
        stem: Porter-stem English words (rouge-score's ``use_stemmer``); only applies with rouge-score's own
            tokenizer, i.e. English / Latin-script text (see :func:`rouge_tokenizer`).
        lang: language code of the references; None detects the script (see :func:`rouge_tokenizer`).

    rougeLsum computes LCS over sentences, which rouge-score takes to be separated by newlines. A text that holds
    no newline is split into sentences by :func:`split_sentences` first (this changes only rougeLsum: the
    tokenizers treat a newline like a space). Without that, rougeLsum of one-line texts would equal rougeL.

    Returns:
        ``{"rouge1": ..., "rouge2": ..., "rougeL": ..., "rougeLsum": ...}``.

    Raises:
        ValueError: length mismatch or no examples (a bug).
    """
    from rouge_score.rouge_scorer import RougeScorer

    refs = _per_example(predictions, references)
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=stem, tokenizer=rouge_tokenizer(refs, lang))
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, targets in zip(predictions, refs, strict=True):
        scores = scorer.score_multi([_lsum_text(t) for t in targets], _lsum_text(pred))
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(refs) for name, total in totals.items()}


# ---------------------------------------------------------------------------------------------- classification

def _label_arrays(pred_labels: Sequence[Hashable], true_labels: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    if len(pred_labels) != len(true_labels):
        raise ValueError(f"{len(pred_labels)} predicted labels but {len(true_labels)} true labels")
    if len(true_labels) == 0:
        raise ValueError("no labels to score")
    # dtype=object keeps labels exactly as given (ints stay ints, strings are not padded to a common width).
    pred, true = np.empty(len(pred_labels), dtype=object), np.empty(len(true_labels), dtype=object)
    pred[:], true[:] = list(pred_labels), list(true_labels)
    return pred, true


def accuracy(pred_labels: Sequence[Hashable], true_labels: Sequence[Hashable]) -> float:
    """Percentage of examples whose predicted label equals the true one. ValueError on a length mismatch."""
    pred, true = _label_arrays(pred_labels, true_labels)
    return 100.0 * float(np.mean(pred == true))


def per_class_f1(pred_labels: Sequence[Hashable], true_labels: Sequence[Hashable],
                 labels: Sequence[Hashable] | None = None) -> dict[Hashable, dict[str, float]]:
    """Precision, recall, F1 (percentages) and support (number of true examples) of each class.

    ``labels`` chooses the classes (in that order); by default every label present in the true or the predicted
    labels, sorted. A class never predicted has precision 0, one never true has recall 0, and F1 is 0 when both
    are 0 (scikit-learn's ``zero_division=0``).

    Returns:
        ``{label: {"precision": p, "recall": r, "f1": f, "support": n}, ...}``.
    """
    pred, true = _label_arrays(pred_labels, true_labels)
    classes = sorted(set(pred) | set(true)) if labels is None else list(labels)
    out: dict[Hashable, dict[str, float]] = {}
    for c in classes:
        tp = int(np.sum((pred == c) & (true == c)))
        n_pred, n_true = int(np.sum(pred == c)), int(np.sum(true == c))
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_true if n_true else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[c] = {"precision": 100.0 * p, "recall": 100.0 * r, "f1": 100.0 * f, "support": float(n_true)}
    return out


def macro_f1(pred_labels: Sequence[Hashable], true_labels: Sequence[Hashable],
             labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean of the per-class F1 (percentage), over ``labels`` or, by default, over every label present
    in the true or the predicted labels (as scikit-learn's ``f1_score(average="macro")``). See :func:`per_class_f1`.
    """
    per_class = per_class_f1(pred_labels, true_labels, labels)
    return float(np.mean([v["f1"] for v in per_class.values()])) if per_class else 0.0


# ---------------------------------------------------------------------------------------------- entry point

def compute(metric_names: Sequence[str], predictions: Sequence, references: Sequence, *, lang: str | None = None,
            tokenize: str | None = None, stem: bool = True, labels: Sequence[Hashable] | None = None) -> Scores:
    """Compute the named metrics of ``predictions`` against ``references``; every score on a 0-100 scale.

    Args:
        metric_names: any of ``"bleu"``, ``"chrf"``, ``"rouge1"``, ``"rouge2"``, ``"rougeL"``, ``"rougeLsum"``,
            ``"accuracy"``, ``"macro_f1"``.
        predictions: generated texts, or predicted labels for accuracy / macro_f1.
        references: one reference text per prediction or a list of them (texts), or the true labels.
        lang: language code of the references, for BLEU's tokenizer (:func:`bleu_tokenizer`) and ROUGE's
            (:func:`rouge_tokenizer`); None detects the script from the references.
        tokenize: sacrebleu tokenizer name for BLEU, overriding ``lang``.
        stem: Porter stemming for ROUGE on English text.
        labels: the classes macro_f1 averages over (default: every label in references or predictions).

    Returns:
        A flat dict ``{name: value}`` holding each requested metric, plus ``"bleu_signature"`` /
        ``"chrf_signature"`` (sacrebleu's signature strings) when BLEU / chrF are requested.

    Raises:
        ConfigError: an unknown metric name (the message lists the valid ones) or sacrebleu tokenizer.
        ValueError: predictions and references differ in length, or are empty (a bug in the caller).
    """
    unknown = [name for name in metric_names if name not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(map(repr, unknown))}; valid metrics: {', '.join(METRICS)}")
    out: Scores = {}
    if "bleu" in metric_names:
        out.update(bleu(predictions, references, tokenize=tokenize, target_lang=lang))
    if "chrf" in metric_names:
        out.update(chrf(predictions, references))
    wanted_rouge = [name for name in ROUGE_TYPES if name in metric_names]
    if wanted_rouge:
        scores = rouge(predictions, references, stem=stem, lang=lang)
        out.update({name: scores[name] for name in wanted_rouge})
    if "accuracy" in metric_names:
        out["accuracy"] = accuracy(predictions, references)
    if "macro_f1" in metric_names:
        out["macro_f1"] = macro_f1(predictions, references, labels)
    return {name: out[name] for name in _output_order(metric_names) if name in out}


def _output_order(metric_names: Sequence[str]) -> list[str]:
    """Keys in the order the metrics were asked for, each signature right after its score."""
    order: list[str] = []
    for name in metric_names:
        order += [name, f"{name}_signature"] if name in ("bleu", "chrf") else [name]
    return list(dict.fromkeys(order))
