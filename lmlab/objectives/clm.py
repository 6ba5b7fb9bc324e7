"""Causal language modelling: predict each token from the ones before it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lmlab.objectives.base import IGNORE, Batch, Objective, chunked_token_loss, token_loss

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


class CausalLM(Objective):
    """Next-token prediction, ``log P(x) = sum_t log P(x_t | x_<t)``.

    With ``document_mask`` the rows the sampler packs stay separate: attention
    never crosses a document boundary, positions restart at each document, and
    the first token of a document is not predicted from the one before it.
    """

    name = "clm"
    archs = ("decoder",)
    extra_tokens = 1  # inputs and targets are the same row shifted by one

    def __init__(self, document_mask: bool = True, loss_chunk: int = 0) -> None:
        self.document_mask = document_mask
        self.loss_chunk = loss_chunk  # > 0: logits and cross-entropy this many tokens at a time (large vocabularies)
        self.sparse_head = loss_chunk > 0  # the chunked loss projects the scored positions only

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        inputs, targets = tokens[:, :-1], tokens[:, 1:].clone()  # (B, T) each
        if not self.document_mask:
            return Batch(input_ids=inputs, targets=targets)
        seg = segment_ids[:, :-1]
        targets[segment_ids[:, 1:] != seg] = IGNORE  # a document's first token, seen from the previous one
        return Batch(input_ids=inputs, targets=targets, segment_ids=seg)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if self.loss_chunk:
            loss, n, _ = chunked_token_loss(model, model.hidden(**batch.model_inputs()), batch.targets,
                                            self.loss_chunk)
        else:
            loss, n, _ = token_loss(model(**batch.model_inputs()).logits, batch.targets)  # logits (B, T, V)
        return loss, n, {}

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> CausalLM:
        return cls(document_mask=cfg.objective.document_mask, loss_chunk=cfg.objective.loss_chunk)
