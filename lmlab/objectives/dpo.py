"""Direct preference optimisation (DPO) of a decoder or an encoder-decoder on preference pairs: a prompt, a chosen
and a rejected answer.

Each answer makes a row as an sft example does: ``prompt [SEP] answer [EOS]``, or, in TRL's conversational form
(the prompt a list of messages, chosen and rejected lists holding the assistant's turn), the chat template's text
of the prompt with the generation prompt followed by what the answer's turns add to it. The completion's tokens
and EOS are scored. An encoder-decoder reads the row's prompt part with its encoder and predicts the answer and
EOS from its decoder's start token, as TRL's DPO does for encoder-decoders. With π the model and π_ref the
reference (the model before training), a pair's loss is a function of its un-scaled margin

    h = (log π(y⁺|x) − log π_ref(y⁺|x)) − (log π(y⁻|x) − log π_ref(y⁻|x)),   z = β h,

the log-probs summed over the completion's tokens, exactly as TRL defines them: ``sigmoid`` −log σ(z) (DPO), and
with label smoothing ε −(1 − ε) log σ(z) − ε log σ(−z) (cDPO); ``hinge`` relu(1 − z) (SLiC); ``ipo``
(h − 1/(2β))² with every log-prob averaged over its completion's tokens (IPO). The rewards TRL logs are
β (log π − log π_ref) of each answer.

The reference log-probs are computed once, before training, and stored beside the examples
(:mod:`lmlab.train.reference`), so no second model is held; a batch carries them (``Batch.reference``). The two
answers of a pair lie side by side in a batch, ``(B, 2, T)``, so a data-parallel rank's rows keep them together,
and go through the model in one forward pass. Dropout is turned off (as TRL does by default), so that before its
first update the model is the reference and every pair's loss is ln 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lmlab.chat_template import render
from lmlab.data.examples import Examples, Text
from lmlab.errors import TokenizerError
from lmlab.model.attention import Attention
from lmlab.objectives.base import IGNORE, Batch, pad_batch
from lmlab.objectives.sft import SFT
from lmlab.objectives.task import causal_rows

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected")


def preference_loss(policy: Tensor, reference: Tensor, beta: float, loss_type: str = "sigmoid",
                    label_smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """Each pair's loss and the two rewards, from log-probs of (chosen, rejected).

    Args:
        policy: (B, 2) log-probs under the model being trained (the gradient flows through them).
        reference: (B, 2) log-probs under the reference model.

    Returns:
        ``(losses, rewards)``: (B,) and (B, 2), the rewards β (policy − reference), detached.
    """
    ratios = policy - reference  # (B, 2) log π/π_ref of chosen, rejected
    h = ratios[:, 0] - ratios[:, 1]  # (B,) the un-scaled margin
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")  # ObjectiveConfig refuses it first
    return losses, beta * ratios.detach()


class DPO(SFT):
    name = "dpo"
    archs = ("decoder", "encoder-decoder")
    perplexity = False  # a loss over preference pairs, not a cross-entropy per token

    def __init__(self, tokenizer: Tokenizer, max_source: int, prefix: str = "", label_smoothing: float = 0.0, *,
                 beta: float = 0.1, loss_type: str = "sigmoid") -> None:
        super().__init__(tokenizer, max_source, prefix)
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing

    @classmethod
    def _options(cls, cfg: Config) -> dict:
        return {"beta": cfg.objective.beta, "loss_type": cfg.objective.loss_type}

    def attach(self, model: torch.nn.Module) -> None:
        super().attach(model)
        for m in model.modules():  # no dropout: the untrained model must score exactly as the reference did
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            elif isinstance(m, Attention):
                m.dropout = 0.0  # (its dropout_p)

    def input_tail(self) -> list[int]:
        return [self.sep]  # prompt [SEP] answer on either architecture: the rows the example shards hold

    def row(self, prompt: Text, completion: Text) -> tuple[list[int], list[int]]:
        """The row of one answer without its EOS, and 1 for each token of the answer (what example shards store).

        Raises:
            TokenizerError: a chat template that does not render the conversation, or whose text of the prompt
                is not the start of its text of the prompt and answer.
        """
        if isinstance(prompt, str):
            return super().row(prompt, completion)
        head = render(self.tokenizer.chat_template, prompt, add_generation_prompt=True, **self.variables)
        text = render(self.tokenizer.chat_template, [*prompt, *completion], **self.variables)
        if not text.startswith(head):
            raise TokenizerError("the chat template's text of the prompt (with the generation prompt) is not the "
                                 "start of its text of the prompt and answer, so the answer's tokens cannot be found")
        enc = self.tokenizer.tok.encode(text, add_special_tokens=False)
        return enc.ids, [int(end > len(head)) for _, end in enc.offsets]

    def make_batch(self, examples: Examples, generator: torch.Generator) -> Batch:
        if self.arch == "encoder-decoder":
            return self._encoder_decoder_batch(examples)
        rows, scored = [], []
        pairs = zip(examples.sources, examples.scored, examples.rejected, examples.rejected_scored, strict=True)
        for chosen, chosen_flags, rejected, rejected_flags in pairs:
            for ids, flags in ((chosen, chosen_flags), (rejected, rejected_flags)):
                rows.append([*ids.tolist(), self.eos][:self.max_len])
                scored.append([*flags.tolist(), True][:self.max_len])
        flat = causal_rows(rows, scored, self.pad)  # (2B, T): chosen, rejected, chosen, ...
        pair = lambda t: t.view(len(examples), 2, -1)  # (B, 2, T)
        return Batch(input_ids=pair(flat.input_ids), targets=pair(flat.targets),
                     attention_mask=pair(flat.attention_mask), reference=examples.reference)

    def _encoder_decoder_batch(self, examples: Examples) -> Batch:
        """Each answer's row split where its scored tokens start: the prompt part (``prompt [SEP]``, or the
        template's prompt with the generation prompt) to the encoder, the answer and EOS to predict after the
        decoder's start token."""
        sources, answers = [], []
        pairs = zip(examples.sources, examples.scored, examples.rejected, examples.rejected_scored, strict=True)
        for chosen, chosen_flags, rejected, rejected_flags in pairs:
            for ids, flags in ((chosen, chosen_flags), (rejected, rejected_flags)):
                first = int(np.argmax(flags)) if flags.any() else len(ids)  # the answer's first token
                sources.append(ids[:first].tolist()[:self.max_len])
                answers.append([*ids[first:].tolist()[:self.max_len - 1], self.eos])
        ids, mask = pad_batch(sources, pad=self.pad)  # (2B, S)
        decoder_ids, decoder_mask = pad_batch([[self.start, *a[:-1]] for a in answers], pad=self.pad)  # (2B, T)
        targets, _ = pad_batch(answers, pad=IGNORE)  # (2B, T)
        pair = lambda t: t.view(len(examples), 2, -1)  # (B, 2, ...)
        return Batch(input_ids=pair(ids), targets=pair(targets), attention_mask=pair(mask),
                     decoder_input_ids=pair(decoder_ids), decoder_attention_mask=pair(decoder_mask),
                     reference=examples.reference)

    def logps(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        """(B, 2) float64 log-probs of the chosen and rejected answers under ``model``, summed over their scored
        tokens, and (B, 2) the number of those tokens; one forward pass of the 2B rows. What the reference pass
        stores, and what the loss compares with it."""
        B = batch.input_ids.shape[0]
        targets = batch.targets.flatten(0, 1)  # (2B, T)
        hidden = model.hidden(**{k: t.flatten(0, 1) for k, t in batch.model_inputs().items()})  # (2B, T, D)
        scored = targets != IGNORE  # (2B, T)
        logits = model.logits(hidden[scored]).float()  # (N, V): the head at the scored positions only
        token = -F.cross_entropy(logits, targets[scored], reduction="none")  # (N,) log-prob of each scored token
        row = scored.nonzero()[:, 0]  # (N,) the row of each
        logps = torch.zeros(2 * B, dtype=torch.float64, device=hidden.device).index_add(0, row, token.double())
        return logps.view(B, 2), scored.sum(1).view(B, 2)

    def num_targets(self, batch: Batch) -> int:
        return batch.input_ids.shape[0]  # the loss is a mean over pairs

    def compare(self, policy: Tensor, reference: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each pair's loss (B,), its rewards (B, 2) and the log-probs compared (B, 2, detached), from the summed
        log-probs of :meth:`logps` under the model and the reference and their token counts (B, 2)."""
        reference = reference.to(policy)
        if self.loss_type == "ipo":  # IPO compares log-probs averaged over each answer's tokens (as TRL)
            policy, reference = policy / counts.clamp(min=1), reference / counts.clamp(min=1)
        losses, rewards = preference_loss(policy, reference, self.beta, self.loss_type, self.label_smoothing)
        return losses, rewards, policy.detach()

    @staticmethod
    def pair_metrics(rewards: Tensor, logps: Tensor) -> dict[str, Tensor]:
        """The sums over pairs :meth:`report` makes TRL's metrics of."""
        chosen, rejected = rewards.unbind(1)
        values = (chosen, rejected, (chosen > rejected).double(), chosen - rejected, logps[:, 0], logps[:, 1])
        return {k: v.sum() for k, v in zip(METRICS, values, strict=True)}

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        if batch.reference is None:
            raise ValueError("a dpo batch needs the reference log-probs (lmlab.train.reference computes them)")
        policy, counts = self.logps(model, batch)  # (B, 2), (B, 2)
        losses, rewards, logps = self.compare(policy, batch.reference, counts)
        n = torch.tensor(len(losses), device=losses.device)
        return losses.sum().float(), n, self.pair_metrics(rewards, logps)

    def report(self, sums: dict[str, float], num_targets: float) -> dict[str, float]:
        """TRL's names, each a mean over pairs: ``rewards/chosen``, ``rewards/rejected``, ``rewards/accuracies``
        (the share of pairs whose chosen answer has the higher reward), ``rewards/margins``, ``logps/chosen``,
        ``logps/rejected``."""
        return {k: sums[k] / max(num_targets, 1.0) for k in METRICS if k in sums}
