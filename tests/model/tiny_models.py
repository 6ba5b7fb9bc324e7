"""Shared helpers for the model tests: tiny seeded models and token ids."""

import torch

from lmlab.config import PRESETS, model_preset
from lmlab.model import build_model

TINY = sorted(name for name in PRESETS if name.endswith("-tiny"))
V = 101


def tiny(name: str, **overrides) -> torch.nn.Module:
    """A tiny preset model in eval mode, seeded."""
    torch.manual_seed(0)
    return build_model(model_preset(name, vocab_size=V, **overrides)).eval()


def ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))

