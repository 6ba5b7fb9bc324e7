"""Masked language modelling (BERT): corrupt a fraction of tokens, predict the originals."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.objectives.base import IGNORE, Batch, Objective


class MaskedLM(Objective):
    """BERT's masked LM.

    Each non-special token is chosen with probability ``mask_prob``; a chosen
    token becomes the mask token with probability ``mask_token_frac``, a random
    (non-special) token with probability ``random_token_frac``, and stays as it
    is otherwise. Only chosen tokens are scored, and the output projection is
    computed only at those positions (15% of the full logits by default).
    Packed documents do not attend to each other.
    """

    name = "mlm"
    archs = ("encoder", "decoder")  # a decoder runs bidirectionally for MLM
    extra_tokens = 0

    def __init__(self, mask_id: int, special_ids: list[int], vocab_size: int, mask_prob: float = 0.15,
                 mask_token_frac: float = 0.8, random_token_frac: float = 0.1) -> None:
        self.mask_id = mask_id
        self.mask_prob = mask_prob
        self.head_fraction = mask_prob  # logits only at the chosen positions
        self.mask_token_frac = mask_token_frac
        self.random_token_frac = random_token_frac
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[torch.tensor(sorted(special_ids), dtype=torch.long)] = True
        self.is_special = is_special
        self.replacements = (~is_special).nonzero().squeeze(1)  # ids a "random token" is drawn from

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        # One uniform draw per token decides both whether it is chosen and how it is corrupted:
        # u < p: chosen; u < p * mask_frac: [MASK]; next p * random_frac: random token; rest of u < p: kept.
        u = torch.rand(tokens.shape, generator=generator)  # (B, T)
        chosen = (u < self.mask_prob) & ~self.is_special[tokens]
        to_mask = chosen & (u < self.mask_prob * self.mask_token_frac)
        to_random = chosen & ~to_mask & (u < self.mask_prob * (self.mask_token_frac + self.random_token_frac))
        random_ids = self.replacements[torch.randint(len(self.replacements), tokens.shape, generator=generator)]
        inputs = torch.where(to_mask, self.mask_id, torch.where(to_random, random_ids, tokens))
        targets = torch.where(chosen, tokens, IGNORE)
        return Batch(input_ids=inputs, targets=targets, segment_ids=segment_ids)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        hidden = model.hidden(**batch.model_inputs(), causal=False)  # (B, T, D)
        scored = batch.targets != IGNORE
        logits = model.logits(hidden[scored])  # (N, V): the projection only where it is scored
        targets = batch.targets[scored]
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        correct = (logits.argmax(-1) == targets).sum()
        return loss, scored.sum(), {"correct": correct}
