"""Sequence classification fine-tuning: a text to one of N labels.

An encoder classifies its first token (``[CLS]``) through the pooler and the classifier, as BERT's
``BertForSequenceClassification``; a decoder classifies the hidden state of its last real token (EOS, appended
to every text), as ``GPT2ForSequenceClassification``. Labels are strings in the data; the model's
``id2label`` keeps their names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.data.examples import Examples
from lmlab.errors import ConfigError
from lmlab.objectives.base import Batch, pad_batch
from lmlab.objectives.task import TaskObjective


class Classify(TaskObjective):
    name = "classify"
    archs = ("encoder", "decoder")
    perplexity = False  # a cross-entropy over labels, not over tokens

    def attach(self, model: torch.nn.Module) -> None:
        super().attach(model)
        if getattr(model, "classifier", None) is None:
            raise ConfigError("the classify objective needs a model with a classifier (model.num_labels > 0); "
                              "`lmlab finetune` adds one for the labels of the data")

    def _ends(self) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        if self.head or self.tail:  # the tokenizer's own template: [CLS] ... [SEP] for BERT
            return self.head, self.tail or ([tok.eos_id] if self.arch == "decoder" and tok.eos_id is not None
                                            else [])
        if self.arch == "decoder":  # the last real token is what a decoder classifies: EOS
            return [], [tok.eos_id] if tok.eos_id is not None else []
        return ([tok.cls_id] if tok.cls_id is not None else []), ([tok.sep_id] if tok.sep_id is not None else [])

    def input_tail(self) -> list[int]:
        return self._ends()[1]

    def input_ids(self, tokens) -> list[int]:
        head, tail = self._ends()
        return self._row(tokens, head, tail)

    def make_batch(self, examples: Examples, generator: torch.Generator) -> Batch:
        ids, mask = pad_batch([self.input_ids(s) for s in examples.sources], pad=self.pad)  # (B, T)
        return Batch(input_ids=ids, targets=examples.labels.long(), attention_mask=mask)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        hidden = model.hidden(batch.input_ids, attention_mask=batch.attention_mask)  # (B, T, D)
        logits = model.classify(hidden, attention_mask=batch.attention_mask).float()  # (B, num_labels)
        loss = F.cross_entropy(logits, batch.targets, reduction="sum", label_smoothing=self.label_smoothing)
        return loss, batch.targets.new_tensor(len(batch.targets)), {
            "correct": (logits.argmax(-1) == batch.targets).sum()}
