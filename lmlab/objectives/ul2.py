"""UL2's mixture of denoisers (Tay et al. 2022), on an encoder-decoder or on a decoder.

Each example (row) of a batch gets its own denoiser, drawn with the configured weights for the three
families (and uniformly within a family), with its mode token prepended to its inputs:

    R-denoiser  [NLU]  span corruption, mean span 3 and 8, 15% noise
    X-denoiser  [NLG]  span corruption, (mean 3, 50%), (8, 50%), (64, 15%), (64, 50%)
    S-denoiser  [S2S]  prefix LM: a random prefix is the input, the rest of the row the target

The span denoisers are :class:`~lmlab.objectives.span.SpanCorruption` (exact T5 noise counts and
lengths; each fills the encoder length); on a decoder, inputs and targets form one row read through a
prefix-LM mask. Rows of different denoisers differ in length: each side is right-padded to the batch's longest
(padding masked out of attention and never a target), so the batch mixes denoisers as UL2 trains. The mode
tokens are added to the tokenizer when it lacks them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lmlab.objectives.base import (
    IGNORE,
    Batch,
    Objective,
    decoder_start_id,
    own_token_ids,
    required_id,
    token_loss,
)
from lmlab.objectives.span import SpanCorruption

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer

NLU, NLG, S2S = "[NLU]", "[NLG]", "[S2S]"
R_DENOISERS = ((3.0, 0.15), (8.0, 0.15))  # (mean span length, noise density)
X_DENOISERS = ((3.0, 0.5), (8.0, 0.5), (64.0, 0.15), (64.0, 0.5))


class UL2(Objective):
    """UL2's mixture of R-, X- and S-denoisers with mode tokens."""

    name = "ul2"
    archs = ("encoder-decoder", "decoder")
    special_tokens = (NLU, NLG, S2S)

    def __init__(self, seq_len: int, sentinel_ids: list[int], mode_ids: tuple[int, int, int], eos_id: int,
                 pad_id: int, decoder_start_id: int, weights: tuple[float, float, float] = (0.4, 0.4, 0.2),
                 document_mask: bool = True, decoder_only: bool = False, special_ids: list[int] = ()) -> None:
        self.mode_ids = mode_ids
        self.seq_len, self.eos_id, self.pad_id, self.start_id = seq_len, eos_id, pad_id, decoder_start_id
        self.decoder_only, self.document_mask = decoder_only, document_mask
        self.weights = torch.tensor(weights, dtype=torch.float)
        # span denoisers fill seq_len - 1 positions: the mode token comes first
        make = lambda mean, density: SpanCorruption(seq_len - 1, sentinel_ids, eos_id, decoder_start_id,  # noqa: E731
                                                    density, mean, document_mask, decoder_only, special_ids)
        self.families = ([make(*d) for d in R_DENOISERS], [make(*d) for d in X_DENOISERS])
        raw = max([seq_len] + [d.row_len for family in self.families for d in family])
        self.extra_tokens = raw - seq_len
        # every denoiser (None: the S-denoiser), its family, and its share: the family's weight split evenly
        self.denoisers = [(f, d) for f in (0, 1) for d in self.families[f]] + [(2, None)]
        self.shares = torch.stack([self.weights[f] / (len(self.families[f]) if f < 2 else 1)
                                   for f, _ in self.denoisers])

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        B = tokens.shape[0]
        chosen = torch.multinomial(self.shares, B, replacement=True, generator=generator)  # (B,) per example
        parts, rows = [], []
        for k in chosen.unique().tolist():  # one call per denoiser, on its rows, in a fixed order
            index = (chosen == k).nonzero().flatten()
            family, denoiser = self.denoisers[k]
            if denoiser is None:
                part = self._sequential(tokens[index, :self.seq_len], segment_ids[index, :self.seq_len], generator)
            else:
                part = self._with_mode(denoiser.make_batch(tokens[index], segment_ids[index], generator),
                                       self.mode_ids[family])
            parts.append(part)
            rows.append(index)
        return self._merge(parts, torch.cat(rows))

    def _merge(self, parts: list[Batch], rows: Tensor) -> Batch:
        """One batch from the denoisers' batches (rows ``rows`` of the result, in order): each side right-padded to
        the longest, padding out of attention (a mask on the encoder; on decoders it comes after every real
        position, which a causal mask never lets them see) and never a target."""
        if len(parts) == 1:
            return parts[0]
        T = max(p.input_ids.shape[1] for p in parts)
        seg = any(p.segment_ids is not None for p in parts)

        def pad(t: Tensor, width: int, value: int) -> Tensor:  # (b, n) -> (b, width)
            return torch.cat([t, torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype)], dim=1)

        def ones(p: Batch) -> Tensor:
            return torch.ones_like(p.input_ids)

        order = rows.argsort()  # the merged rows back in the order of the examples
        cat = lambda ts: torch.cat(ts)[order]  # noqa: E731
        out = Batch(input_ids=cat([pad(p.input_ids, T, self.pad_id) for p in parts]),
                    targets=cat([pad(p.targets, max(q.targets.shape[1] for q in parts), IGNORE) for p in parts]))
        if seg:
            out.segment_ids = cat([pad(p.segment_ids, T, -1) for p in parts])
        if self.decoder_only:
            out.prefix_lengths = cat([p.prefix_lengths for p in parts])
            return out
        out.attention_mask = cat([pad(p.attention_mask if p.attention_mask is not None else ones(p), T, 0)
                                  for p in parts])
        T_dec = max(p.decoder_input_ids.shape[1] for p in parts)
        out.decoder_input_ids = cat([pad(p.decoder_input_ids, T_dec, self.pad_id) for p in parts])
        if seg:
            out.decoder_segment_ids = cat([pad(p.decoder_segment_ids, T_dec, -1) for p in parts])
        return out

    def _with_mode(self, batch: Batch, mode: int) -> Batch:
        """Prepend the mode token to the inputs (and widen the prefix on a decoder)."""
        B = batch.input_ids.shape[0]
        batch.input_ids = torch.cat([torch.full((B, 1), mode), batch.input_ids], dim=1)
        if batch.segment_ids is not None:
            batch.segment_ids = torch.cat([batch.segment_ids[:, :1], batch.segment_ids], dim=1)
        if self.decoder_only:
            batch.targets = torch.cat([torch.full((B, 1), IGNORE), batch.targets], dim=1)
            batch.prefix_lengths = batch.prefix_lengths + 1
        return batch

    def _sequential(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        """The S-denoiser: prefix LM with the prefix as input and the rest of the row as target."""
        B, T = tokens.shape
        split = torch.randint(1, T, (B,), generator=generator)  # (B,) prefix lengths
        pos = torch.arange(T)[None, :]
        in_prefix = pos < split[:, None]  # (B, T)
        mode = torch.full((B, 1), self.mode_ids[2])
        if self.decoder_only:  # [S2S] prefix suffix: the prefix read bidirectionally, the suffix predicted
            row = torch.cat([mode, tokens], dim=1)
            targets = row[:, 1:].clone()
            targets[in_prefix] = IGNORE  # target j is token j: inside the prefix it is in plain view
            batch = Batch(input_ids=row[:, :-1], targets=targets, prefix_lengths=split + 1)
            if self.document_mask:
                seg = torch.cat([segment_ids[:, :1], segment_ids], dim=1)
                batch.targets[seg[:, 1:] != seg[:, :-1]] = IGNORE
                batch.segment_ids = seg[:, :-1]
            return batch
        # encoder: [S2S] + prefix, right-padded; decoder: the suffix + EOS, right-padded with ignored targets
        inputs = torch.cat([mode, torch.where(in_prefix, tokens, self.pad_id)], dim=1)  # (B, T + 1)
        attention = torch.cat([torch.ones(B, 1, dtype=torch.long), in_prefix.long()], dim=1)
        src = split[:, None] + pos  # (B, T) decoder position j holds row position split + j
        valid = src < T
        rows = torch.arange(B)
        eos_at = T - split  # the first position past the suffix (split >= 1, so it is inside the T positions)
        targets = torch.where(valid, tokens.gather(1, src.clamp(max=T - 1)), IGNORE)
        targets[rows, eos_at] = self.eos_id
        decoder_inputs = torch.cat([torch.full((B, 1), self.start_id), targets[:, :-1]], dim=1)
        decoder_inputs = decoder_inputs.masked_fill(decoder_inputs == IGNORE, self.pad_id)
        batch = Batch(input_ids=inputs, targets=targets, attention_mask=attention, decoder_input_ids=decoder_inputs)
        if self.document_mask:
            batch.segment_ids = torch.cat([segment_ids[:, :1], segment_ids], dim=1).masked_fill(attention == 0, -1)
            tgt_seg = torch.where(valid, segment_ids.gather(1, src.clamp(max=T - 1)), -1)
            tgt_seg[rows, eos_at] = segment_ids[:, -1]
            dec_seg = torch.cat([tgt_seg[:, :1], tgt_seg[:, :-1]], dim=1)  # each position: its input's document
            batch.targets = targets.masked_fill((dec_seg != tgt_seg) & (tgt_seg >= 0), IGNORE)
            batch.decoder_segment_ids = dec_seg
        return batch

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        return token_loss(model(**batch.model_inputs()).logits, batch.targets)

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> UL2:
        o = cfg.objective
        modes = tuple(own_token_ids(tokenizer, cls.name, cls.special_tokens))
        return cls(cfg.data.seq_len, tokenizer.sentinel_ids, modes, required_id(tokenizer, "eos"),
                   required_id(tokenizer, "pad"), decoder_start_id(tokenizer),
                   (o.ul2_r_weight, o.ul2_x_weight, o.ul2_s_weight),
                   o.document_mask, decoder_only=cfg.model.arch == "decoder", special_ids=tokenizer.special_ids)
