"""Helpers for the interop tests: tiny random Hugging Face models and the import/export parity check.

Models are built with ``transformers`` itself (no network), then every parameter and floating buffer is
perturbed, so that a zero bias, a unit norm weight or a zero ``final_logits_bias`` cannot hide a wrong map.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmlab.interop import load_hf, save_hf

V = 97
ATOL = 1e-4


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every saved floating tensor (tied ones once), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for t in model.state_dict(keep_vars=True).values():
            if id(t) in seen or not t.is_floating_point():
                continue
            seen.add(id(t))
            t.add_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def build(cls, config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return perturb(cls(config), seed)


def ids(B: int = 2, T: int = 12, seed: int = 0, low: int = 4) -> torch.Tensor:
    """Random token ids in [low, V) (below ``low`` lie the special ids the tiny configs use)."""
    return torch.randint(low, V, (B, T), generator=torch.Generator().manual_seed(seed))


def right_padding(x: torch.Tensor, lengths: list[int], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` with rows padded after ``lengths``; returns (ids, attention mask)."""
    mask = torch.zeros_like(x)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return x.masked_fill(mask == 0, pad_id), mask


def check_parity(hf_model: torch.nn.Module, auto_cls, tmp_path: Path, theirs: Callable, ours: Callable,
                 where: torch.Tensor | None = None, tokenizer=None):
    """Save ``hf_model``, import it, compare ``ours(lmlab_model)`` with ``theirs(hf_model)``; export it back,
    reload with ``auto_cls`` and compare again. ``where`` selects the positions to compare (real tokens).

    Returns the imported ``(model, tokenizer)`` and the reloaded Hugging Face model.
    """
    src = tmp_path / "hf"
    hf_model.save_pretrained(src)
    if tokenizer is not None:
        tokenizer(src)
    model, tok = load_hf(src)
    pick = (lambda t: t[where]) if where is not None else (lambda t: t)
    with torch.no_grad():
        ref, got = theirs(hf_model), ours(model)
        torch.testing.assert_close(pick(got), pick(ref), atol=ATOL, rtol=0)
        back = auto_cls.from_pretrained(save_hf(model, tok, tmp_path / "exported")).eval()
        assert type(back) is type(hf_model)
        torch.testing.assert_close(pick(theirs(back)), pick(got), atol=ATOL, rtol=0)
    return model, tok, back


PIECES = ["the", "quick", "brown", "fox", "café", "naïve", "Zürich", "中文", "分词", "don't", "e-mail:", "x@y.z",
          "3.14159", "(a)", "[b]", "{c}", "...", "!!", "  two  spaces", "\ttab", "antidisestablishmentarianism",
          "supercalifragilisticexpialidocious", "ÅNGSTRÖM", "résumé", "🎉", "Hello,", "WORLD", "über", "x²"]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def gpt2_files(path):
    """Train a small byte-level BPE and save it as GPT-2 does: vocab.json + merges.txt."""
    tok = HFTokenizers(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sentences(300, seed=1), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    path.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(path))
    return tok.get_vocab_size()
