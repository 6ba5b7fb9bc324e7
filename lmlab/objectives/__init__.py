"""Training objectives, registered by name. Adding one touches only this package (and a test)."""

from __future__ import annotations

import tokenizers

from lmlab.chat_template import CHATML_TOKENS, DEFAULT_CHAT_TEMPLATE
from lmlab.config import Config
from lmlab.errors import ConfigError
from lmlab.objectives.bart import BartDenoising
from lmlab.objectives.base import IGNORE, Batch, Objective
from lmlab.objectives.classify import Classify
from lmlab.objectives.clm import CausalLM
from lmlab.objectives.dpo import DPO
from lmlab.objectives.electra import Electra
from lmlab.objectives.fim import FillInTheMiddle
from lmlab.objectives.mlm import MaskedLM
from lmlab.objectives.prefix import PrefixLM
from lmlab.objectives.seq2seq import Seq2Seq
from lmlab.objectives.sft import SFT
from lmlab.objectives.span import SpanCorruption
from lmlab.objectives.ul2 import UL2
from lmlab.tokenizer import Tokenizer

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (CausalLM, MaskedLM, SpanCorruption, BartDenoising,
                                                                 FillInTheMiddle, PrefixLM, UL2, Electra)}
# Fine-tuning tasks: objectives over examples (lmlab.data.examples) rather than windows of a token stream.
TASKS: dict[str, type[Objective]] = {cls.name: cls for cls in (Seq2Seq, Classify, SFT, DPO)}
OBJECTIVES.update(TASKS)


def check_objective(cfg: Config) -> None:
    """Refuse, at load time, an unknown objective or one that makes no sense on the configured architecture."""
    name = cfg.objective.name
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective.name {name!r}; valid objectives: {', '.join(sorted(OBJECTIVES))}")
    archs = OBJECTIVES[name].archs
    if cfg.model.arch not in archs:
        raise ConfigError(f"objective {name!r} cannot train a model with arch {cfg.model.arch!r}; "
                          f"it trains: {', '.join(archs)}")


def objective_tokenizer(cfg: Config, tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer a run trains with: the shards' own, plus the special tokens its objective adds
    (fill-in-the-middle's sentinels, for example), and for an objective that renders conversations (sft, dpo) on a
    tokenizer without a chat template, the default (ChatML) template and its two tokens. New tokens get the next
    ids, so the shards stay valid."""
    check_objective(cfg)
    cls = OBJECTIVES[cfg.objective.name]
    tokens, template = cls.special_tokens, tokenizer.chat_template
    if cls.chat and template is None:
        tokens, template = (*tokens, *CHATML_TOKENS), DEFAULT_CHAT_TEMPLATE
    missing = [t for t in tokens if tokenizer.token_to_id(t) is None]
    if not missing and template == tokenizer.chat_template:
        return tokenizer
    tok = tokenizers.Tokenizer.from_str(tokenizer.to_json())
    tok.add_special_tokens(missing)
    return Tokenizer(tok, tokenizer.roles, [*tokenizer.additional_special_tokens, *missing], template)


def build_objective(cfg: Config, tokenizer: Tokenizer) -> Objective:
    """The objective named in ``cfg.objective``, set up with the tokenizer's special tokens."""
    check_objective(cfg)
    return OBJECTIVES[cfg.objective.name].from_config(cfg, tokenizer)


__all__ = ["DPO", "IGNORE", "OBJECTIVES", "TASKS", "BartDenoising", "Batch", "CausalLM", "Classify", "Electra",
           "FillInTheMiddle", "MaskedLM", "Objective", "PrefixLM", "SFT", "Seq2Seq", "SpanCorruption", "UL2",
           "build_objective", "check_objective", "objective_tokenizer"]
