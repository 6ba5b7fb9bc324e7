"""Training objectives, registered by name. Adding one touches only this package (and a test)."""

from __future__ import annotations

from lmlab.config import Config
from lmlab.errors import ConfigError
from lmlab.objectives.bart import BartDenoising
from lmlab.objectives.base import IGNORE, Batch, Objective
from lmlab.objectives.clm import CausalLM
from lmlab.objectives.mlm import MaskedLM
from lmlab.objectives.span import SpanCorruption
from lmlab.tokenizer import Tokenizer

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (CausalLM, MaskedLM, SpanCorruption, BartDenoising)}


def check_objective(cfg: Config) -> None:
    """Refuse, at load time, an unknown objective or one that makes no sense on the configured architecture."""
    name = cfg.objective.name
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; valid objectives: {', '.join(sorted(OBJECTIVES))}")
    archs = OBJECTIVES[name].archs
    if cfg.model.arch not in archs:
        raise ConfigError(f"objective {name!r} cannot train a model with arch {cfg.model.arch!r}; "
                          f"it trains: {', '.join(archs)}")


def build_objective(cfg: Config, tokenizer: Tokenizer) -> Objective:
    """The objective named in ``cfg.objective``, set up with the tokenizer's special tokens."""
    check_objective(cfg)
    return OBJECTIVES[cfg.objective.name].from_config(cfg, tokenizer)


__all__ = ["IGNORE", "OBJECTIVES", "BartDenoising", "Batch", "CausalLM", "MaskedLM", "Objective", "SpanCorruption",
           "build_objective", "check_objective"]
