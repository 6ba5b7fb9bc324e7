"""BART denoising: sentence permutation and text infilling; the decoder reconstructs the original text.

Text infilling masks ``mask_ratio`` of the tokens in spans whose lengths are drawn from Poisson(λ); each
span becomes a single mask token, and a span of length 0 inserts one. Spans are laid out without
overlapping (their lengths are drawn first, the unmasked tokens are then split at random between them),
so a row has exactly as many mask tokens as spans were drawn. Sentence permutation shuffles the
sentences of each document (a sentence ends at a token ending in ``.``, ``!`` or ``?``) before
infilling; special tokens (the separator that closes a document) are not sentences and stay where they
are, last in their document. Special tokens are never masked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lmlab.errors import ConfigError
from lmlab.objectives.base import IGNORE, Batch, Objective, decoder_start_id, required_id, token_loss

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


def _stars_and_bars(total: int, parts: int, generator: torch.Generator) -> Tensor:
    """A uniformly random composition of ``total`` into ``parts`` non-negative integers (parts,)."""
    bars = torch.randperm(total + parts - 1, generator=generator)[:parts - 1].sort().values
    edges = torch.cat([torch.tensor([-1]), bars, torch.tensor([total + parts - 1])])
    return edges.diff() - 1


def infill_spans(length: int, num_masked: int, poisson_lambda: float, generator: torch.Generator) -> Tensor:
    """(K, 2) start and length of non-overlapping spans covering ``num_masked`` of ``length`` positions.

    Lengths are drawn from Poisson(λ) until they reach ``num_masked`` (the last one is cut to fit); spans of
    length 0 mark insertions. Consecutive spans are at least one position apart, so none merge.
    """
    rate = torch.full((max(4, int(2 * num_masked / max(poisson_lambda, 1e-3)) + 4),), poisson_lambda)
    lengths = torch.empty(0, dtype=torch.long)
    while lengths.sum() < num_masked:
        lengths = torch.cat([lengths, torch.poisson(rate, generator=generator).long()])
    cut = int((lengths.cumsum(0) >= num_masked).nonzero()[0]) + 1 if num_masked > 0 else 1
    lengths = lengths[:cut]
    lengths[-1] -= lengths.sum() - num_masked
    k = len(lengths)
    free = length - num_masked - (k - 1)  # unmasked positions beyond the one that separates each pair of spans
    if free < 0:
        lengths = lengths[:k + free]  # too many spans for the row (tiny rows only): keep what fits
        lengths[-1] += num_masked - lengths.sum()
        k, free = len(lengths), 0
    gaps = _stars_and_bars(free, k + 1, generator)
    gaps[1:-1] += 1
    starts = gaps[:-1].cumsum(0) + torch.cat([torch.zeros(1, dtype=torch.long), lengths[:-1].cumsum(0)])
    return torch.stack([starts, lengths], dim=1)


class BartDenoising(Objective):
    """BART's text infilling (+ sentence permutation) on an encoder-decoder; the target is the original row.

    The encoder input (shorter than the row, or longer by insertions, then cut) is right-padded to
    ``data.seq_len``. With ``document_mask`` packed documents stay apart on both sides.
    """

    name = "bart"
    archs = ("encoder-decoder",)

    def __init__(self, mask_id: int, pad_id: int, decoder_start_id: int, special_ids: list[int],
                 sentence_end_ids: list[int], vocab_size: int, mask_ratio: float = 0.3, poisson_lambda: float = 3.0,
                 permute_sentences: bool = True, document_mask: bool = True) -> None:
        self.mask_id, self.pad_id, self.start_id = mask_id, pad_id, decoder_start_id
        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_special[torch.tensor(special_ids, dtype=torch.long)] = True
        self.ends_sentence = torch.zeros(vocab_size, dtype=torch.bool)
        self.ends_sentence[torch.tensor(sentence_end_ids, dtype=torch.long)] = True
        self.mask_ratio, self.poisson_lambda = mask_ratio, poisson_lambda
        self.permute_sentences, self.document_mask = permute_sentences, document_mask

    def permute(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Tensor:
        """Shuffle the sentences of each document in each row; (B, T) -> (B, T)."""
        B, T = tokens.shape
        new = torch.zeros_like(tokens, dtype=torch.bool)
        new[:, 1:] = self.ends_sentence[tokens[:, :-1]] | (segment_ids[:, 1:] != segment_ids[:, :-1])
        sentence = new.long().cumsum(dim=1)  # (B, T) sentence index in the row
        key = torch.rand(B, T, generator=generator).gather(1, sentence)  # one random key per sentence in [0, 1)
        # special tokens (the separator closing a document) are not sentences: they stay at the end of their
        # document, as fairseq's permute_sentences keeps EOS last
        key = key.masked_fill(self.is_special[tokens], 1.0)
        # documents keep their order; a stable sort keeps each sentence's tokens in order
        order = (segment_ids * 2 + key).argsort(dim=1, stable=True)
        return tokens.gather(1, order)

    def _infill_row(self, tokens: Tensor, segments: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        T = len(tokens)
        num_masked = int(round(self.mask_ratio * T))
        spans = infill_spans(T, num_masked, self.poisson_lambda, generator)  # (K, 2)
        covered = torch.zeros(T + 1, dtype=torch.long)
        covered.index_add_(0, spans[:, 0], torch.ones(len(spans), dtype=torch.long))
        covered.index_add_(0, spans[:, 0] + spans[:, 1], -torch.ones(len(spans), dtype=torch.long))
        removed = (covered.cumsum(0)[:T] > 0) & ~self.is_special[tokens]  # (T,)
        prev = torch.cat([torch.tensor([False]), removed[:-1]])
        run_starts = (removed & ~prev).nonzero().flatten()
        inserts = spans[spans[:, 1] == 0, 0]
        mask_at = torch.cat([run_starts, inserts])  # a mask goes before the token at each of these positions
        kept = (~removed).nonzero().flatten()
        keys = torch.cat([kept * 2 + 1, mask_at * 2])  # a mask sorts before the token at its position
        order = keys.argsort()
        out = torch.cat([tokens[kept], torch.full((len(mask_at),), self.mask_id)])[order]
        seg_pos = torch.cat([kept, mask_at.clamp(max=T - 1)])[order]  # a mask belongs to the next token's document
        return out, segments[seg_pos]

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        B, T = tokens.shape
        source = self.permute(tokens, segment_ids, generator) if self.permute_sentences else tokens
        inputs = torch.full((B, T), self.pad_id, dtype=torch.long)
        enc_seg = torch.full((B, T), -1, dtype=torch.long)
        attention = torch.zeros(B, T, dtype=torch.long)
        for row in range(B):  # one vectorized pass per row; rows differ in length after infilling
            out, seg = self._infill_row(source[row], segment_ids[row], generator)
            n = min(len(out), T)
            inputs[row, :n], enc_seg[row, :n], attention[row, :n] = out[:n], seg[:n], 1
        decoder_inputs = torch.cat([torch.full((B, 1), self.start_id, dtype=torch.long), tokens[:, :-1]], dim=1)
        targets = tokens.masked_fill(self.is_special[tokens], IGNORE)  # separators are neither masked nor scored
        if not self.document_mask:
            return Batch(input_ids=inputs, targets=targets, attention_mask=attention,
                         decoder_input_ids=decoder_inputs)
        dec_seg = torch.cat([segment_ids[:, :1], segment_ids[:, :-1]], dim=1)  # the document of each input
        targets = targets.masked_fill(dec_seg != segment_ids, IGNORE)
        return Batch(input_ids=inputs, targets=targets, segment_ids=enc_seg, attention_mask=attention,
                     decoder_input_ids=decoder_inputs, decoder_segment_ids=dec_seg)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        return token_loss(model(**batch.model_inputs()).logits, batch.targets)  # (B, T, V)

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> BartDenoising:
        o = cfg.objective
        if round(o.bart_mask_ratio * cfg.data.seq_len) < 1:
            raise ConfigError(f"objective.bart_mask_ratio {o.bart_mask_ratio} masks no token of a row of data.seq_len "
                              f"{cfg.data.seq_len} tokens; set it to at least {0.5 / cfg.data.seq_len:.3g} (BART "
                              "masks 0.3)")
        vocab = tokenizer.tok.get_vocab(with_added_tokens=True)
        specials = set(tokenizer.special_ids)
        ends = [i for t, i in vocab.items()
                if i not in specials and tokenizer.decode([i]).rstrip().endswith((".", "!", "?"))]
        return cls(required_id(tokenizer, "mask"), required_id(tokenizer, "pad"), decoder_start_id(tokenizer),
                   list(tokenizer.special_ids), ends, tokenizer.vocab_size, o.bart_mask_ratio, o.bart_poisson_lambda,
                   o.bart_permute_sentences, o.document_mask)
