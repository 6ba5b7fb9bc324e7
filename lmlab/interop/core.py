"""What every Hugging Face family shares: reading a model directory, applying a weight-name map both ways,
choosing the family of an lmlab config, and the tokenizer.

A family module (``bert.py``, ``gpt2.py``, ...) gives a :class:`Family`: how its ``config.json`` maps to a
:class:`~lmlab.config.ModelConfig` and back, and its weight-name map, a list of :class:`Rule` (one lmlab
parameter from one or more Hugging Face tensors). Nothing here looks at a model's name; the config fields and
the tensors in the checkpoint decide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from lmlab.config import ModelConfig
from lmlab.errors import ConfigError, InteropError

CONFIG = "config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"

# ---------------------------------------------------------------------------------------------- config.json


class HFConfig:
    """A Hugging Face ``config.json`` with lookups that name the file and the key when something is wrong."""

    def __init__(self, raw: dict[str, Any], path: Path) -> None:
        self.raw, self.path = raw, path

    @property
    def model_type(self) -> str:
        return self.raw.get("model_type", "")

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``; ``default`` when it is absent or null (Hugging Face's class default)."""
        value = self.raw.get(key)
        return default if value is None else value

    def int(self, key: str, default: int | None = None) -> int:
        """An integer field; required when ``default`` is None."""
        value = self.get(key, default)
        if value is None:
            raise InteropError(f"{self.path} has no {key!r}; a {self.model_type} config needs it")
        if isinstance(value, bool) or not isinstance(value, int):
            raise InteropError(f"{self.path}: {key!r} must be an integer, got {value!r}")
        return value

    def float(self, key: str, default: float) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InteropError(f"{self.path}: {key!r} must be a number, got {value!r}")
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise InteropError(f"{self.path}: {key!r} must be true or false, got {value!r}")
        return value

    def expect(self, key: str, allowed: tuple, default: Any) -> None:
        """Refuse a field whose value lmlab's Transformer cannot reproduce."""
        value = self.get(key, default)
        if value not in allowed:
            raise InteropError(f"{self.path}: {key} = {value!r} has no lmlab equivalent (supported: "
                               f"{', '.join(repr(a) for a in allowed)})")

    def pick(self, key: str, table: Mapping[str, str], default: str) -> str:
        """Translate a string field (an activation name) through ``table``, refusing unknown values."""
        value = self.get(key, default)
        if value not in table:
            raise InteropError(f"{self.path}: {key} = {value!r} has no lmlab equivalent (supported: "
                               f"{', '.join(sorted(table))})")
        return table[value]


def read_config(src: Path) -> HFConfig:
    """``src/config.json`` as an :class:`HFConfig`.

    Raises:
        InteropError: the directory or its config.json is missing or not valid JSON.
    """
    if not src.is_dir():
        raise InteropError(f"{src} is not a directory; give a local Hugging Face model directory")
    path = src / CONFIG
    if not path.is_file():
        raise InteropError(f"{src} has no {CONFIG}: it is not a Hugging Face model directory")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InteropError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise InteropError(f"{path} must hold a JSON object")
    return HFConfig(raw, path)


# ---------------------------------------------------------------------------------------------- weights on disk


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InteropError(f"{path} is corrupt: {e}") from None


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise InteropError(f"{path} cannot be read as a weights-only PyTorch state dict: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise InteropError(f"{path} does not hold a state dict of tensors")
    return state


def _load_sharded(index: Path, load: Callable[[Path], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise InteropError(f"{index} is not a valid index file (a JSON object with a 'weight_map'): {e}") from None
    if not isinstance(weight_map, dict):
        raise InteropError(f"{index}: 'weight_map' must map tensor names to shard files")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        path = index.parent / shard
        if not path.is_file():
            names = sorted(k for k, v in weight_map.items() if v == shard)
            raise InteropError(f"{index} names the shard file {shard}, which is missing from {index.parent} "
                               f"(it should hold {names[0]} and {len(names) - 1} more tensors)")
        tensors.update(load(path))
    for name, shard in weight_map.items():
        if name not in tensors:
            raise InteropError(f"{index} says tensor {name} is in {shard}, but that file does not hold it")
    return tensors


def read_weights(src: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face model directory, by its Hugging Face name.

    Reads ``model.safetensors``, or the shards a ``model.safetensors.index.json`` lists; ``pytorch_model.bin``
    (or its sharded index) only with ``allow_pickle``, through ``torch.load(weights_only=True)``.

    Raises:
        InteropError: no weights file, pickled weights without ``allow_pickle``, a corrupt file, or an index
            that names a missing shard or a tensor its shard does not hold.
    """
    if (src / SAFETENSORS).is_file():
        return _load_safetensors(src / SAFETENSORS)
    if (src / SAFETENSORS_INDEX).is_file():
        return _load_sharded(src / SAFETENSORS_INDEX, _load_safetensors)
    pickled = next((src / n for n in (PICKLE, PICKLE_INDEX) if (src / n).is_file()), None)
    if pickled is None:
        raise InteropError(f"{src} holds no weights: neither {SAFETENSORS}, {SAFETENSORS_INDEX}, {PICKLE} "
                           f"nor {PICKLE_INDEX}")
    if not allow_pickle:
        raise InteropError(f"{src} has only pickled weights ({pickled.name}); loading a pickle can run code, so it "
                           "is refused unless you ask for it: pass allow_pickle=True (`--allow-pickle` on the "
                           "command line) if you trust the file")
    if pickled.name == PICKLE:
        return _load_pickle(pickled)
    return _load_sharded(pickled, _load_pickle)


# ---------------------------------------------------------------------------------------------- weight maps

Op = Literal["copy", "t", "cat", "row"]


@dataclass(frozen=True)
class Rule:
    """One lmlab tensor and the Hugging Face tensor(s) it is made of.

    ``op``: ``copy`` (same tensor), ``t`` (transposed: GPT-2's Conv1D stores (in, out)), ``cat`` (the Hugging
    Face tensors stacked along dim 0 in order, ``sizes`` rows each: a fused qkv or gated MLP), ``row``
    (Hugging Face keeps a (1, N) buffer: BART's ``final_logits_bias``).
    """

    ours: str
    hf: tuple[str, ...]
    op: Op = "copy"
    sizes: tuple[int, ...] = ()


def copy(ours: str, hf: str) -> Rule:
    return Rule(ours, (hf,))


def transposed(ours: str, hf: str) -> Rule:
    return Rule(ours, (hf,), "t")


def cat(ours: str, hf: list[str], sizes: tuple[int, ...]) -> Rule:
    assert len(hf) == len(sizes)
    return Rule(ours, tuple(hf), "cat", sizes)


def row(ours: str, hf: str) -> Rule:
    return Rule(ours, (hf,), "row")


def linear(ours: str, hf: str, bias: bool) -> list[Rule]:
    """A Linear layer: ``.weight`` (and ``.bias``) under the same module names."""
    return [copy(f"{ours}.weight", f"{hf}.weight")] + ([copy(f"{ours}.bias", f"{hf}.bias")] if bias else [])


def norm(ours: str, hf: str, bias: bool) -> list[Rule]:
    """A LayerNorm (weight and bias) or an RMSNorm (weight only)."""
    return linear(ours, hf, bias)


def fused(ours: str, hf: list[str], sizes: tuple[int, ...], bias: bool) -> list[Rule]:
    """Linear layers fused into one along the output dimension (q, k, v -> qkv; gate, up -> up)."""
    rules = [cat(f"{ours}.weight", [f"{h}.weight" for h in hf], sizes)]
    return rules + ([cat(f"{ours}.bias", [f"{h}.bias" for h in hf], sizes)] if bias else [])


@dataclass
class WeightMap:
    """A family's name map for one config.

    ``aliases`` are Hugging Face names of tensors tied to another one (``lm_head.weight`` of a tied head, the
    per-stack ``embed_tokens`` of T5 and BART): a checkpoint may hold them; they must then equal the tensor they
    are tied to. ``export_copies`` lists aliases that the export writes too. ``unread`` lists aliases that
    transformers keeps but never reads (BERT's ``cls.predictions.bias`` beside an untied decoder's own bias):
    dropped on import whatever they hold.
    """

    rules: list[Rule]
    aliases: dict[str, str] = field(default_factory=dict)
    export_copies: tuple[str, ...] = ()
    unread: tuple[str, ...] = ()


def _expected_parts(rule: Rule, shape: torch.Size) -> list[tuple[int, ...]]:
    """The Hugging Face shapes a rule reads, given the shape of our tensor."""
    if rule.op == "t":
        return [tuple(reversed(shape))]
    if rule.op == "row":
        return [(1, *shape)]
    if rule.op == "cat":
        return [(n, *shape[1:]) for n in rule.sizes]
    return [tuple(shape)]


def _pull(rule: Rule, parts: list[torch.Tensor]) -> torch.Tensor:
    if rule.op == "t":
        return parts[0].t()
    if rule.op == "row":
        return parts[0][0]
    if rule.op == "cat":
        return torch.cat(parts, dim=0)
    return parts[0]


def _push(rule: Rule, t: torch.Tensor) -> list[torch.Tensor]:
    if rule.op == "t":
        return [t.t()]
    if rule.op == "row":
        return [t[None]]
    if rule.op == "cat":
        return list(t.split(list(rule.sizes), dim=0))
    return [t]


def _unique_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every state tensor once (a tied head projection is the embedding)."""
    seen: set[int] = set()
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def _check_coverage(wm: WeightMap, own: dict[str, torch.Tensor], family: str) -> None:
    mapped = [r.ours for r in wm.rules]
    if sorted(mapped) != sorted(own):  # a bug in a family module, not the user's doing
        raise RuntimeError(f"the {family} weight map does not cover the model exactly: unmapped "
                           f"{sorted(set(own) - set(mapped))}, unknown {sorted(set(mapped) - set(own))}")


def _names(names: list[str] | set[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def import_weights(model: torch.nn.Module, family: Family, tensors: dict[str, torch.Tensor], src: Path,
                   assign: bool = False) -> None:
    """Fill ``model`` from Hugging Face ``tensors`` through the family's map, strictly. ``tensors`` is emptied
    as they are copied (converted to the model's dtype), so that a caller who hands its dict over holds the file's
    tensors and the model together only for a moment each. ``assign``: the tensors (or their fused or transposed
    views) become the model's instead, for a model built on the meta device
    (:func:`lmlab.model.builder.assign_tensors`).

    Raises:
        InteropError: a tensor is missing, mis-shaped, differs from the tensor it is tied to, or is left over.
    """
    wm = family.weights(model.config)
    own = _unique_params(model)
    _check_coverage(wm, own, family.name)
    for alias, target in wm.aliases.items():
        if alias not in tensors:
            continue
        t = tensors.pop(alias)
        if target not in tensors:
            tensors[target] = t
        elif alias in wm.unread:
            continue
        elif t.shape != tensors[target].shape or not torch.equal(t, tensors[target]):
            raise InteropError(f"{src}: tensor {alias} differs from {target}, but lmlab holds one tensor for "
                               f"both (the {family.name} config ties them); a checkpoint with separate values has "
                               "no lmlab equivalent")
    missing = [h for r in wm.rules for h in r.hf if h not in tensors]
    if missing:
        raise InteropError(f"{src}: the {family.name} checkpoint misses tensor(s) {_names(missing)} "
                           "that its config.json calls for")
    for rule in wm.rules:
        for h, shape in zip(rule.hf, _expected_parts(rule, own[rule.ours].shape), strict=True):
            if tuple(tensors[h].shape) != shape:
                raise InteropError(f"{src}: tensor {h} has shape {tuple(tensors[h].shape)}, but config.json calls "
                                   f"for {shape}")
    used = {h for r in wm.rules for h in r.hf}
    left = [n for n in tensors if n not in used and not any(re.search(p, n) for p in family.ignore)]
    if left:
        raise InteropError(f"{src}: unexpected tensor(s) {_names(left)} that the {family.name} map does not "
                           "place; lmlab will not drop weights silently (is it another head than the ones "
                           "lmlab supports?)")
    with torch.no_grad():
        if assign:
            from lmlab.model.builder import assign_tensors

            assign_tensors(model, {rule.ours: _pull(rule, [tensors.pop(h) for h in rule.hf]).to(own[rule.ours].dtype)
                                   for rule in wm.rules})
            return
        for rule in wm.rules:
            own[rule.ours].copy_(_pull(rule, [tensors.pop(h) for h in rule.hf]))


def export_weights(model: torch.nn.Module, family: Family) -> dict[str, torch.Tensor]:
    """Our tensors under their Hugging Face names (each its own contiguous copy, as safetensors wants)."""
    wm = family.weights(model.config)
    own = _unique_params(model)
    _check_coverage(wm, own, family.name)
    out: dict[str, torch.Tensor] = {}
    for rule in wm.rules:
        for h, t in zip(rule.hf, _push(rule, own[rule.ours].detach()), strict=True):
            out[h] = t.contiguous().clone()
    for alias in wm.export_copies:
        out[alias] = out[wm.aliases[alias]].clone()
    return out


# ---------------------------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Export:
    """What a family writes for an lmlab config: the Hugging Face class, its config fields, and whether the
    tensors keep the base-model prefix (head models) or lose it (the bare base model, e.g. ``BertModel``)."""

    architecture: str
    config: dict[str, Any]
    prefixed: bool = True


@dataclass(frozen=True)
class Family:
    """One Hugging Face family.

    Attributes:
        name: for messages ("BERT").
        model_type: the ``model_type`` of its ``config.json``.
        requires: lmlab options with the values this family can hold (tuples of allowed values); used to
            find the family of an lmlab config and to name the options that rule out an export.
        to_config: ``(hf_config, tensors) -> ModelConfig``; heads are read from the tensors present.
        from_config: ``ModelConfig -> Export``; raises InteropError naming an option with no equivalent.
        weights: ``ModelConfig -> WeightMap``.
        prefix: the base model's prefix in head models (``"bert."``); added to bare base-model checkpoints.
        ignore: regexes of Hugging Face buffers that are not weights (recomputed, e.g. ``position_ids``).
        template: ``(Tokenizer) -> None``: the post-processor (special tokens around a sequence) to give a
            tokenizer built from vocabulary files, which have none.
    """

    name: str
    model_type: str
    requires: dict[str, tuple]
    to_config: Callable[[HFConfig, dict[str, torch.Tensor]], ModelConfig]
    from_config: Callable[[ModelConfig], Export]
    weights: Callable[[ModelConfig], WeightMap]
    prefix: str = ""
    ignore: tuple[str, ...] = ()
    template: Callable[[Any], None] | None = None


# Options that only some families use; a family that does not list one needs its default.
HF_OPTIONS: dict[str, tuple] = {
    "type_vocab_size": (0,), "embed_norm": (False,), "mlm_transform": (False,), "pos_offset": (0,),
    "pos_pad_id": (-1,), "embed_scale": (False,), "lm_head": (True,), "head_bias": (False,),
    "head_rescale": (False,), "pooler": (False,), "num_labels": (0,),
}


ANY = object()  # in requires(): the family holds any value of this option (its own checks apply)


def requires(**options: tuple | Any) -> dict[str, tuple]:
    """A family's ``requires``: ``HF_OPTIONS`` defaults updated with ``options`` (single values, tuples, ANY)."""
    out = dict(HF_OPTIONS)
    out.update({k: v if isinstance(v, tuple) else (v,) for k, v in options.items() if v is not ANY})
    for k in [k for k, v in options.items() if v is ANY]:
        out.pop(k, None)
    return out


def mismatches(cfg: ModelConfig, family: Family) -> list[str]:
    """The options of ``cfg`` whose values ``family`` cannot hold, as ``model.x = value (needs ...)``."""
    out = []
    for key, allowed in family.requires.items():
        value = getattr(cfg, key)
        if value not in allowed:
            need = " or ".join(repr(a) for a in allowed)
            out.append(f"model.{key} = {value!r} (needs {need})")
    return out


def refuse(family: Family, option: str, value: Any, why: str) -> InteropError:
    """The error for an lmlab option with no equivalent in ``family``."""
    return InteropError(f"model.{option} = {value!r} has no Hugging Face {family.name} equivalent: {why}")


# transformers' ACT2FN names of the MLP activations (BERT, RoBERTa, GPT-2 and BART share them), both ways.
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
TO_HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def hf_activation(cfg: ModelConfig, family: Family, names: Mapping[str, str] = TO_HF_ACTIVATION) -> str:
    """The Hugging Face name of ``cfg.activation`` in ``names``, or the error naming the option."""
    if cfg.activation not in names:
        raise refuse(family, "activation", cfg.activation, f"it supports {', '.join(names)}")
    return names[cfg.activation]


def common_checks(cfg: ModelConfig, family: Family, *, gqa: bool = False, head_dim: bool = False) -> None:
    """Checks shared by families: grouped-query attention and a free head size only where they exist."""
    if not gqa and cfg.kv_heads != cfg.n_heads:
        raise refuse(family, "n_kv_heads", cfg.n_kv_heads, "it has no grouped-query attention")
    if not head_dim and cfg.head_dim * cfg.n_heads != cfg.d_model:
        raise refuse(family, "d_head", cfg.d_head, "its head size is d_model / n_heads")


def model_config(hf: HFConfig, **values: Any) -> ModelConfig:
    """Build the ModelConfig, turning a validation error into one that names the Hugging Face config."""
    try:
        return ModelConfig(**values)
    except ConfigError as e:
        raise InteropError(f"{hf.path} gives an invalid lmlab model: {e}") from None


def head_is_tied(hf: HFConfig, tensors: Mapping[str, torch.Tensor], head: str, embed: str,
                 default: bool) -> bool:
    """Whether the output projection is the token embedding, as ``transformers`` decides it.

    Tied when the config ties them (``tie_word_embeddings``, whose class default is ``default``) and the
    checkpoint holds no separate ``head`` tensor or one equal to ``embed``; a different one unties them.
    """
    if not hf.bool("tie_word_embeddings", default):
        return False
    if head not in tensors or embed not in tensors:
        return True
    return tensors[head].shape == tensors[embed].shape and torch.equal(tensors[head], tensors[embed])


# Fields of a Hugging Face config that describe the saved file, not the model; not carried over.
VOLATILE = ("architectures", "model_type", "transformers_version", "_name_or_path", "torch_dtype", "dtype",
            "_commit_hash", "auto_map")


def config_fields() -> set[str]:
    return {f.name for f in fields(ModelConfig)}
