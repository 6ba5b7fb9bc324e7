"""Sequence-to-sequence fine-tuning (translation, summarization, any text to text).

Encoder-decoder: the source goes to the encoder, the decoder reads ``[start] + target`` (its own
``decoder_start_token_id``) and predicts ``target + [eos]``. Decoder-only: one row ``source + [sep] + target +
[eos]``, scored on the target and EOS only; at inference the prompt ``source + [sep]`` is left-padded. Padding is
never scored; the source may get a prefix (T5's ``"translate German to English: "``); sources longer than
``data.seq_len`` and targets longer than ``data.decoder_seq_len`` are cut (and counted where the run starts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.data.examples import Examples
from lmlab.objectives.base import IGNORE, Batch, decoder_start_id, pad_batch, required_id
from lmlab.objectives.task import TaskObjective, causal_rows

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


class Seq2Seq(TaskObjective):
    name = "seq2seq"
    archs = ("decoder", "encoder-decoder")
    sparse_head = True  # the head runs at the scored (target) positions only

    def __init__(self, tokenizer: Tokenizer, max_source: int, prefix: str = "", label_smoothing: float = 0.0,
                 max_target: int = 0) -> None:
        super().__init__(tokenizer, max_source, prefix, label_smoothing)
        self.max_target = max_target or max_source
        self.eos = required_id(tokenizer, "eos")
        self.sep = tokenizer.sep_id if tokenizer.sep_id is not None else self.eos
        self.start: int | None = None  # the decoder's start token (encoder-decoders; set by attach)

    @classmethod
    def _options(cls, cfg: Config) -> dict:
        return {"max_target": cfg.data.decoder_seq_len}

    def attach(self, model: torch.nn.Module) -> None:
        super().attach(model)
        if self.arch == "encoder-decoder":
            self.start = decoder_start_id(self.tokenizer, model)

    def input_tail(self) -> list[int]:
        if self.arch == "decoder":
            return [self.sep]  # the prompt ends with the separator; the target follows it
        return self.tail or [self.eos]  # T5: "... </s>"

    def target_ids(self, tokens: np.ndarray | list[int]) -> list[int]:
        """The tokens the model must produce for a target: cut to ``max_target - 1``, then EOS."""
        return [*np.asarray(tokens[:self.max_target - 1]).tolist(), self.eos]

    def make_batch(self, examples: Examples, generator: torch.Generator) -> Batch:
        sources = [self.input_ids(s) for s in examples.sources]
        targets = [self.target_ids(t) for t in examples.targets]
        if self.arch == "encoder-decoder":
            ids, mask = pad_batch(sources, pad=self.pad)  # (B, S)
            dec_ids, dec_mask = pad_batch([[self.start, *t[:-1]] for t in targets], pad=self.pad)  # (B, T)
            tgt, _ = pad_batch(targets, pad=IGNORE)  # (B, T), IGNORE at padding
            return Batch(input_ids=ids, targets=tgt, attention_mask=mask, decoder_input_ids=dec_ids,
                         decoder_attention_mask=dec_mask)
        return causal_rows([s + t for s, t in zip(sources, targets, strict=True)],
                           [[False] * len(s) + [True] * len(t) for s, t in zip(sources, targets, strict=True)],
                           self.pad)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        hidden = model.hidden(**batch.model_inputs())  # (B, T, D), the decoder's
        scored = batch.targets != IGNORE  # (B, T)
        logits = model.logits(hidden[scored]).float()  # (N, V) at the scored positions only
        t = batch.targets[scored]
        loss = F.cross_entropy(logits, t, reduction="sum", label_smoothing=self.label_smoothing)
        return loss, scored.sum(), {"correct": (logits.argmax(-1) == t).sum()}
