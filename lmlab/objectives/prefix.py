"""Prefix LM: a decoder reads a prefix bidirectionally and predicts the rest of the row causally.

The split point is drawn uniformly per row (at least one token on each side); only the suffix is scored.
The model sees ``prefix_lengths`` and opens the causal mask over the prefix (see
:func:`lmlab.model.attention.build_mask`); packed documents stay apart as in causal LM.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmlab.objectives.base import IGNORE, Batch
from lmlab.objectives.clm import CausalLM


class PrefixLM(CausalLM):
    """Causal LM with a bidirectional prefix of random length; loss on the suffix only."""

    name = "prefix_lm"
    archs = ("decoder",)

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        batch = super().make_batch(tokens, segment_ids, generator)
        B, T = batch.input_ids.shape
        prefix = torch.randint(1, T, (B,), generator=generator)  # (B,) positions 0..prefix-1 are the prefix
        # position t predicts token t + 1; the first scored target is the first token after the prefix
        batch.targets[torch.arange(T)[None, :] < (prefix - 1)[:, None]] = IGNORE
        batch.prefix_lengths = prefix
        return batch
