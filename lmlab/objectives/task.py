"""What the fine-tuning objectives (``seq2seq``, ``classify``) share: how an example becomes a row of tokens.

They train on examples (:class:`lmlab.data.examples.Examples`), not on windows of a token stream: each row is
one example, right-padded, with the special tokens the model's tokenizer puts around a text (its template,
e.g. BERT's ``[CLS] ... [SEP]`` or T5's ``... </s>``), an optional source prefix and truncation to the
configured lengths. The same formatting serves training, evaluation and the pipelines, so a model is always
used the way it was fine-tuned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from lmlab.objectives.base import Objective

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


def template(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's own template puts before and after a single text (``[CLS]`` / ``[SEP]`` for
    BERT, nothing / ``</s>`` for T5, nothing for GPT-2 and lmlab's tokenizers)."""
    probe = "lmlab probe"
    plain = tokenizer.tok.encode(probe, add_special_tokens=False).ids
    full = tokenizer.tok.encode(probe, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    return [], []


class TaskObjective(Objective):
    """Base of the example-based objectives: the input row of an example and its length limits."""

    def __init__(self, tokenizer: Tokenizer, max_source: int, prefix: str = "", label_smoothing: float = 0.0
                 ) -> None:
        self.tokenizer = tokenizer
        self.max_source = max_source
        self.prefix = tokenizer.encode(prefix) if prefix else []
        self.label_smoothing = label_smoothing
        self.head, self.tail = template(tokenizer)
        self.pad = next(i for i in (tokenizer.pad_id, tokenizer.eos_id, 0) if i is not None)
        self.arch = ""  # set by attach()

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> TaskObjective:
        return cls(tokenizer, cfg.data.seq_len, cfg.objective.source_prefix, cfg.objective.label_smoothing,
                   **cls._options(cfg))

    @classmethod
    def _options(cls, cfg: Config) -> dict:
        return {}

    def attach(self, model: torch.nn.Module) -> None:
        self.arch = model.arch

    def _row(self, tokens: np.ndarray | list[int], head: list[int], tail: list[int]) -> list[int]:
        """``head + prefix + tokens + tail``, the tokens cut so the row holds at most ``max_source`` ids."""
        room = max(self.max_source - len(head) - len(self.prefix) - len(tail), 1)
        return [*head, *self.prefix, *np.asarray(tokens[:room]).tolist(), *tail]

    def source_room(self) -> int:
        """How many tokens of a source fit in a row (the rest is cut); what truncation is counted against."""
        extra = len(self.head) + len(self.prefix) + len(self.input_tail())
        return max(self.max_source - extra, 1)

    def input_tail(self) -> list[int]:
        """The ids after the source (the template's, or the objective's own where the template has none)."""
        return self.tail

    def input_ids(self, tokens: np.ndarray | list[int]) -> list[int]:
        """The model's input row for one source (or text to classify): what training, evaluation and the
        pipelines all feed the model (for a decoder, the prompt its output continues)."""
        return self._row(tokens, self.head, self.input_tail())

    def encode(self, text: str) -> list[int]:
        """:meth:`input_ids` of a text."""
        return self.input_ids(self.tokenizer.encode(text))
