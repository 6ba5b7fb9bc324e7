"""Fill in the middle: the text between a prefix and a suffix, from a decoder trained with the ``fim`` objective.

The prompt is a document as :class:`~lmlab.objectives.fim.FillInTheMiddle` lays it out for training, cut where the
middle begins (prefix and suffix each encoded on its own, as the objective encodes the pieces)::

    PSM  <fim_prefix> prefix <fim_suffix> suffix <fim_middle>      -> middle <eos>
    SPM  <fim_prefix> <fim_suffix> suffix <fim_middle> prefix      -> middle <eos>

The model writes the middle and closes the document with the separator the shards put after every document
(the eos token), where generation stops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from lmlab.infer import InferenceError, cut_at_eos
from lmlab.infer.generate import generate
from lmlab.objectives.base import pad_batch
from lmlab.objectives.fim import FillInTheMiddle, fim_sequence, separator_ids

Mode = Literal["psm", "spm"]
MODES = ("psm", "spm")


def infill_prompt(tokenizer: Any, prefix: str, suffix: str, mode: Mode = "psm") -> list[int]:
    """The token ids that ask for the middle between ``prefix`` and ``suffix``, in the ``mode`` arrangement.

    ``tokenizer`` is an lmlab ``Tokenizer`` or an :class:`~lmlab.auto.AutoTokenizer`.

    Raises:
        InferenceError: the tokenizer lacks the FIM tokens (the model was not trained with ``fim``), or an
            unknown mode.
    """
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    if mode not in MODES:
        raise InferenceError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    sentinels = tuple(tok.token_to_id(t) for t in FillInTheMiddle.special_tokens)
    if None in sentinels:
        missing = [t for t, i in zip(FillInTheMiddle.special_tokens, sentinels, strict=True) if i is None]
        raise InferenceError(f"the tokenizer has no {', '.join(missing)} token: infill needs a decoder trained with "
                             "the fill-in-the-middle objective (objective.name = \"fim\"), whose tokenizer has them")
    pre, suf = tok.encode_batch([prefix, suffix])
    return fim_sequence(pre, [], suf, sentinels, spm=mode == "spm")


@torch.no_grad()
def infill(model: torch.nn.Module, tokenizer: Any, prefix: str | list[str], suffix: str | list[str],
           mode: Mode = "psm", max_new_tokens: int = 64, **generate_kwargs: Any) -> str | list[str]:
    """The middle between ``prefix`` and ``suffix``, written by a decoder trained with the ``fim`` objective.

    Generation (:func:`lmlab.generate`, greedy unless ``do_sample=True``; ``generate_kwargs`` as there) stops at
    the end of the document, the tokenizer's eos (or ``[SEP]``) token; a list of prefixes and suffixes is
    generated as one left-padded batch.

    Args:
        mode: ``"psm"`` or ``"spm"``, the arrangement the model was trained on (see :func:`trained_mode`).

    Returns:
        The middle text (without special tokens); a list of them for lists of prefixes and suffixes.

    Raises:
        InferenceError: prefixes and suffixes that do not pair up, a tokenizer without the FIM tokens, a model
            that is not a decoder, or a prompt + ``max_new_tokens`` longer than the model's context.
    """
    single = isinstance(prefix, str)
    prefixes, suffixes = ([prefix], [suffix]) if single else (list(prefix), list(suffix))
    if isinstance(suffix, str) != single or len(prefixes) != len(suffixes):
        raise InferenceError("give one prefix and one suffix, or lists of prefixes and suffixes of the same length")
    if model.config.arch != "decoder":
        raise InferenceError(f"infill needs a decoder trained with the fim objective; this model is an "
                             f"{model.config.arch}")
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    prompts = [infill_prompt(tok, p, s, mode) for p, s in zip(prefixes, suffixes, strict=True)]
    ids, mask = pad_batch(prompts, left=True, pad=tok.pad_id if tok.pad_id is not None else 0)
    options = {"eos_token_id": separator_ids(tok), "pad_token_id": tok.pad_id, **generate_kwargs}
    out = generate(model, ids, mask, max_new_tokens=max_new_tokens, **options)  # (B, T + new)
    middles = [tok.decode_generated(cut_at_eos(row, options["eos_token_id"])) for row in out[:, ids.shape[1]:].tolist()]
    return middles[0] if single else middles


def trained_mode(path: str | Path) -> Mode:
    """The arrangement a checkpoint was trained on most: SPM when its training configuration has
    ``objective.fim_spm_rate`` above 0.5, else PSM (also when it has no training configuration)."""
    from lmlab.auto import trained_objective_config

    objective = trained_objective_config(path)
    spm_rate = objective.get("fim_spm_rate", 0.5) if objective.get("name") == "fim" else 0.0
    return "spm" if isinstance(spm_rate, (int, float)) and spm_rate > 0.5 else "psm"


__all__ = ["MODES", "Mode", "infill", "infill_prompt", "trained_mode"]
