"""Scoring text: log-probabilities per token and per text, and perplexity, for every architecture.

- **Decoders** (causal LM): ``log P(x) = sum_t log P(x_t | x_<t)``. The text is encoded with the tokenizer's
  special-token template (a Llama ``tokenizer.json`` puts BOS first; lmlab's tokenizers add nothing, as lmlab
  models are trained on packed text where a document's first token is never predicted). The first token of
  the sequence is context only: with a BOS in front, every token of the text is scored; without one, the
  text's first token is not scored (``bos=True`` prepends the tokenizer's BOS in any case). A text longer
  than the window (``max_length``, default the model's ``max_seq_len``) is scored with a strided sliding
  window, as in Hugging Face's perplexity guide: the first window scores its tokens, each later window of
  full length ends ``stride`` tokens further and scores only those, so every token is scored exactly once
  with at least ``max_length - stride`` tokens of context (the last window also has full length).
- **Encoders**, and decoders trained with masked LM: the pseudo-log-likelihood of Salazar et al. (2020),
  ``sum_t log P(x_t | x with position t masked)``, over the text's tokens (not the template's special
  tokens); the masked copies are batched, one forward per ``batch_size`` copies.
- **Encoder-decoders**: ``log P(y | x)`` of a target ``y`` given a source ``x``, by teacher forcing from the
  decoder start token; the scored tokens are ``y``'s followed by EOS.

Perplexity is ``exp(-log P / number of scored tokens)``; over a file, ``exp(total NLL / total tokens)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from lmlab.infer import InferenceError

__all__ = ["CorpusScore", "TextScore", "file_perplexity", "score", "score_batch", "scores_first_token"]


@dataclass
class TextScore:
    """The score of one text: the log-probability (nats) of each scored token and their sum."""

    log_prob: float
    token_ids: list[int] = field(default_factory=list, repr=False)  # the scored tokens, in order
    token_log_probs: list[float] = field(default_factory=list, repr=False)

    def __repr__(self) -> str:
        return (f"TextScore(log_prob={self.log_prob:.4f}, num_tokens={self.num_tokens}, "
                f"perplexity={self.perplexity:.4f})")

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_log_prob(self) -> float:
        """Log-probability per scored token (NaN when no token was scored)."""
        return self.log_prob / self.num_tokens if self.num_tokens else math.nan

    @property
    def perplexity(self) -> float:
        """``exp(-mean_log_prob)`` (NaN when no token was scored)."""
        return math.exp(-self.mean_log_prob) if self.num_tokens else math.nan


@dataclass
class CorpusScore:
    """Totals over many texts."""

    nll: float  # summed negative log-likelihood, nats
    num_tokens: int
    num_texts: int

    @property
    def mean_nll(self) -> float:
        return self.nll / self.num_tokens if self.num_tokens else math.nan

    @property
    def perplexity(self) -> float:
        """``exp(total NLL / total scored tokens)``."""
        return math.exp(self.mean_nll) if self.num_tokens else math.nan


def score(model: torch.nn.Module, tokenizer, text: str, target: str | None = None, **options) -> TextScore:
    """The score of one text (or, for an encoder-decoder, of ``target`` given ``text``); see :func:`score_batch`."""
    return score_batch(model, tokenizer, [text], None if target is None else [target], **options)[0]


def score_batch(model: torch.nn.Module, tokenizer, texts: list[str], targets: list[str] | None = None, *,
                batch_size: int = 8, max_length: int | None = None, stride: int | None = None,
                bos: bool | None = None, decoder_start_token_id: int | None = None) -> list[TextScore]:
    """Score texts with a decoder (log-likelihood), an encoder (pseudo-log-likelihood) or an encoder-decoder
    (``log P(target | text)``), as the module docstring describes.

    Args:
        model: an lmlab ``Transformer`` with a token head. A decoder whose stack attends both ways (a
            masked-LM decoder loaded by :func:`lmlab.auto.load_for_task`) is scored like an encoder.
        tokenizer: an lmlab ``Tokenizer`` or an :class:`~lmlab.auto.AutoTokenizer`.
        texts: the texts (encoder-decoders: the sources).
        targets: encoder-decoders only, one target per text.
        batch_size: sequences per forward pass (windows, masked copies, or pairs).
        max_length: decoders: the window length (default ``model.config.max_seq_len``).
        stride: decoders: how far each later window moves, ``1 <= stride < max_length`` (default half).
        bos: decoders: None follows the tokenizer's template; True puts its BOS first; False adds nothing.
        decoder_start_token_id: encoder-decoders: the decoder's first input (default: pad, else BOS, else EOS,
            as lmlab's objectives train).

    Returns:
        One :class:`TextScore` per text, in order.

    Raises:
        InferenceError: a model without a token head; targets missing (encoder-decoder) or given (other
            models); a bad window; a text longer than learned positions allow (encoders, encoder-decoders);
            no mask token (encoders); no BOS token with ``bos=True``; a text with no token to score (an empty
            one, or on a decoder a one-token text without BOS: see :func:`scores_first_token`).
    """
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    scores = _score_batch(model, tokenizer, texts, targets, batch_size=batch_size, max_length=max_length,
                          stride=stride, bos=bos, decoder_start_token_id=decoder_start_token_id)
    for text, s in zip(texts, scores, strict=True):
        if s.num_tokens == 0:  # a perplexity of NaN is no answer: say why nothing was scored
            raise InferenceError(_nothing_to_score(model, tok, text))
    return scores


def _nothing_to_score(model: torch.nn.Module, tok, text: str) -> str:
    if not tok.tok.encode(text, add_special_tokens=False).ids:
        return f"the text {text!r} is empty: there is nothing to score"
    hint = ("pass bos=True (`lmlab score --bos`) to score it after the tokenizer's BOS token" if tok.bos_id is not None
            else "give a longer text (this tokenizer has no BOS token to put first)")
    return (f"nothing to score in {text!r}: a decoder scores each token from the ones before it, so the first "
            f"token is context only, and this text has one token; {hint}")


def scores_first_token(model: torch.nn.Module, tokenizer, bos: bool | None = None) -> bool:
    """Whether :func:`score_batch` scores the first token of a text: always for encoders (pseudo-log-likelihood)
    and encoder-decoders (the target's first token follows the decoder start token); for decoders only with a
    BOS token first (``bos=True``, or a template that puts it there, as a Llama ``tokenizer.json`` does)."""
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    if model.config.arch != "decoder" or not model.decoder.causal or bos:
        return True
    ids = tok.tok.encode("a", add_special_tokens=bos is None).ids
    return bool(ids) and tok.bos_id is not None and ids[0] == tok.bos_id


def _score_batch(model: torch.nn.Module, tokenizer, texts: list[str], targets: list[str] | None = None, *,
                 batch_size: int = 8, max_length: int | None = None, stride: int | None = None,
                 bos: bool | None = None, decoder_start_token_id: int | None = None) -> list[TextScore]:
    """:func:`score_batch`, where a text may come back with no token scored."""
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    if isinstance(texts, str):
        raise InferenceError("score_batch takes a list of texts; use score() for one text")
    if model.head is None:
        raise InferenceError("this model has no token head (model.lm_head is false), so it gives no "
                             "probabilities to score text with")
    if batch_size < 1:
        raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
    arch = model.config.arch
    if (targets is not None) != (arch == "encoder-decoder"):
        raise InferenceError("an encoder-decoder scores a target given a source: pass targets (on the command line, "
                             "`lmlab score RUN SOURCE --target TARGET`)" if targets is None
                             else f"targets are for encoder-decoders; this {arch} model scores the texts alone")
    if targets is not None and len(targets) != len(texts):
        raise InferenceError(f"{len(texts)} texts but {len(targets)} targets; give one target per text")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if arch == "encoder-decoder":
                return _score_seq2seq(model, tok, texts, targets, batch_size, decoder_start_token_id)
            if arch == "encoder" or not model.decoder.causal:
                return _score_pll(model, tok, texts, batch_size)
            return _score_causal(model, tok, texts, batch_size, max_length, stride, bos)
    finally:
        model.train(was_training)


def file_perplexity(model: torch.nn.Module, tokenizer, path: str | Path, unit: Literal["line", "document"] = "line",
                    chunk: int = 256, **options) -> CorpusScore:
    """Perplexity of a decoder or encoder over a corpus: ``exp(total NLL / total scored tokens)``.

    Args:
        path: a ``.txt``/``.md``/``.jsonl`` file or a directory, read as :func:`lmlab.data.read_documents` does.
        unit: ``"line"``: each non-blank line is a text; ``"document"``: each blank-line separated document
            (each ``.jsonl`` record) is. Texts are scored independently (:func:`score_batch`).
        chunk: texts handed to :func:`score_batch` at a time.
        options: passed to :func:`score_batch` (``batch_size``, ``max_length``, ``stride``, ``bos``).

    Raises:
        DataError: the corpus is missing or unreadable.
        InferenceError: an encoder-decoder (score its pairs with ``score_batch(..., targets=...)``); a bad
            ``unit``; as :func:`score_batch`.
    """
    from lmlab.data.corpus import read_documents

    if model.config.arch == "encoder-decoder":
        raise InferenceError("an encoder-decoder scores a target given a source, not a file of texts; "
                             "use score_batch(model, tokenizer, sources, targets=...)")
    if unit not in ("line", "document"):
        raise InferenceError(f"unit must be 'line' or 'document', got {unit!r}")

    def texts() -> Iterator[str]:
        for doc in read_documents(path):
            if unit == "document":
                yield doc
            else:
                yield from (line for line in doc.splitlines() if line.strip())

    total = CorpusScore(nll=0.0, num_tokens=0, num_texts=0)
    for group in _chunks(texts(), chunk):
        for s in _score_batch(model, tokenizer, group, **options):  # a one-token line adds nothing, no error
            total.nll -= s.log_prob
            total.num_tokens += s.num_tokens
            total.num_texts += 1
    return total


# --------------------------------------------------------------------------- shared pieces


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    group = []
    for x in items:
        group.append(x)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def _pad(rows: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded (B, T) ids (padding 0, masked out) and the (B, T) attention mask, on ``device``."""
    from lmlab.infer.generate import pad_batch

    ids, mask = pad_batch(rows)
    return ids.to(device), mask.to(device)


def _token_log_probs(model: torch.nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    """log P(target) (N,) float32 from hidden states (N, D): the head runs only where a token is scored."""
    logp = model.logits(hidden).float().log_softmax(-1)  # (N, V)
    return logp.gather(-1, targets[:, None]).squeeze(-1)


def _check_length(model: torch.nn.Module, n: int, what: str) -> None:
    cfg = model.config
    if cfg.position == "learned" and n > cfg.max_seq_len:
        raise InferenceError(f"{what} is {n} tokens long, above the model's {cfg.max_seq_len} learned positions; "
                             "score shorter texts (e.g. one line at a time)")


def _gather_rows(n_rows: int, batch_size: int, lengths: list[int]) -> Iterator[list[int]]:
    """Row indices in batches, longest rows first (less padding); results are put back by index."""
    order = sorted(range(n_rows), key=lambda i: -lengths[i])
    for b in range(0, n_rows, batch_size):
        yield order[b:b + batch_size]


# --------------------------------------------------------------------------- decoders


def windows(length: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """The strided windows over a sequence of ``length`` tokens: ``(start, end, first_target)`` each.

    Window ``k`` covers tokens ``start:end`` and scores tokens ``first_target:end`` (absolute positions); the
    targets of all windows are ``1..length-1``, each exactly once. The first window is ``0:max_length``; each
    later one has full length and ends ``stride`` tokens after the one before (the last ends at ``length``).
    """
    if length <= max_length:
        return [(0, length, 1)]
    out = [(0, max_length, 1)]
    t = max_length
    while t < length:
        end = min(t + stride, length)
        out.append((end - max_length, end, t))
        t = end
    return out


def _score_causal(model: torch.nn.Module, tok, texts: list[str], batch_size: int, max_length: int | None,
                  stride: int | None, bos: bool | None) -> list[TextScore]:
    cfg = model.config
    W = max_length if max_length is not None else cfg.max_seq_len
    if W < 2:
        raise InferenceError(f"max_length must be >= 2 to score anything, got {W}")
    _check_length(model, W, "the window (max_length)")
    stride = stride if stride is not None else W // 2
    if not 1 <= stride < W:
        raise InferenceError(f"stride must be in [1, max_length) = [1, {W}), got {stride}; each window needs "
                             "context before the tokens it scores")
    if bos and tok.bos_id is None:
        raise InferenceError("bos=True, but the tokenizer has no BOS token")

    seqs = []
    for text in texts:
        ids = tok.tok.encode(text, add_special_tokens=bos is None).ids
        if bos and (not ids or ids[0] != tok.bos_id):
            ids = [tok.bos_id] + ids
        seqs.append(ids)

    # One row per window; results come back per row and are joined per text in window order.
    rows: list[tuple[int, int, int, int]] = [(i, s, e, f) for i, ids in enumerate(seqs)
                                             for s, e, f in windows(len(ids), W, stride) if e - f > 0]
    results: list[Tensor] = [torch.empty(0)] * len(rows)
    device = next(model.parameters()).device
    for batch in _gather_rows(len(rows), batch_size, [r[2] - r[1] for r in rows]):
        x, mask = _pad([seqs[rows[r][0]][rows[r][1]:rows[r][2]] for r in batch], device)  # (b, Tw)
        # target j of a window is predicted at j - 1: score positions first_target-1 .. end-2 (window-relative)
        pos = torch.arange(x.shape[1] - 1, device=device)[None]  # (1, Tw-1)
        first = torch.tensor([rows[r][3] - rows[r][1] for r in batch], device=device)[:, None]  # (b, 1)
        sel = (pos >= first - 1) & (mask[:, 1:] == 1)  # (b, Tw-1)
        hidden = model.hidden(x, attention_mask=mask)  # (b, Tw, D)
        lp = _token_log_probs(model, hidden[:, :-1][sel], x[:, 1:][sel]).cpu()  # (N,) row-major
        for r, part in zip(batch, lp.split(sel.sum(1).tolist()), strict=True):
            results[r] = part

    per_text: list[list[Tensor]] = [[] for _ in texts]
    for (i, *_), part in zip(rows, results, strict=True):
        per_text[i].append(part)
    return [_text_score(seqs[i][1:], per_text[i]) for i in range(len(texts))]


def _text_score(token_ids: list[int], parts: list[Tensor]) -> TextScore:
    lp = torch.cat(parts) if parts else torch.empty(0)
    if len(lp) != len(token_ids):  # every target exactly once: a bug here, not a user's mistake
        raise AssertionError(f"scored {len(lp)} tokens for {len(token_ids)} targets")
    return TextScore(log_prob=float(lp.double().sum()), token_ids=list(token_ids), token_log_probs=lp.tolist())


# --------------------------------------------------------------------------- encoders (pseudo-log-likelihood)


def _score_pll(model: torch.nn.Module, tok, texts: list[str], batch_size: int) -> list[TextScore]:
    if tok.mask_id is None:
        raise InferenceError("pseudo-log-likelihood masks each token in turn, and the tokenizer has no mask token")
    seqs, scored = [], []
    for text in texts:
        enc = tok.tok.encode(text, add_special_tokens=True)
        _check_length(model, len(enc.ids), f"the text {text[:40]!r}")
        seqs.append(enc.ids)
        scored.append([j for j, special in enumerate(enc.special_tokens_mask) if not special])
    rows = [(i, j) for i, positions in enumerate(scored) for j in positions]  # one masked copy per token
    results = torch.empty(len(rows))
    device = next(model.parameters()).device
    for batch in _gather_rows(len(rows), batch_size, [len(seqs[i]) for i, _ in rows]):
        copies = []
        for r in batch:
            i, j = rows[r]
            copy = list(seqs[i])
            copy[j] = tok.mask_id
            copies.append(copy)
        x, mask = _pad(copies, device)  # (b, T)
        where = torch.tensor([rows[r][1] for r in batch], device=device)  # (b,)
        true = torch.tensor([seqs[rows[r][0]][rows[r][1]] for r in batch], device=device)  # (b,)
        hidden = model.hidden(x, attention_mask=mask, causal=False)  # (b, T, D)
        results[batch] = _token_log_probs(model, hidden[torch.arange(len(batch), device=device), where], true).cpu()
    out, k = [], 0
    for i, positions in enumerate(scored):
        out.append(_text_score([seqs[i][j] for j in positions], [results[k:k + len(positions)]]))
        k += len(positions)
    return out


# --------------------------------------------------------------------------- encoder-decoders


def _score_seq2seq(model: torch.nn.Module, tok, sources: list[str], targets: list[str], batch_size: int,
                   start: int | None) -> list[TextScore]:
    from lmlab.objectives.base import decoder_start_id

    start = start if start is not None else decoder_start_id(tok, model)
    src, tgt = [], []
    for source, target in zip(sources, targets, strict=True):
        s = tok.tok.encode(source, add_special_tokens=True).ids
        if not s:
            raise InferenceError(f"the source text {source!r} is empty; an encoder-decoder needs input")
        t = tok.tok.encode(target, add_special_tokens=False).ids + ([tok.eos_id] if tok.eos_id is not None else [])
        if not t:
            raise InferenceError("the target is empty and the tokenizer has no EOS token: nothing to score")
        _check_length(model, len(s), f"the source {source[:40]!r}")
        _check_length(model, len(t), f"the target {target[:40]!r}")
        src.append(s)
        tgt.append(t)
    results: list[Tensor] = [torch.empty(0)] * len(src)
    device = next(model.parameters()).device
    for batch in _gather_rows(len(src), batch_size, [len(s) + len(t) for s, t in zip(src, tgt, strict=True)]):
        x, x_mask = _pad([src[r] for r in batch], device)  # (b, S)
        y, y_mask = _pad([tgt[r] for r in batch], device)  # (b, T) the targets: y + EOS
        y_in = torch.cat([torch.full_like(y[:, :1], start), y[:, :-1]], dim=1)  # (b, T) teacher forcing
        hidden = model.hidden(x, attention_mask=x_mask, decoder_input_ids=y_in,
                              decoder_attention_mask=y_mask)  # (b, T, D)
        sel = y_mask == 1
        lp = _token_log_probs(model, hidden[sel], y[sel]).cpu()
        for r, part in zip(batch, lp.split(sel.sum(1).tolist()), strict=True):
            results[r] = part
    return [_text_score(t, [part]) for t, part in zip(tgt, results, strict=True)]
