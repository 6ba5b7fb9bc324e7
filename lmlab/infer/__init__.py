"""Using a trained model: fill-mask and sampling."""

from __future__ import annotations

import torch

from lmlab.errors import LmlabError


class InferenceError(LmlabError):
    """An input that a model cannot be used on (no mask token, an empty prompt, the wrong kind of model)."""


@torch.no_grad()
def fill_mask(model: torch.nn.Module, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``top_k`` most likely tokens, with probabilities, for each mask token in ``text``.

    The mask token is the tokenizer's (``[MASK]`` for tokenizers lmlab trains).

    Raises:
        InferenceError: the text has no mask token, or the model is not bidirectional.
    """
    if model.config.arch == "encoder-decoder":
        raise InferenceError("fill-mask needs an encoder or decoder trained with masked LM, "
                             "not an encoder-decoder")
    ids = torch.tensor([tokenizer.encode(text)])  # (1, T)
    where = (ids[0] == tokenizer.mask_id).nonzero().squeeze(1)
    if len(where) == 0:
        raise InferenceError(f"no mask token {tokenizer.id_to_token(tokenizer.mask_id)!r} in {text!r}")
    if ids.shape[1] > model.config.max_seq_len and model.config.position == "learned":
        raise InferenceError(f"the text is {ids.shape[1]} tokens long, above the model's maximum "
                             f"{model.config.max_seq_len}")
    device = next(model.parameters()).device
    hidden = model.hidden(ids.to(device), causal=False)  # (1, T, D)
    probs = model.logits(hidden[0, where]).float().softmax(-1)  # (M, V)
    top = probs.topk(top_k, dim=-1)
    return [[(tokenizer.decode([i]), p) for i, p in zip(row_i.tolist(), row_p.tolist(), strict=True)]
            for row_i, row_p in zip(top.indices, top.values, strict=True)]


@torch.no_grad()
def sample(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0) -> str:
    """Sample a continuation of ``prompt`` from a decoder; returns the prompt and the continuation.

    Raises:
        InferenceError: an empty prompt, a prompt longer than the context, or a model that is not a decoder.
    """
    if model.config.arch != "decoder":
        raise InferenceError(f"generation needs a decoder; this model is an {model.config.arch}")
    if max_new_tokens < 0:
        raise InferenceError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise InferenceError("the prompt is empty")
    limit = model.config.max_seq_len
    if len(ids) + max_new_tokens > limit and model.config.position == "learned":
        raise InferenceError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                             f"model's context of {limit} tokens")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.tensor([ids], device=device)  # (1, T)
    out = list(ids)
    for _ in range(max_new_tokens):
        logits = model(x).logits[0, -1].float()  # (V,)
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
        if nxt == tokenizer.eos_id:
            break
        out.append(nxt)
        x = torch.tensor([out], device=device)
    return tokenizer.decode(out)
