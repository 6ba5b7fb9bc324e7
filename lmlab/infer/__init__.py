"""Using a trained model: fill-mask, and generation (greedy, sampling, beam search; see ``generate.py``)."""

from __future__ import annotations

import torch

from lmlab.errors import LmlabError
from lmlab.infer.generate import cut_at_eos, generate, generate_text


class InferenceError(LmlabError):
    """An input that a model cannot be used on (no mask token, an empty prompt, the wrong kind of model)."""


__all__ = ["InferenceError", "cut_at_eos", "fill_mask", "generate", "generate_text", "sample"]


@torch.no_grad()
def fill_mask(model: torch.nn.Module, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """The ``top_k`` most likely tokens, with probabilities, for each mask token in ``text``.

    The mask token is the tokenizer's (``[MASK]`` for tokenizers lmlab trains). ``tokenizer`` is an lmlab
    ``Tokenizer`` or an :class:`~lmlab.auto.AutoTokenizer`; the text gets the special tokens of the tokenizer's
    template when it has one (a BERT ``tokenizer.json`` adds [CLS] and [SEP]; lmlab's tokenizers add none).

    Returns:
        One list per mask token, in text order, of ``(token text, probability)``, most likely first.

    Raises:
        InferenceError: the text has no mask token, the tokenizer has none, ``top_k < 1``, the text is
            longer than the model's learned positions, or the model is an encoder-decoder.
    """
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    _, _, probs, ids = fill_mask_candidates(model, tok, text, top_k)
    return [[(tok.decode([i]), p) for i, p in zip(row_i, row_p, strict=True)]
            for row_i, row_p in zip(ids.tolist(), probs.tolist(), strict=True)]


@torch.no_grad()
def fill_mask_candidates(model: torch.nn.Module, tokenizer, text: str,
                         top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`fill_mask` ranks, as tensors: ``(ids, where, probs, candidates)``.

    ``ids`` (T,) is the encoded text (template special tokens included), ``where`` (M,) the positions of its
    mask tokens, ``probs`` (M, k) and ``candidates`` (M, k) the ``k = min(top_k, V)`` most likely tokens at
    each. The model runs bidirectionally (a decoder trained with masked LM too). Raises as :func:`fill_mask`.
    """
    tokenizer = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    if model.config.arch == "encoder-decoder":
        raise InferenceError("fill-mask needs an encoder or decoder trained with masked LM, "
                             "not an encoder-decoder")
    if top_k < 1:
        raise InferenceError(f"top_k must be >= 1, got {top_k}")
    if tokenizer.mask_id is None:
        raise InferenceError("the tokenizer has no mask token, so no text can ask for a masked prediction")
    ids = torch.tensor(tokenizer.tok.encode(text, add_special_tokens=True).ids)  # (T,)
    where = (ids == tokenizer.mask_id).nonzero().squeeze(1)  # (M,)
    if len(where) == 0:
        raise InferenceError(f"no mask token {tokenizer.id_to_token(tokenizer.mask_id)!r} in {text!r}")
    if len(ids) > model.config.max_seq_len and model.config.position == "learned":
        raise InferenceError(f"the text is {len(ids)} tokens long, above the model's maximum "
                             f"{model.config.max_seq_len}")
    device = next(model.parameters()).device
    hidden = model.hidden(ids[None].to(device), causal=False)  # (1, T, D)
    probs = model.logits(hidden[0, where.to(device)]).float().softmax(-1)  # (M, V)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return ids, where, top.values.cpu(), top.indices.cpu()


def sample(model: torch.nn.Module, tokenizer, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0) -> str:
    """Sample a continuation of ``prompt`` from a decoder; returns the prompt and the continuation.

    ``temperature <= 0`` decodes greedily. Generation stops at the tokenizer's EOS token (not included).
    It runs :func:`~lmlab.infer.generate.generate` (KV cache) with ``seed`` for the sampling generator.

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
    out = generate(model, torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                   temperature=temperature if temperature > 0 else 1.0, top_k=top_k or 0, seed=seed,
                   eos_token_id=tokenizer.eos_id)[0].tolist()
    return tokenizer.decode(ids + cut_at_eos(out[len(ids):], tokenizer.eos_id))
