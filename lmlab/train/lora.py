"""LoRA fine-tuning (``[finetune.lora]``, ``r > 0``): adapters on a frozen base, saved apart from it.

The base is the model ``finetune.init`` gives. Its weights are frozen; the adapters train, and so do the tensors
fine-tuning does not take whole from init (a new classifier; embeddings grown for tokens the objective adds).
A LoRA checkpoint holds only those, in PEFT's layout under the Hugging Face names of the model's family
(``adapter_config.json``, ``adapter_model.safetensors``: :mod:`lmlab.interop.peft`), beside the usual
``config.json`` (with a ``lora`` record: the base's path and fingerprint, the rank, alpha, dropout, targets and the
trained tensors), tokenizer and training state. Loading it reads the base from its path, checks the fingerprint
(the base must be the weights the adapters were trained on) and adds the adapters: kept apart to resume training,
folded into the weights to use the model (:func:`merge` writes that as an ordinary checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmlab.config import LORA_TARGETS, Config
from lmlab.errors import CheckpointError, ConfigError, InteropError
from lmlab.model.lora import adapted, add_adapters, merge_adapters

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _names(model: torch.nn.Module):
    from lmlab.interop.peft import PeftNames

    try:
        return PeftNames(model)
    except InteropError as e:
        raise ConfigError(f"finetune.lora: adapters are saved under the Hugging Face names of the model's family "
                          f"(PEFT's layout), and {e}") from None


def _unique(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every state tensor once, by its first name (a tied head is the embedding)."""
    seen: set[int] = set()
    return {n: t for n, t in model.state_dict(keep_vars=True).items() if not (id(t) in seen or seen.add(id(t)))}


def fingerprint(model: torch.nn.Module, trained: list[str]) -> str:
    """sha256 of the base: every tensor of ``model`` but the adapters and the ``trained`` ones (names, dtypes,
    shapes and values, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(_unique(model).items()):
        if ".lora." in name or name in trained:
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def attach_lora(model: torch.nn.Module, record: dict[str, Any], generator: torch.Generator | None = None):
    """Freeze ``model`` and give it the adapters ``record`` (a ``lora`` record: ``r``, ``alpha``, ``dropout``,
    ``targets``, ``trained``, and the base's ``base`` and ``base_fingerprint``) describes; the ``trained`` tensors
    train too. Returns the model's Hugging Face names and the module of each adapter part."""
    names = _names(model)
    targets = tuple(record["targets"])
    parts, modules = names.parts(targets, all_targets=set(targets) == set(LORA_TARGETS))
    model.requires_grad_(False)
    add_adapters(model, parts, record["r"], record["alpha"], record["dropout"], generator)
    own = _unique(model)
    for name in record["trained"]:
        own[name].requires_grad_(True)
    model.lora_config = record
    return names, modules


def apply_lora(model: torch.nn.Module, cfg: Config, report: dict[str, Any]) -> dict[str, Any]:
    """Turn the model fine-tuning starts from into a LoRA model: base frozen, adapters on the targets of
    ``cfg.finetune.lora`` (A drawn from a generator seeded by ``train.seed``), and the tensors ``report`` (of
    :func:`~lmlab.train.finetune.initial_model`) says are new or grown trained whole. Returns the ``lora`` record.

    Raises:
        ConfigError: no pretrained base (``finetune.init`` none, ``finetune.scratch``); a model with no Hugging Face
            equivalent; targets that split a layer its family keeps whole, or name none of its projections.
    """
    fc, lc = cfg.finetune, cfg.finetune.lora
    if fc.init in ("", "none") or fc.scratch:
        raise ConfigError("finetune.lora adapts pretrained weights: give finetune.init a checkpoint (not none) and "
                          "leave finetune.scratch false, or set finetune.lora.r = 0 to train every weight")
    new = set(report.get("random") or []) | set(report.get("grown") or [])
    trained = [n for n in _unique(model) if n in new]
    from lmlab.train.checkpoint import resolve_model_dir

    record = {"base": str(resolve_model_dir(fc.init).resolve()), "base_fingerprint": fingerprint(model, trained),
              "r": lc.r, "alpha": lc.alpha, "dropout": lc.dropout, "targets": list(lc.targets), "trained": trained}
    attach_lora(model, record, torch.Generator().manual_seed(cfg.train.seed + 3))
    return record


def saved_tensor(name: str, record: dict[str, Any]) -> bool:
    """Whether a LoRA checkpoint saves the tensor ``name``: an adapter, or one trained beside them."""
    return ".lora." in name or name in record["trained"]


def save_adapters(path: Path, model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Write ``weights`` (the adapters and trained tensors, lmlab names) into ``path`` in PEFT's layout."""
    record = model.lora_config
    names = _names(model)
    _, modules = names.parts(tuple(record["targets"]), all_targets=set(record["targets"]) == set(LORA_TARGETS))
    adapters = {n: t for n, t in weights.items() if ".lora." in n}
    trained = {n: t for n, t in weights.items() if ".lora." not in n}
    used = sorted({modules[(p, part)] for p, linear in adapted(model).items() for part in linear.lora.A})
    config = names.adapter_config(record["r"], record["alpha"], record["dropout"], used, list(trained),
                                  record["base"])
    (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    save_file(names.save_tensors(adapters, trained, modules), str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def load_adapters(model: torch.nn.Module, path: Path) -> None:
    """Fill a LoRA model's adapters and trained tensors from ``path/adapter_model.safetensors``, strictly."""
    record = model.lora_config
    names = _names(model)
    _, modules = names.parts(tuple(record["targets"]), all_targets=set(record["targets"]) == set(LORA_TARGETS))
    own = {n: t for n, t in _unique(model).items() if saved_tensor(n, record)}
    file = path / ADAPTER_WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {ADAPTER_WEIGHTS} is missing")
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is corrupt: {e}") from None
    try:
        values = names.read_tensors(tensors, [n for n in own if ".lora." in n],
                                    [n for n in own if ".lora." not in n], modules, str(file))
    except InteropError as e:
        raise CheckpointError(str(e)) from None
    with torch.no_grad():
        for name, t in values.items():
            if t.shape != own[name].shape:
                raise CheckpointError(f"{file}: {name} has shape {tuple(t.shape)}, expected {tuple(own[name].shape)}")
            own[name].copy_(t)


def load_lora(model: torch.nn.Module, path: Path, record: dict[str, Any]) -> None:
    """Fill ``model`` (built from the checkpoint's config.json) from a LoRA checkpoint: the base from its path,
    checked against the fingerprint, then the adapters (kept apart) and the trained tensors.

    Raises:
        CheckpointError: the base cannot be read, or is not the one the adapters were trained on; the adapters
            are missing or do not fit.
    """
    from lmlab.train.checkpoint import load_model

    base_path = record.get("base", "")
    try:
        base, _ = load_model(base_path)
    except (CheckpointError, InteropError) as e:
        raise CheckpointError(f"the LoRA adapters of {path} need their base model {base_path}, which cannot be "
                              f"loaded: {e}") from None
    theirs = base.state_dict()
    mismatch = [n for n, t in _unique(model).items() if n not in record["trained"]
                and (n not in theirs or theirs[n].shape != t.shape)]
    if not mismatch:
        with torch.no_grad():
            for name, t in _unique(model).items():
                if name not in record["trained"]:
                    t.copy_(theirs[name])
    if mismatch or fingerprint(model, record["trained"]) != record.get("base_fingerprint"):
        raise CheckpointError(f"the base model {base_path} does not match the LoRA adapters of {path}: its weights "
                              "are not those the adapters were trained on (the fingerprint in config.json's 'lora' "
                              "record differs" + (f"; {mismatch[0]} is missing or of another shape" if mismatch else "")
                              + "). Adapters apply only to their own base: restore it, or train them again on this "
                              "one")
    attach_lora(model, record)
    load_adapters(model, path)


def merge(src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Fold the LoRA adapters of ``src`` (a run: its best model, else its newest checkpoint; or a checkpoint) into
    the weights and write an ordinary lmlab checkpoint ``dst`` (config, weights, tokenizer, training state) that
    gives the same logits. ``dst`` is written beside and renamed into place; an existing one is replaced only with
    ``overwrite``.

    Raises:
        CheckpointError: ``src`` has no adapters; ``dst`` exists (without ``overwrite``) or holds ``src``; what
            loading raises (a base that does not match).
    """
    from lmlab.train import checkpoint as ckpt

    path = ckpt.resolve_model_dir(src)
    raw = ckpt.read_json(path / ckpt.CONFIG)
    if "lora" not in raw:
        raise CheckpointError(f"{path} holds no LoRA adapters (its {ckpt.CONFIG} has no 'lora' record and there is "
                              f"no {ADAPTER_CONFIG}): it is an ordinary checkpoint already, with nothing to merge")
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not overwrite:
        raise CheckpointError(f"{dst} already exists; choose another destination, or pass --overwrite to replace it")
    if dst.resolve() in (path.resolve(), *path.resolve().parents):
        raise CheckpointError(f"{dst} holds the adapters being merged ({path}); give another destination")
    model, tokenizer = ckpt.load_model(path)  # merged at load
    state = ckpt.read_json(path / ckpt.STATE) if (path / ckpt.STATE).is_file() else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{dst.name}-{os.getpid()}"
    old = dst.parent / f".old-{dst.name}-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        ckpt.save_model_dir(tmp, model, tokenizer)
        if state is not None:  # the run's configuration (load_task reads its objective), its adapters now merged
            state.get("config", {}).get("finetune", {}).pop("lora", None)
            (tmp / ckpt.STATE).write_text(json.dumps({**state, "merged_from": str(path)}, indent=2))
        if dst.exists():
            os.replace(dst, old)
        os.replace(tmp, dst)
    except OSError as e:
        raise CheckpointError(f"could not write {dst}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return dst


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its adapters folded into the weights: an ordinary model (every weight trainable again)."""
    merge_adapters(model)
    model.lora_config = None
    return model.requires_grad_(True)
