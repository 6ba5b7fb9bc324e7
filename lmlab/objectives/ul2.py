"""UL2's mixture of denoisers (Tay et al. 2022), on an encoder-decoder or on a decoder.

Each batch is made by one denoiser, drawn with the configured weights for the three families (and
uniformly within a family), with its mode token prepended to the inputs:

    R-denoiser  [NLU]  span corruption, mean span 3 and 8, 15% noise
    X-denoiser  [NLG]  span corruption, (mean 3, 50%), (8, 50%), (64, 15%), (64, 50%)
    S-denoiser  [S2S]  prefix LM: a random prefix is the input, the rest of the row the target

The span denoisers are :class:`~lmlab.objectives.span.SpanCorruption` (exact T5 noise counts and
lengths; each fills the encoder length); on a decoder, inputs and targets form one row read through a
prefix-LM mask. The mode tokens are added to the tokenizer when it lacks them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lmlab.objectives.base import IGNORE, Batch, Objective, decoder_start_id, required_id, token_loss
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

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        family = int(torch.multinomial(self.weights, 1, generator=generator))
        if family == 2:
            return self._sequential(tokens[:, :self.seq_len], segment_ids[:, :self.seq_len], generator)
        options = self.families[family]
        denoiser = options[int(torch.randint(len(options), (1,), generator=generator))]
        batch = denoiser.make_batch(tokens, segment_ids, generator)
        return self._with_mode(batch, self.mode_ids[family])

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
        modes = tuple(tokenizer.token_to_id(t) for t in cls.special_tokens)
        return cls(cfg.data.seq_len, tokenizer.sentinel_ids, modes, required_id(tokenizer, "eos"),
                   required_id(tokenizer, "pad"), decoder_start_id(tokenizer),
                   (o.ul2_r_weight, o.ul2_x_weight, o.ul2_s_weight),
                   o.document_mask, decoder_only=cfg.model.arch == "decoder", special_ids=tokenizer.special_ids)
