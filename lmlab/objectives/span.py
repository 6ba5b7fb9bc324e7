"""Span corruption (T5): replace random spans by sentinels; predict the spans after their sentinels.

Follows ``random_spans_noise_mask`` and ``compute_input_and_target_lengths`` of the T5 code: the raw
length is chosen so that the corrupted input fills the encoder length, every row has exactly
``round(n * noise_density)`` noise tokens in exactly ``round(noise / mean_noise_span_length)`` spans,
and span lengths come from a random segmentation (a uniformly random composition), not a geometric
draw. Example with sentinels ``<0>``, ``<1>``::

    tokens   a b c d e f g h
    inputs   a <0> d e <1> h </s>
    targets  <0> b c <1> f g </s>
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.errors import ConfigError
from lmlab.objectives.base import IGNORE, Batch, Objective, decoder_start_id, required_id, token_loss

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


def span_lengths(num_tokens: int, noise_density: float, mean_span: float) -> tuple[int, int, int]:
    """``(num_noise_tokens, num_noise_spans, num_nonnoise_tokens)`` of a sequence of ``num_tokens``, as T5."""
    num_noise = min(max(int(round(num_tokens * noise_density)), 1), num_tokens - 1)
    num_spans = max(int(round(num_noise / mean_span)), 1)
    return num_noise, num_spans, num_tokens - num_noise


def t5_lengths(inputs_length: int, noise_density: float, mean_span: float) -> tuple[int, int, int]:
    """T5's length computation: the raw token count whose corrupted input is at most ``inputs_length``.

    Returns ``(raw_length, encoder_length, decoder_length)``: the encoder input (kept tokens, one sentinel
    per noise span, EOS) is at most ``inputs_length`` and usually equal to it; the targets (one sentinel per
    span, the noise tokens, EOS) fill ``decoder_length``.
    """
    def lengths(n: int) -> tuple[int, int]:
        noise = int(round(n * noise_density))
        spans = int(round(noise / mean_span))
        return n - noise + spans + 1, noise + spans + 1

    n = inputs_length - 1
    while lengths(n + 1)[0] <= inputs_length:
        n += 1
    enc, dec = lengths(n)
    if noise_density == 0.5 and dec > enc:  # T5's own adjustment, so both sides are the same length
        n, dec = n - 1, dec - 1
    # T5 rounds the same way in both functions; use the mask's exact counts for the batch shapes.
    noise, spans, nonnoise = span_lengths(n, noise_density, mean_span)
    return n, nonnoise + spans + 1, noise + spans + 1


def _random_segmentation(batch: int, num_items: int, num_segments: int, generator: torch.Generator) -> Tensor:
    """Lengths (B, num_segments) of a uniformly random split of ``num_items`` into non-empty segments."""
    # Exactly num_segments - 1 of the num_items - 1 gaps start a new segment, chosen by a random permutation.
    order = torch.rand(batch, num_items - 1, generator=generator).argsort(dim=1)
    first = torch.cat([torch.zeros(batch, 1, dtype=torch.long), (order < num_segments - 1).long()], dim=1)
    segment = first.cumsum(dim=1)  # (B, num_items) in [0, num_segments)
    return torch.zeros(batch, num_segments, dtype=torch.long).scatter_add_(1, segment, torch.ones_like(segment))


def random_spans_noise_mask(batch: int, length: int, noise_density: float, mean_span: float,
                            generator: torch.Generator) -> Tensor:
    """(B, length) bool, True for noise: alternating non-noise/noise spans, starting with non-noise."""
    num_noise, num_spans, num_nonnoise = span_lengths(length, noise_density, mean_span)
    noise_lengths = _random_segmentation(batch, num_noise, num_spans, generator)
    nonnoise_lengths = _random_segmentation(batch, num_nonnoise, num_spans, generator)
    interleaved = torch.stack([nonnoise_lengths, noise_lengths], dim=2).reshape(batch, 2 * num_spans)
    starts = interleaved.cumsum(dim=1)[:, :-1]  # (B, 2S - 1) start of every span but the first
    indicator = torch.zeros(batch, length, dtype=torch.long).scatter_(1, starts, 1)
    return indicator.cumsum(dim=1) % 2 == 1


def _replace_spans(values: Tensor, spans: Tensor, sentinels: Tensor | None) -> tuple[Tensor, Tensor]:
    """Keep ``values`` outside ``spans``; each span becomes one position (its first), holding the next
    sentinel when ``sentinels`` (S,) is given. Returns the kept values (B, N') and the sentinel flags."""
    prev = F.pad(spans[:, :-1], (1, 0), value=False)
    first = spans & ~prev  # (B, T) first position of each span
    keep = ~(spans & prev)
    out = values
    if sentinels is not None:
        index = (first.long().cumsum(dim=1) - 1).clamp(min=0)
        out = torch.where(first, sentinels[index], values)
    B = values.shape[0]
    return out[keep].view(B, -1), first[keep].view(B, -1)


class SpanCorruption(Objective):
    """T5's span corruption on an encoder-decoder.

    ``data.seq_len`` is the encoder length; the sampler draws the raw length that fills it (``extra_tokens``)
    and the decoder length follows (``decoder_len``). With ``document_mask``, packed documents stay apart on
    both sides: each position (sentinels included) belongs to the document of the tokens it stands for, and
    a target is not predicted from a position of another document.
    """

    name = "span"
    archs = ("encoder-decoder", "decoder")

    def __init__(self, seq_len: int, sentinel_ids: list[int], eos_id: int, decoder_start_id: int,
                 noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                 document_mask: bool = True, decoder_only: bool = False, special_ids: list[int] = ()) -> None:
        self.decoder_only = decoder_only
        self.raw_len, self.encoder_len, self.decoder_len = t5_lengths(seq_len, noise_density,
                                                                      mean_noise_span_length)
        _, num_spans, _ = span_lengths(self.raw_len, noise_density, mean_noise_span_length)
        if len(sentinel_ids) < num_spans:
            raise ConfigError(f"span corruption of {self.raw_len} tokens makes {num_spans} noise spans, but the "
                              f"tokenizer has {len(sentinel_ids)} sentinel tokens; train it with "
                              f"`lmlab tokenizer train --sentinels {max(100, num_spans)}`")
        # Special tokens (the separators between packed documents) are taken out of a row before it is corrupted,
        # as T5 corrupts each document's text and adds EOS after: none is ever noised or a target. The sampler
        # draws some spare tokens to make up for them.
        self.is_special = torch.zeros(max(special_ids, default=-1) + 1, dtype=torch.bool)
        self.is_special[list(special_ids)] = True
        self.row_len = self.raw_len + (max(8, self.raw_len // 8) if special_ids else 0)
        self.extra_tokens = self.row_len - seq_len
        self.sentinels = torch.tensor(sentinel_ids, dtype=torch.long)
        self.eos_id, self.decoder_start_id = eos_id, decoder_start_id
        self.noise_density, self.mean_span = noise_density, mean_noise_span_length
        self.document_mask = document_mask

    def _drop_special(self, tokens: Tensor, segment_ids: Tensor) -> tuple[Tensor, Tensor]:
        """The first ``raw_len`` ordinary tokens of each row, in order, with their documents; (B, raw_len) each.
        A row with too few (documents shorter than a few tokens) keeps its first ``raw_len`` tokens as they are."""
        special = self.is_special[tokens.clamp(max=len(self.is_special) - 1)] & (tokens < len(self.is_special))
        index = special.long().argsort(dim=1, stable=True)[:, :self.raw_len]  # ordinary tokens first, in order
        enough = (~special).sum(dim=1, keepdim=True) >= self.raw_len
        index = torch.where(enough, index, torch.arange(self.raw_len))
        return tokens.gather(1, index), segment_ids.gather(1, index)

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        tokens, segment_ids = tokens[:, :self.row_len], segment_ids[:, :self.row_len]
        if self.row_len > self.raw_len:
            tokens, segment_ids = self._drop_special(tokens, segment_ids)
        B, n = tokens.shape  # n == self.raw_len
        noise = random_spans_noise_mask(B, n, self.noise_density, self.mean_span, generator)
        inputs, _ = _replace_spans(tokens, noise, self.sentinels)  # (B, encoder_len - 1)
        targets, is_sentinel = _replace_spans(tokens, ~noise, self.sentinels)  # (B, decoder_len - 1)
        eos = torch.full((B, 1), self.eos_id, dtype=torch.long)
        inputs, targets = torch.cat([inputs, eos], dim=1), torch.cat([targets, eos], dim=1)
        enc_seg = tgt_seg = None
        if self.document_mask:
            # A sentinel belongs to the document where its noise span starts: on the input side that is its
            # own position; on the target side it is the next target token (the span's first token).
            enc_seg, _ = _replace_spans(segment_ids, noise, None)
            tgt_seg, _ = _replace_spans(segment_ids, ~noise, None)
            tgt_seg = torch.where(is_sentinel, tgt_seg.roll(-1, dims=1), tgt_seg)
            enc_seg = torch.cat([enc_seg, enc_seg[:, -1:]], dim=1)  # EOS ends the last document
            tgt_seg = torch.cat([tgt_seg, tgt_seg[:, -1:]], dim=1)
        if self.decoder_only:
            return self._concatenated(inputs, targets, enc_seg, tgt_seg)
        decoder_inputs = torch.cat([torch.full((B, 1), self.decoder_start_id, dtype=torch.long),
                                    targets[:, :-1]], dim=1)
        if not self.document_mask:
            return Batch(input_ids=inputs, targets=targets, decoder_input_ids=decoder_inputs)
        dec_seg = torch.cat([tgt_seg[:, :1], tgt_seg[:, :-1]], dim=1)  # each position: its input's document
        targets = targets.masked_fill(dec_seg != tgt_seg, IGNORE)
        return Batch(input_ids=inputs, targets=targets, segment_ids=enc_seg, decoder_input_ids=decoder_inputs,
                     decoder_segment_ids=dec_seg)

    def _concatenated(self, inputs: Tensor, targets: Tensor, enc_seg: Tensor | None, tgt_seg: Tensor | None) -> Batch:
        """The decoder-only form: ``inputs ++ targets`` in one row, the inputs a bidirectional prefix, loss on the
        targets only (as UL2 trains a decoder, and the T5 paper's prefix-LM variant)."""
        B, n_in = inputs.shape
        row = torch.cat([inputs, targets], dim=1)  # (B, encoder_len + decoder_len)
        labels = row[:, 1:].clone()
        labels[:, :n_in - 1] = IGNORE  # the prefix is read, not predicted
        batch = Batch(input_ids=row[:, :-1], targets=labels, prefix_lengths=torch.full((B,), n_in))
        if enc_seg is not None:
            seg = torch.cat([enc_seg, tgt_seg], dim=1)  # (B, len(row))
            batch.targets[seg[:, 1:] != seg[:, :-1]] = IGNORE  # not predicted from another document
            batch.segment_ids = seg[:, :-1]
        return batch

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        return token_loss(model(**batch.model_inputs()).logits, batch.targets)  # (B, T_dec, V)

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> SpanCorruption:
        o = cfg.objective
        _, enc, dec = t5_lengths(cfg.data.seq_len, o.noise_density, o.mean_noise_span_length)
        m = cfg.model
        if m.arch == "decoder" and m.position == "learned" and enc + dec - 1 > m.max_seq_len:
            raise ConfigError(f"span corruption on a decoder reads inputs and targets as one row of {enc + dec - 1} "
                              f"tokens, above model.max_seq_len ({m.max_seq_len}); lower data.seq_len")
        return cls(cfg.data.seq_len, tokenizer.sentinel_ids, required_id(tokenizer, "eos"),
                   decoder_start_id(tokenizer), o.noise_density, o.mean_noise_span_length, o.document_mask,
                   decoder_only=cfg.model.arch == "decoder", special_ids=tokenizer.special_ids)
