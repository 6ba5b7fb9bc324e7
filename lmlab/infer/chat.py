"""Talking to an instruction-tuned decoder: a conversation kept as messages, rendered by the tokenizer's chat
template with the generation prompt, answered until the assistant's turn ends.

A turn ends at EOS or at the end-of-turn token of the common templates (ChatML's ``<|im_end|>``, Llama 3's
``<|eot_id|>``, Gemma's ``<end_of_turn>``...) when the vocabulary holds it as a special token: a model tuned
with the ``sft`` objective writes ``<|im_end|>`` after its answer, as it was taught. The oldest turns leave the
prompt when the conversation outgrows the model's context (a system message stays).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lmlab.chat_template import Message, render, template_variables
from lmlab.infer.generate import cut_at_eos, generate

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def _error(message: str):
    from lmlab.infer import InferenceError

    return InferenceError(message)


def stop_ids(tokenizer) -> list[int]:
    """The tokens that end an assistant's turn: EOS, and each of :data:`END_OF_TURN` that ``tokenizer`` holds
    as a special token (one that a text can only contain on purpose)."""
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    special = set(tok.special_ids)
    ids = [tok.eos_id] if tok.eos_id is not None else []
    for token in END_OF_TURN:
        i = tok.token_to_id(token)
        if i is not None and i in special and i not in ids:
            ids.append(i)
    return ids


class Chat:
    """A conversation with a decoder: :meth:`send` a user message, get the reply; the history is kept.

    ``generate_kwargs`` are :func:`~lmlab.infer.generate.generate`'s sampling options (``do_sample``,
    ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``, ``seed``).

    Raises:
        InferenceError: a model that is not a decoder, or a tokenizer without a chat template.
    """

    def __init__(self, model: nn.Module, tokenizer, system: str | None = None, max_new_tokens: int = 256,
                 **generate_kwargs: Any) -> None:
        self.tokenizer = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
        if model.config.arch != "decoder":
            raise _error(f"chat needs a decoder; this model is an {model.config.arch}")
        if self.tokenizer.chat_template is None:
            raise _error("this model's tokenizer has no chat template, so a conversation cannot be laid out; "
                         "fine-tune it with the sft objective first (it keeps one with the run's tokenizer)")
        if max_new_tokens < 1:
            raise _error(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model, self.max_new_tokens, self.options = model, max_new_tokens, generate_kwargs
        self.system = system
        self.variables = template_variables(self.tokenizer)
        self.stops = stop_ids(self.tokenizer)
        self.messages: list[Message] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def prompt_ids(self, messages: list[Message]) -> tuple[list[int], int]:
        """The prompt that asks for the next assistant turn of ``messages`` and the tokens left to answer in,
        the oldest turns dropped while it leaves fewer than ``max_new_tokens`` of the model's context."""
        context = self.model.config.max_seq_len
        head = 1 if messages and messages[0]["role"] == "system" else 0
        while True:
            text = render(self.tokenizer.chat_template, messages, add_generation_prompt=True, **self.variables)
            ids = self.tokenizer.encode(text)
            room = context - len(ids)
            if room >= self.max_new_tokens or len(messages) <= head + 1:
                break
            messages = messages[:head] + messages[head + 2:]  # the oldest exchange
        if room < 1:
            raise _error(f"the message takes {len(ids)} tokens with the template, and the model's context is "
                         f"{context}; write a shorter one")
        return ids, min(room, self.max_new_tokens)

    def send(self, text: str, streamer: Callable[[Tensor], None] | None = None) -> str:
        """Add the user's ``text`` to the conversation and return the assistant's reply (added too).
        ``streamer`` is called with each new token as :func:`~lmlab.infer.generate.generate` makes it."""
        if not text.strip():
            raise _error("the message is empty")
        messages = [*self.messages, {"role": "user", "content": text}]
        ids, room = self.prompt_ids(messages)
        out = generate(self.model, torch.tensor([ids]), max_new_tokens=room, eos_token_id=self.stops,
                       pad_token_id=self.tokenizer.pad_id, streamer=streamer, **self.options)
        reply = self.tokenizer.decode(cut_at_eos(out[0, len(ids):].tolist(), self.stops))
        self.messages = [*messages, {"role": "assistant", "content": reply}]
        return reply
