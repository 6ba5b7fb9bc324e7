"""Training objectives, registered by name. Adding one touches only this package (and a test)."""

from __future__ import annotations

from lmlab.config import Config
from lmlab.errors import ConfigError
from lmlab.objectives.base import IGNORE, Batch, Objective
from lmlab.objectives.clm import CausalLM
from lmlab.objectives.mlm import MaskedLM

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (CausalLM, MaskedLM)}


def check_objective(cfg: Config) -> None:
    """Refuse, at load time, an unknown objective or one that makes no sense on the configured architecture."""
    name = cfg.objective.name
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; valid objectives: {', '.join(sorted(OBJECTIVES))}")
    archs = OBJECTIVES[name].archs
    if cfg.model.arch not in archs:
        raise ConfigError(f"objective {name!r} cannot train a model with arch {cfg.model.arch!r}; "
                          f"it trains: {', '.join(archs)}")


def build_objective(cfg: Config, tokenizer) -> Objective:
    """The objective named in ``cfg.objective``, set up with the tokenizer's special tokens."""
    check_objective(cfg)
    o = cfg.objective
    if o.name == "clm":
        return CausalLM(document_mask=o.document_mask)
    return MaskedLM(mask_id=tokenizer.mask_id, special_ids=list(tokenizer.special_ids),
                    vocab_size=tokenizer.vocab_size, mask_prob=o.mask_prob,
                    mask_token_frac=o.mask_token_frac, random_token_frac=o.random_token_frac)


__all__ = ["IGNORE", "OBJECTIVES", "Batch", "CausalLM", "MaskedLM", "Objective", "build_objective",
           "check_objective"]
