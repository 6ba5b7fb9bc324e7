"""Checkpoints: directories in Hugging Face layout, written atomically.

A checkpoint directory holds::

    config.json              the model configuration (model_type "lmlab")
    model.safetensors        the weights
    tokenizer.json           the tokenizer (+ tokenizer_config.json)
    training_state.json      step, tokens seen, the full run config       (training checkpoints only)
    optimizer.safetensors    AdamW moments and every random generator's state (training checkpoints only)
    objective.safetensors    an objective's own weights, e.g. ELECTRA's generator (when it has any)

It is written to a temporary sibling directory (``.tmp-step-NNNNNN-PID``) and
renamed into place, so a crash never leaves a half-written checkpoint; the
temporary directories a killed process left are removed at the next save (see
:func:`clean_stale`). Nothing here unpickles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor, distribute_tensor

from lmlab.config import ModelConfig, _build
from lmlab.errors import CheckpointError, ConfigError, LmlabError
from lmlab.model.quant import DYNAMIC_REFUSED, QUANTIZE, dynamic_runs_on
from lmlab.train.precision import has_native_bf16

logger = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
STATE = "training_state.json"
OPTIMIZER = "optimizer.safetensors"
OBJECTIVE = "objective.safetensors"
STEP_DIR = re.compile(r"^step-(\d+)$")
FLOPS_DIR = re.compile(r"^flops-[0-9.e+-]+$")  # the model where training FLOPs reached a count (train.save_at_flops)
# What a write in progress is named by, each ending with the writing process's id: temporary directories of
# checkpoints, best/ and flops-*/, and temporary files of metrics.jsonl (rewritten on resume) and of the write probe
TEMP_DIR = re.compile(r"^\.(?:tmp-step-\d+|(?:tmp|old)-(?:best|flops-[0-9.e+-]+)|old-step-\d+|gone-step-\d+)-(\d+)$")
TEMP_FILE = re.compile(r"^\.(?:metrics\.jsonl\.|lmlab-write-test-)(\d+)$")


def _full(t: torch.Tensor) -> torch.Tensor:
    """A tensor FSDP shards (a DTensor) gathered whole on every rank (a collective); others as they are."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` distributed the way ``like`` is (every rank keeps its shard), or ``full`` itself."""
    return distribute_tensor(full, like.device_mesh, like.placements) if isinstance(like, DTensor) else full


def _unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict, whole tensors, without tied duplicates (a tied parameter is stored once, first name); of a
    model with LoRA adapters only what its checkpoint holds: the adapters and the tensors trained beside them."""
    from lmlab.train.lora import saved_tensor

    seen: set[int] = set()
    out = {}
    lora = getattr(model, "lora_config", None)
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen or (lora is not None and not saved_tensor(name, lora)):
            continue
        seen.add(id(t))
        out[name] = _full(t.detach()).contiguous()
    return out


def model_config_dict(cfg: ModelConfig, tokenizer=None) -> dict[str, Any]:
    d = {"model_type": "lmlab", "architectures": [f"lmlab-{cfg.arch}"], **dataclasses.asdict(cfg)}
    if tokenizer is not None:
        d.update(pad_token_id=tokenizer.pad_id, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
                 mask_token_id=tokenizer.mask_id)
    return d


def save_model_dir(path: Path, model: torch.nn.Module, tokenizer=None,
                   weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write config.json, model.safetensors (``weights``, by default the model's) and the tokenizer into an
    existing directory. A model imported from Hugging Face keeps its source config.json under ``hf_config``
    (its generation ids, labels, and the fields an export restores). A classifier's label names
    (``model.id2label``, one per label: the model checks them) are written as Hugging Face writes them:
    ``id2label`` {"0": name} and ``label2id``."""
    cfg: ModelConfig = model.config
    config = model_config_dict(cfg, tokenizer)
    if (names := getattr(model, "id2label", None)) is not None:
        config.update(id2label={str(i): n for i, n in enumerate(names)},
                      label2id={n: i for i, n in enumerate(names)})
    if isinstance(getattr(model, "hf_config", None), dict):
        config["hf_config"] = model.hf_config
    weights = weights if weights is not None else _unique_state_dict(model)
    if (lora := getattr(model, "lora_config", None)) is not None:  # adapters only: lmlab.train.lora
        from lmlab.train.lora import save_adapters

        config["lora"] = lora
        save_adapters(path, model, weights)
    else:
        save_file(weights, str(path / WEIGHTS), metadata={"format": "pt"})
    (path / CONFIG).write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save(path)


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, tokenizer, optimizer: torch.optim.Optimizer,
                    generators: dict[str, torch.Generator], state: dict[str, Any], keep_last: int,
                    objective: torch.nn.Module | None = None, write: bool = True) -> Path:
    """Write ``run_dir/step-NNNNNN`` atomically and delete all but the newest ``keep_last`` checkpoints.

    With FSDP every rank must call this (gathering the shards is collective); only ``write=True`` writes.
    """
    run_dir = Path(run_dir)
    final = run_dir / f"step-{step:06d}"
    weights = _unique_state_dict(model)
    tensors = _optimizer_tensors(model, optimizer, objective)
    own = {k: _full(t.detach()).contiguous() for k, t in _objective_tensors(model, objective).items()}
    if not write:
        return final
    _check_finite(weights, final)
    clean_stale(run_dir)
    tmp = run_dir / f".tmp-step-{step:06d}-{os.getpid()}"
    with _writing(final, tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model_dir(tmp, model, tokenizer, weights)
        if own:  # an objective with weights of its own (ELECTRA's generator): beside the model, not in it
            save_file(own, str(tmp / OBJECTIVE), metadata={"format": "pt"})
        for name, g in generators.items():
            tensors[f"rng.{name}"] = g.get_state()
        tensors["rng.torch_global"] = torch.get_rng_state()
        if torch.cuda.is_initialized():
            tensors["rng.torch_cuda"] = torch.cuda.get_rng_state()
        save_file(tensors, str(tmp / OPTIMIZER))
        (tmp / STATE).write_text(json.dumps({**state, "step": step}, indent=2))
        _move_into_place(tmp, final)  # (a step saved again, e.g. an interrupt right after a periodic save)
    # Keep the newest keep_last; a run resumed from an older checkpoint has set the newer ones aside first.
    for stale in list_checkpoints(run_dir)[:-keep_last]:
        _discard(stale)
    return final


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename the written directory ``tmp`` to ``final``, replacing one there without a moment with neither: the
    old one is moved aside (``.old-NAME-PID``, which :func:`clean_stale` puts back if a kill leaves ``final``
    missing) and deleted once the new one is in place."""
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _discard(path: Path) -> None:
    """Delete a checkpoint directory so that a kill part-way never leaves a partial one that counts: it is
    renamed out of the checkpoints' names first (``clean_stale`` removes what a kill left of it)."""
    gone = path.with_name(f".gone-{path.name}-{os.getpid()}")
    os.replace(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def _check_finite(weights: dict[str, torch.Tensor], final: Path) -> None:
    """Never write (and so never prune a good checkpoint for) weights that hold NaN or inf."""
    bad = [n for n, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"refusing to write {final}: the weights hold NaN or inf (in {', '.join(bad[:3])}); "
                              f"the checkpoints in {final.parent} are kept")


@contextlib.contextmanager
def _writing(final: Path, tmp: Path) -> Iterator[None]:
    """Remove the temporary directory of a write that failed; a full or read-only disk is a user's error."""
    try:
        yield
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write {final}: {e.strerror or e}"
                                  f"{f' ({e.filename})' if e.filename else ''}; the checkpoints already in "
                                  f"{final.parent} are intact") from None
        raise


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one thing at a time: its own leftovers are stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (PermissionError: alive, another user's)
        return True
    return True


def clean_stale(run_dir: str | Path) -> list[Path]:
    """Remove what killed writes left in ``run_dir``: ``.tmp-step-*``, ``.tmp-best-*``, ``.old-best-*`` (the same
    of ``flops-*``), ``.old-step-*`` and ``.gone-step-*`` directories and ``.metrics.jsonl.*`` (and write-probe)
    files whose process (the id that ends the name) is no longer running on this machine, or is this one. What a
    live process left is left alone (it may be writing). A ``best/``, ``flops-*`` or ``step-N`` that a kill left
    missing is put back from its ``.old-*``. Returns what was removed."""
    run_dir = Path(run_dir)
    removed = []
    for p in sorted(run_dir.iterdir()) if run_dir.is_dir() else ():
        m = TEMP_DIR.match(p.name) if p.is_dir() else TEMP_FILE.match(p.name) if p.is_file() else None
        if m is None or _alive(int(m.group(1))):
            continue
        kept = run_dir / p.name[len(".old-"):].rsplit("-", 1)[0]  # .old-best-PID -> best, .old-step-N-PID -> step-N
        if p.name.startswith(".old-") and not kept.exists():
            os.replace(p, kept)  # killed between moving the old one aside and the new one in
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


BEST = "best"


def flops_dir(flops: float) -> str:
    """The name of the model kept where training FLOPs reached ``flops`` (``train.save_at_flops``): ``flops-`` and
    the count, short where that is exact (``flops-2.5e+12``), else every digit (``flops-3333333333333.3335``)."""
    short = f"{flops:g}"
    return f"flops-{short if float(short) == flops else repr(float(flops))}"


def save_best(run_dir: str | Path, model: torch.nn.Module, tokenizer, state: dict[str, Any],
              write: bool = True, name: str = BEST) -> Path:
    """Write the model as ``run_dir/best`` (or ``run_dir/<name>``: config, weights, tokenizer and
    ``training_state.json``, no optimizer state), replacing the one there without ever leaving none: the new one
    is written beside it and renamed into place. With FSDP every rank must call this; only ``write=True``
    writes."""
    run_dir = Path(run_dir)
    weights = _unique_state_dict(model)
    final = run_dir / name
    if not write:
        return final
    _check_finite(weights, final)
    clean_stale(run_dir)
    tmp = run_dir / f".tmp-{name}-{os.getpid()}"
    with _writing(final, tmp):
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model_dir(tmp, model, tokenizer, weights)
        (tmp / STATE).write_text(json.dumps(state, indent=2))
        _move_into_place(tmp, final)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or the newest checkpoint in a run directory."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"{path} is neither a checkpoint directory (no {CONFIG}) nor a run directory "
                              "with step-NNNNNN checkpoints")
    return found[-1]


def resolve_model_dir(path: str | Path) -> Path:
    """The model a path means for using it: a checkpoint directory itself; for a run directory, its best
    model (``best/``, kept by fine-tuning) when it has one, else its newest checkpoint."""
    path = Path(path)
    if not (path / CONFIG).is_file() and (path / BEST / CONFIG).is_file():
        return path / BEST
    return resolve_checkpoint(path)


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.parent} is incomplete: {path.name} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.parent} is incomplete: {path.name} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from None


def read_model_config(path: Path) -> ModelConfig:
    raw = read_json(path / CONFIG)
    if raw.get("model_type") != "lmlab":
        raise CheckpointError(f"{path / CONFIG} has model_type {raw.get('model_type')!r}, not 'lmlab'")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        return _build(ModelConfig, {k: v for k, v in raw.items() if k in names}, "model")
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG}: {e}") from None


def load_weights(model: torch.nn.Module, path: Path, assign: bool = False) -> None:
    """Load ``model.safetensors`` strictly: a missing, unexpected or mis-shaped tensor is an error naming it. A
    model with LoRA adapters loads its adapters and the tensors trained with them (its base is in place).
    ``assign``: the file's tensors become the model's instead of being copied into it, memory-mapped where their
    dtype is the model's, into a model built on the meta device (``build_empty(..., device="meta")``): for a
    model quantized next, whose float weights then never take memory of their own."""
    if getattr(model, "lora_config", None) is not None:
        from lmlab.train.lora import load_adapters

        load_adapters(model, path)
        return
    from lmlab.model.builder import assign_tensors

    file = path / WEIGHTS
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {WEIGHTS} is missing")
    own = model.state_dict(keep_vars=True)
    first_name: dict[int, str] = {}
    for name, t in own.items():
        first_name.setdefault(id(t), name)
    required = {n for n, t in own.items() if first_name[id(t)] == n}  # a tied parameter once
    try:
        # one tensor read at a time and copied into the model's (in its dtype): loading holds the model and
        # the largest tensor, not the model and the whole file
        with safe_open(str(file), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
            missing = sorted(required - shapes.keys())
            unexpected = sorted(shapes.keys() - own.keys())
            if missing or unexpected:
                raise CheckpointError(f"{file} does not match the model in {CONFIG}: "
                                      f"missing {missing[:5]}, unexpected {unexpected[:5]}")
            for name, shape in shapes.items():
                if shape != own[name].shape:
                    raise CheckpointError(f"{file}: tensor {name} has shape {shape}, expected {tuple(own[name].shape)}")
            with torch.no_grad():
                if assign:
                    assign_tensors(model, {name: f.get_tensor(name).to(own[name].dtype) for name in shapes})
                else:
                    for name in shapes:
                        own[name].copy_(_shard_like(f.get_tensor(name), own[name]))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is corrupt: {e}") from None


def load_model(path: str | Path, device: str | torch.device = "cpu", allow_pickle: bool = False,
               for_inference: bool = False, dtype: str = "fp32", keep_adapters: bool = False,
               quantize: str | None = None, rows: int = 1):
    """Load ``(model, tokenizer)`` from a checkpoint directory (or the newest checkpoint of a run), in eval mode;
    ``for_inference`` readies it to run only (:meth:`~lmlab.model.Transformer.for_inference`), with weights in
    ``dtype`` (``"fp32"`` or ``"bf16"``, of :data:`INFERENCE_DTYPES`) and, with ``quantize="int8"`` or
    ``"int8-dynamic"``, int8 weight matrices (:mod:`lmlab.model.quant`), laid out for decoding steps of ``rows``
    rows (batch x beams: 1 for one text at a time).

    A Hugging Face model directory (its config.json has a ``model_type`` other than "lmlab") is imported with
    :func:`lmlab.interop.load_hf`; ``allow_pickle`` lets that read ``pytorch_model.bin``. Its tokenizer is
    None when the directory has no tokenizer files.

    A LoRA checkpoint (:mod:`lmlab.train.lora`) is its base model (read from the path it records, checked against
    its fingerprint) with the adapters folded into the weights, or kept apart with ``keep_adapters`` (to train on).

    Raises:
        CheckpointError: the directory is missing, incomplete or corrupt.
        InteropError: a Hugging Face directory that cannot be imported (see :func:`lmlab.interop.load_hf`).
    """
    from lmlab.model import build_model
    from lmlab.model.builder import build_empty
    from lmlab.tokenizer import Tokenizer, check_model_vocab

    if dtype not in INFERENCE_DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(INFERENCE_DTYPES)}, got {dtype!r}")
    if dtype != "fp32" and not for_inference:
        raise ConfigError(f"dtype {dtype!r} is for a model loaded to run only (for_inference); training sets its "
                          "precision with train.precision")
    if quantize not in (None, *QUANTIZE):
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE)} or None, got {quantize!r}")
    if quantize == "int8-dynamic" and not dynamic_runs_on(device):
        raise ConfigError(DYNAMIC_REFUSED)
    if quantize and not for_inference:
        raise ConfigError(f"{quantize} weights are for a model loaded to run only (for_inference): lmlab does not "
                          "train quantized weights (LoRA adapters on int8 weights are not supported either)")
    assign = for_inference and quantize is not None  # the file's tensors given to the model, then quantized
    path = resolve_model_dir(path)
    raw = read_json(path / CONFIG)
    model_type = raw.get("model_type")
    if isinstance(model_type, str) and model_type not in ("", "lmlab"):
        from lmlab.interop import InteropError, load_hf

        try:
            model, tokenizer = load_hf(path, allow_pickle=allow_pickle,
                                       dtype=INFERENCE_DTYPES[dtype] if for_inference else None, assign=assign)
        except InteropError as e:
            raise InteropError(f"{path / CONFIG} has model_type {model_type!r}, so {path} is read as a Hugging "
                               f"Face model directory, and: {e}") from None
        check_model_vocab(tokenizer, model.config.vocab_size, path)
        return _ready(model, device, for_inference, dtype, quantize, rows), tokenizer
    lora = raw.get("lora")
    if for_inference and not isinstance(lora, dict):  # built empty; to be quantized: on the meta device
        model = build_empty(read_model_config(path), INFERENCE_DTYPES[dtype], device="meta" if assign else "cpu")
    else:
        model = build_model(read_model_config(path))
    if isinstance(lora, dict):
        from lmlab.train.lora import load_lora, merged

        load_lora(model, path, lora)
        if not keep_adapters:
            merged(model)
    else:
        load_weights(model, path, assign=assign)
    if isinstance(hf_config := raw.get("hf_config"), dict):
        model.hf_config = hf_config  # imported from Hugging Face: see save_model_dir
    if "id2label" in raw:  # a classifier's label names
        try:
            model.id2label = raw["id2label"]
        except ValueError as e:
            raise CheckpointError(f"{path / CONFIG}: {e}") from None
    try:
        tokenizer = Tokenizer.load(path / TOKENIZER)
    except LmlabError as e:
        raise CheckpointError(f"checkpoint {path}: {e}") from None
    check_model_vocab(tokenizer, model.config.vocab_size, path)
    return _ready(model, device, for_inference, dtype, quantize, rows), tokenizer


INFERENCE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _ready(model: torch.nn.Module, device: str | torch.device, for_inference: bool, dtype: str,
           quantize: str | None = None, rows: int = 1) -> torch.nn.Module:
    model = model.to(device).eval()
    if not for_inference:
        return model
    if dtype == "bf16" and torch.device(device).type == "cpu" and has_native_bf16() is False:
        logger.warning("bf16 weights on a CPU without bf16 instructions (AVX-512 BF16 or AMX): bf16 is emulated "
                       "here, slower than fp32")
    model.for_inference(INFERENCE_DTYPES[dtype], quantize, rows)
    if quantize is not None:  # its float tensors were the file's (load_weights(assign=True)): let the file go
        with torch.no_grad():
            for t in [*model.parameters(), *model.buffers()]:
                if t.is_floating_point() and t.device.type == "cpu":
                    t.data = t.data.clone()
    return model


def load_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        generators: dict[str, torch.Generator], objective: torch.nn.Module | None = None
                        ) -> dict[str, Any]:
    """Restore weights (the model's and an objective's own), optimizer moments and generator states; return
    training_state.json."""
    state = read_json(path / STATE)
    load_weights(model, path)
    own = _objective_tensors(model, objective)
    if own:
        saved = _read_tensors(path / OBJECTIVE)
        if saved.keys() != own.keys() or any(saved[k].shape != own[k].shape for k in own):
            raise CheckpointError(f"{path / OBJECTIVE} does not match the objective's weights")
        with torch.no_grad():
            for name, t in own.items():
                t.copy_(_shard_like(saved[name], t))
    tensors = _read_tensors(path / OPTIMIZER)
    _load_optimizer_tensors(model, optimizer, tensors, path, objective)
    for name, g in generators.items():
        if f"rng.{name}" not in tensors:
            raise CheckpointError(f"{path / OPTIMIZER} has no state for the {name!r} random generator")
        g.set_state(tensors[f"rng.{name}"])
    torch.set_rng_state(tensors["rng.torch_global"])
    if "rng.torch_cuda" in tensors and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"])
    return state


def _param_names(model: torch.nn.Module, objective: torch.nn.Module | None = None) -> dict[int, str]:
    """Parameter names by identity: the model's, then an objective's own ones as ``objective.<name>``."""
    names = {id(p): n for n, p in model.named_parameters()}
    if objective is not None:
        names.update({id(p): f"objective.{n}" for n, p in objective.named_parameters() if id(p) not in names})
    return names


def _objective_tensors(model: torch.nn.Module, objective: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    """The tensors of an objective's state that are not the model's (shared embeddings stay in the model)."""
    if not isinstance(objective, torch.nn.Module):
        return {}
    shared = {id(t) for t in model.state_dict(keep_vars=True).values()}
    return {n: t for n, t in objective.state_dict(keep_vars=True).items() if id(t) not in shared}


def _optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       objective: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    names = _param_names(model, objective)
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                out[f"{names[id(p)]}.{key}"] = _full(value.detach()).contiguous() if torch.is_tensor(value) \
                    else torch.tensor(value)
    return out


def _load_optimizer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                            tensors: dict[str, torch.Tensor], path: Path,
                            objective: torch.nn.Module | None = None) -> None:
    names = _param_names(model, objective)
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            keys = [k for k in tensors if k.startswith(name + ".") and "." not in k[len(name) + 1:]]
            if not keys:
                raise CheckpointError(f"{path / OPTIMIZER} has no optimizer state for parameter {name}")
            optimizer.state[p] = {k[len(name) + 1:]: tensors[k].to(p.device) if k.endswith(".step")
                                  else _shard_like(tensors[k].to(p.device, p.dtype), p) for k in keys}
