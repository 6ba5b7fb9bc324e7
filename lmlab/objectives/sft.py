"""Supervised fine-tuning of a decoder on instructions (SFT): prompt/completion pairs and conversations.

A ``{"prompt", "completion"}`` example is laid out as seq2seq lays out a decoder row, ``prompt [SEP]
completion``; a ``{"messages": [...]}`` conversation is rendered by the tokenizer's chat template
(:mod:`lmlab.chat_template`; ChatML when the tokenizer has none) and tokenized whole. EOS ends every row. The loss
is on the completion, or on the assistant turns (the text each adds after the generation prompt, its end
marker included), and on EOS; ``train_on_prompt`` scores every token. Padding is never scored, by position, so
a pad id equal to EOS does not hide the EOS. A row longer than ``data.seq_len`` is cut at its end.

With ``packing``, the sampler's items are rows of up to ``data.seq_len`` tokens holding several examples
(:class:`lmlab.data.examples.PackedDataset`); each example is its own segment, so it attends only to itself and
its positions start at 0, exactly as if it were alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from lmlab.chat_template import assistant_spans, prompt_messages, render, template_variables
from lmlab.data.examples import Examples, Text
from lmlab.errors import ConfigError
from lmlab.objectives.base import Batch
from lmlab.objectives.seq2seq import Seq2Seq
from lmlab.objectives.task import causal_rows

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


class SFT(Seq2Seq):
    name = "sft"
    archs = ("decoder",)
    chat = True  # a tokenizer without a chat template gets the default one (objective_tokenizer)

    def __init__(self, tokenizer: Tokenizer, max_source: int, prefix: str = "", label_smoothing: float = 0.0, *,
                 train_on_prompt: bool = False, packing: bool = False) -> None:
        super().__init__(tokenizer, max_source, prefix, label_smoothing, max_source)
        if tokenizer.chat_template is None:
            raise ConfigError("the sft objective needs a tokenizer with a chat template; build it with the "
                              "tokenizer `lmlab.objectives.objective_tokenizer(cfg, tokenizer)` returns, which "
                              "adds the default (ChatML) template and its tokens (finetune does this)")
        self.max_len = max_source  # the longest row, prompt + completion + EOS
        self.train_on_prompt, self.packing = train_on_prompt, packing
        self.variables = template_variables(tokenizer)
        self.arch = "decoder"

    @classmethod
    def _options(cls, cfg: Config) -> dict:
        return {"train_on_prompt": cfg.objective.train_on_prompt, "packing": cfg.objective.packing}

    def row(self, source: Text, target: str) -> tuple[list[int], list[int]]:
        """The row of one example without its EOS, and 1 for each token the loss scores (``train_on_prompt``
        aside): the completion's, or the assistant turns'. What example shards store.

        Raises:
            TokenizerError: a chat template that does not render the conversation.
        """
        if isinstance(source, str):
            prompt, completion = self.input_ids(self.tokenizer.encode(source)), self.tokenizer.encode(target)
            return prompt + completion, [0] * len(prompt) + [1] * len(completion)
        text, spans = assistant_spans(self.tokenizer.chat_template, source, **self.variables)
        enc = self.tokenizer.tok.encode(text, add_special_tokens=False)
        # a token is scored when it overlaps an assistant span (as transformers' assistant_masks)
        return enc.ids, [int(any(start < b and end > a for a, b in spans)) for start, end in enc.offsets]

    def encode(self, source: Text) -> list[int]:
        """The prompt the model continues: ``prompt [SEP]``, or a conversation before its last assistant turn
        through the chat template with the generation prompt."""
        if isinstance(source, str):
            return super().encode(source)
        text = render(self.tokenizer.chat_template, prompt_messages(source), add_generation_prompt=True,
                      **self.variables)
        return self.tokenizer.encode(text)

    def make_batch(self, examples: Examples, generator: torch.Generator) -> Batch:
        rows, scored = [], []
        for ids, flags in zip(examples.sources, examples.scored, strict=True):
            rows.append([*ids.tolist(), self.eos][:self.max_len])
            flags = np.ones_like(flags) if self.train_on_prompt else flags
            scored.append([*flags.tolist(), True][:self.max_len])
        return causal_rows(rows, scored, self.pad, examples.packs)
