"""Hugging Face checkpoints in and out: BERT, RoBERTa, GPT-2, Llama, T5 and BART.

Import reads a local Hugging Face model directory (``config.json``, ``model.safetensors`` or its shards,
``pytorch_model.bin`` only when asked, and the tokenizer files) into an lmlab :class:`Transformer` and
:class:`Tokenizer`; export writes a directory that ``transformers`` loads with the matching ``Auto*`` class and
that gives the same logits. Each family is one small module with its config mapping and an explicit
weight-name map (``bert.py``, ``roberta.py``, ``gpt2.py``, ``llama.py``, ``t5.py``, ``bart.py``); the
shared machinery is in ``core.py``. ``lmlab.load(hf_dir)`` reaches :func:`load_hf` transparently.

The family is chosen by ``model_type`` on import and by the config's options on export; heads are read from
the tensors a checkpoint holds (``BertModel`` has none, ``BertForMaskedLM`` its ``cls.predictions.*``).
Nothing is skipped or initialised at random: every tensor must be placed and every parameter filled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lmlab.config import ModelConfig
from lmlab.errors import InteropError, LmlabError
from lmlab.interop.bart import BART
from lmlab.interop.bert import BERT
from lmlab.interop.core import (
    CONFIG,
    SAFETENSORS,
    VOLATILE,
    Family,
    HFConfig,
    export_weights,
    import_weights,
    mismatches,
    read_config,
    read_weights,
)
from lmlab.interop.gpt2 import GPT2
from lmlab.interop.llama import LLAMA
from lmlab.interop.roberta import ROBERTA
from lmlab.interop.t5 import T5

__all__ = ["FAMILIES", "InteropError", "convert_from_hf", "convert_to_hf", "family_of", "load_hf", "load_tokenizer",
           "save_hf"]

FAMILIES: dict[str, Family] = {f.model_type: f for f in (BERT, ROBERTA, GPT2, LLAMA, T5, BART)}
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")


def family_of(cfg: ModelConfig) -> Family:
    """The Hugging Face family an lmlab config corresponds to.

    Raises:
        InteropError: no family holds it; the message names the options that rule out the closest family.
    """
    candidates = [f for f in FAMILIES.values() if cfg.arch in f.requires["arch"]]
    best = min(candidates, key=lambda f: len(mismatches(cfg, f)))  # the first in FAMILIES order on a tie
    problems = mismatches(cfg, best)
    if problems:
        raise InteropError(f"this {cfg.arch} model has no Hugging Face equivalent: {'; '.join(problems)}. "
                           f"Those options rule out the closest family, {best.name} (lmlab exports "
                           f"{', '.join(f.name for f in FAMILIES.values())})")
    return best


def _family(hf: HFConfig) -> Family:
    kind = hf.model_type
    if not kind:
        raise InteropError(f"{hf.path} has no model_type; it is not a Hugging Face model config")
    if kind == "lmlab":
        raise InteropError(f"{hf.path.parent} is an lmlab checkpoint, not a Hugging Face one: load it with "
                           "lmlab.load()")
    if kind not in FAMILIES:
        raise InteropError(f"{hf.path}: model_type {kind!r} is not supported; lmlab imports "
                           f"{', '.join(sorted(FAMILIES))}")
    return FAMILIES[kind]


def _tokenizer(src: Path, hf: HFConfig, family: Family):
    """The tokenizer of ``src`` (None when it has no tokenizer files), special tokens completed from
    config.json's ``*_token_id`` where the tokenizer files name none."""
    from lmlab.tokenizer import ROLES, Tokenizer

    if not any((src / n).is_file() for n in TOKENIZER_FILES):
        return None
    try:
        tok = Tokenizer.load(src)
    except LmlabError as e:
        raise InteropError(f"{src}: {e}") from None
    named = set()
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            named.update(r for r in ROLES if json.loads((src / name).read_text(encoding="utf-8")).get(f"{r}_token"))
        except (OSError, ValueError, AttributeError):
            continue  # absent (Tokenizer.load has already refused a corrupt one)
    roles = dict(tok.roles)
    for role in ("pad", "bos", "eos"):
        i = hf.get(f"{role}_token_id")
        if role not in named and isinstance(i, int) and not isinstance(i, bool) and tok.id_to_token(i):
            roles[role] = tok.id_to_token(i)
    tok = Tokenizer(tok.tok, roles, tok.additional_special_tokens, tok.chat_template)
    if tok.tok.post_processor is None and family.template is not None:
        family.template(tok)
    return tok


def load_tokenizer(src: str | Path):
    """The tokenizer of a Hugging Face model directory, as :func:`load_hf` gives it (special-token ids
    completed from config.json, the family's special-token template for vocabulary files); None when the
    directory has no tokenizer files.

    Raises:
        InteropError: what :func:`load_hf` raises about config.json, or an unreadable tokenizer file.
    """
    src = Path(src)
    hf = read_config(src)
    return _tokenizer(src, hf, _family(hf))


def load_hf(src: str | Path, allow_pickle: bool = False, dtype: torch.dtype | None = None,
            assign: bool = False) -> tuple[torch.nn.Module, Any]:
    """Load a local Hugging Face model directory as an lmlab model and tokenizer.

    Args:
        src: a directory with ``config.json`` (``model_type`` bert, roberta, gpt2, llama, t5 or bart) and
            ``model.safetensors`` (or ``model.safetensors.index.json`` with its shards).
        allow_pickle: also read ``pytorch_model.bin`` (through ``torch.load(weights_only=True)``).
        dtype: build the model in this dtype, uninitialised, for the weights to be read into (a model loaded to
            run: :func:`lmlab.train.load_model`); by default it is float32.
        assign: with ``dtype``, build it on the meta device and give it the file's tensors (memory-mapped where
            the dtypes agree) rather than copies: for a model quantized next.

    Returns:
        ``(model, tokenizer)``: the :class:`~lmlab.model.Transformer` (float32 by default) in eval mode, with the source
        config.json kept as ``model.hf_config`` (so an export keeps its other fields) and a classifier's label
        names as ``model.id2label``, and the
        :class:`~lmlab.tokenizer.Tokenizer` from ``tokenizer.json``, ``vocab.txt`` or ``vocab.json`` +
        ``merges.txt`` (None when the directory has none).

    Raises:
        InteropError: no config.json, an unknown model_type, a config lmlab cannot reproduce, missing weights,
            pickled weights without ``allow_pickle``, a missing, mis-shaped or unexpected tensor, a sharded
            index naming a missing file; each message names the file or tensor.
    """
    from lmlab.model import build_model
    from lmlab.model.builder import build_empty

    src = Path(src)
    hf = read_config(src)
    family = _family(hf)
    tensors = read_weights(src, allow_pickle)
    if family.prefix and not any(n.startswith(family.prefix) for n in tensors):  # a bare base model
        tensors = {family.prefix + n: t for n, t in tensors.items()}
    cfg = family.to_config(hf, tensors)
    model = build_model(cfg) if dtype is None else build_empty(cfg, dtype, device="meta" if assign else "cpu")
    import_weights(model, family, tensors, src, assign=assign)  # which empties ``tensors`` as it fills the model
    model.hf_config = hf.raw
    if model.classifier is not None and hf.get("id2label"):
        try:
            model.id2label = hf.get("id2label")  # the label names
        except ValueError as e:
            raise InteropError(f"{hf.path}: {e}") from None
    return model.eval(), _tokenizer(src, hf, family)


def _fresh_dir(dst: Path) -> Path:
    """A temporary sibling of ``dst`` to write into before renaming (a crash leaves no half directory)."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InteropError(f"{dst} already exists and is not empty; choose a new destination or delete it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{dst.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _publish(tmp: Path, dst: Path) -> Path:
    if dst.exists():
        dst.rmdir()  # empty, checked by _fresh_dir
    os.replace(tmp, dst)
    return dst


def convert_from_hf(src: str | Path, dst: str | Path, allow_pickle: bool = False) -> Path:
    """Convert a Hugging Face model directory into an lmlab checkpoint directory ``dst``.

    The source ``config.json`` is kept under ``hf_config`` in the checkpoint's config.json, so that
    :func:`convert_to_hf` restores its other fields (labels, generation ids...).

    Returns:
        ``dst``, which :func:`lmlab.train.checkpoint.load_model` (``lmlab.load``) reads.

    Raises:
        InteropError: what :func:`load_hf` raises; the source has no tokenizer; ``dst`` exists and is not empty.
    """
    from lmlab.train.checkpoint import save_model_dir

    src, dst = Path(src), Path(dst)
    model, tokenizer = load_hf(src, allow_pickle)
    if tokenizer is None:
        raise InteropError(f"{src} has no tokenizer (tokenizer.json, vocab.txt, or vocab.json + merges.txt); "
                           "an lmlab checkpoint needs one: add the tokenizer files to the directory")
    tmp = _fresh_dir(dst)
    try:
        save_model_dir(tmp, model, tokenizer)  # with model.hf_config
        return _publish(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hf_config(model: torch.nn.Module, tokenizer, family: Family, architecture: str,
               fields: dict[str, Any]) -> dict[str, Any]:
    """config.json for an export: the model's own fields win (its label names, ``model.id2label``, among
    them), then those of the config it was imported from (same family), then the tokenizer's special-token ids."""
    source = getattr(model, "hf_config", None) or {}
    kept = {k: v for k, v in source.items() if k not in VOLATILE} if source.get("model_type") == family.model_type \
        else {}
    if names := getattr(model, "id2label", None):
        fields = dict(fields, id2label={str(i): n for i, n in enumerate(names)},
                      label2id={n: i for i, n in enumerate(names)})
    elif len(kept.get("id2label") or {}) == len(fields.get("id2label") or {}):  # the source's label names
        fields = {k: v for k, v in fields.items() if k not in ("id2label", "label2id")}
    ids: dict[str, Any] = {}
    if tokenizer is not None:
        ids = {f"{r}_token_id": i for r in ("pad", "bos", "eos") if (i := getattr(tokenizer, f"{r}_id")) is not None}
        if model.config.arch == "encoder-decoder" and tokenizer.pad_id is not None:
            ids["decoder_start_token_id"] = tokenizer.pad_id  # what lmlab's generate() starts from by default
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {"architectures": [architecture], "model_type": family.model_type, **ids, **kept, **fields,
            "dtype": dtype}


def save_hf(model: torch.nn.Module, tokenizer, dst: str | Path) -> Path:
    """Write ``model`` (and ``tokenizer``, when given) as a Hugging Face model directory ``dst``.

    ``transformers`` loads it with the matching ``Auto*`` class (``AutoModelForCausalLM`` for GPT-2 and Llama,
    ``AutoModelForMaskedLM`` / ``AutoModel`` / ``AutoModelForSequenceClassification`` for BERT and RoBERTa,
    ``AutoModelForSeq2SeqLM`` for T5 and BART) and gives the same logits. Written to a temporary sibling and
    renamed into place.

    Returns:
        ``dst``, holding config.json, model.safetensors and the tokenizer's tokenizer.json and
        tokenizer_config.json.

    Raises:
        InteropError: the model's config has no Hugging Face equivalent (the message names the option);
            ``dst`` exists and is not empty.
    """
    cfg: ModelConfig = model.config
    family = family_of(cfg)
    export = family.from_config(cfg)
    tensors = export_weights(model, family)
    if not export.prefixed and family.prefix:
        tensors = {n.removeprefix(family.prefix): t for n, t in tensors.items()}
    config = _hf_config(model, tokenizer, family, export.architecture, export.config)
    dst = Path(dst)
    tmp = _fresh_dir(dst)
    try:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        save_file(tensors, str(tmp / SAFETENSORS), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        return _publish(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_to_hf(src: str | Path, dst: str | Path) -> Path:
    """Convert an lmlab checkpoint directory (or the newest checkpoint of a run) into a Hugging Face one.

    Returns:
        ``dst`` (see :func:`save_hf`).

    Raises:
        CheckpointError: ``src`` is not a readable checkpoint.
        InteropError: its model has no Hugging Face equivalent (the message names the option); ``dst`` exists.
    """
    from lmlab.train.checkpoint import load_model, resolve_checkpoint

    path = resolve_checkpoint(src)
    model, tokenizer = load_model(path)  # with the hf_config of a converted model
    return save_hf(model, tokenizer, dst)
