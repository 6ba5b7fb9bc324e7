"""Fine-tuning: a task objective (``seq2seq``, ``classify``, ``sft``, ``dpo``) on examples, run by the same loop as
pretraining.

The weights start from ``finetune.init``: an lmlab checkpoint, a Hugging Face model directory, or ``"none"``
(random weights of ``[model]``); ``finetune.scratch`` keeps init's configuration and tokenizer but not its
weights, so the gain from pretraining is measured, not assumed. A classifier gets a new head for the labels of
the data (pooler + classifier on encoders, a bias-free classifier on decoders) and loses the token head. The
tokenizer gets the special tokens (and chat template) the objective adds, and the embeddings a row for each.
Preference optimisation (``dpo``) first computes the initial model's log-probs of every answer once (the
reference pass, :mod:`lmlab.train.reference`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.config import Config
from lmlab.data.examples import (
    ExampleDataset,
    ExampleSampler,
    PackedDataset,
    RawExamples,
    build_shards,
    eval_batches,
    examples_digest,
    load_splits,
    read_manifest,
)
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.model import build_model
from lmlab.objectives import TASKS, build_objective, check_objective, objective_tokenizer
from lmlab.tokenizer import Tokenizer
from lmlab.train import checkpoint as ckpt
from lmlab.train.distributed import setup
from lmlab.train.lora import apply_lora
from lmlab.train.precision import check_precision, run_precision
from lmlab.train.reference import check_reference, reference_pass
from lmlab.train.trainer import EXAMPLES_DIR, TaskEval, TrainResult, check_fresh_out_dir, prepare_config, train_loop


def _task_config(model_cfg: Any, task: str, num_labels: int) -> Any:
    """The model configuration fine-tuning for ``task`` needs: a classifier replaces the token head."""
    if task != "classify":
        if not model_cfg.lm_head:
            raise ConfigError("this model has no token head (model.lm_head is false), so it cannot generate text; "
                              "seq2seq needs a decoder or an encoder-decoder language model")
        return model_cfg
    return dataclasses.replace(model_cfg, lm_head=False, mlm_transform=False, head_bias=False, head_rescale=False,
                               num_labels=num_labels, pooler=model_cfg.arch == "encoder")


def _load_init(path: str) -> tuple[torch.nn.Module, Tokenizer]:
    try:
        model, tokenizer = ckpt.load_model(path)
    except CheckpointError as e:
        raise CheckpointError(f"finetune.init {path}: not a usable lmlab checkpoint or Hugging Face model "
                              f"directory: {e}") from None
    if tokenizer is None:
        raise CheckpointError(f"finetune.init {path} has no tokenizer (tokenizer.json, vocab.txt or vocab.json); "
                              "fine-tuning needs the tokenizer the model was trained with")
    return model, tokenizer


def initial_model(cfg: Config, labels: list[str] | None) -> tuple[torch.nn.Module, Tokenizer, dict[str, Any]]:
    """The model fine-tuning starts from (random parts seeded by ``train.seed``), its tokenizer (with what the
    objective adds: :func:`~lmlab.objectives.objective_tokenizer`), and a report: which tensors came from init,
    which start at random and which grew (token rows for added tokens, the new rows at random).

    Raises:
        ConfigError: no ``finetune.init``; CheckpointError: an init that cannot be loaded.
    """
    fc, task = cfg.finetune, cfg.objective.name
    n_labels = len(labels or [])
    if not fc.init:
        raise ConfigError("finetune.init is empty: give --init PATH (an lmlab checkpoint or run, or a Hugging Face "
                          "model directory), or --init none with a [model] section and finetune.tokenizer")
    if fc.init == "none":
        if not fc.tokenizer:
            raise ConfigError("finetune.init is none: set finetune.tokenizer to the tokenizer to use")
        tokenizer = objective_tokenizer(cfg, Tokenizer.load(fc.tokenizer))
        model_cfg = _task_config(prepare_config(cfg, tokenizer).model, task, n_labels)
        torch.manual_seed(cfg.train.seed)
        return build_model(model_cfg), tokenizer, {"init": "none", "from_init": 0, "random": "all"}
    source, tokenizer = _load_init(fc.init)
    tokenizer = objective_tokenizer(dataclasses.replace(cfg, model=source.config), tokenizer)
    model_cfg = _task_config(source.config, task, n_labels)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=tokenizer.vocab_size)
    torch.manual_seed(cfg.train.seed)
    model = build_model(model_cfg)
    if isinstance(getattr(source, "hf_config", None), dict):
        model.hf_config = source.hf_config  # decoder_start_token_id, label names of an imported model
    if fc.scratch:
        return model, tokenizer, {"init": fc.init, "from_init": 0, "random": "all (finetune.scratch)"}
    theirs = source.state_dict()
    mine = model.state_dict()
    copied, fresh, grown = [], [], []
    with torch.no_grad():
        for name, t in mine.items():
            old = theirs.get(name)
            if old is not None and old.shape == t.shape:
                t.copy_(old)
                copied.append(name)
            elif old is not None and old.shape[1:] == t.shape[1:] and old.shape[0] < t.shape[0]:
                t[:old.shape[0]].copy_(old)  # token rows: init's, then the added tokens' at random
                grown.append(name)
            else:
                fresh.append(name)
    dropped = sorted(set(theirs) - set(mine))
    return model, tokenizer, {"init": fc.init, "from_init": len(copied) + len(grown), "random": fresh,
                              "grown": grown, "dropped": dropped}


def _tokenizer_origin(cfg: Config, resume_path: Path | None) -> str:
    """Where a fine-tuning run's tokenizer came from, as the user gave it."""
    if resume_path is not None:
        return f"the checkpoint {resume_path}"
    fc = cfg.finetune
    return f"finetune.tokenizer {fc.tokenizer}" if fc.init == "none" else f"finetune.init {fc.init}"


def _shards(out_dir: Path, cfg: Config, tokenizer: Tokenizer, objective: Any, splits: dict[str, RawExamples],
            resume: bool, is_main: bool) -> dict[str, Any]:
    """Tokenize the run's examples once into ``out_dir/examples`` (kept for resuming, and for a new run that a
    kill stopped before its first checkpoint: same examples, tokenizer and row settings) and return the manifest."""
    directory = out_dir / EXAMPLES_DIR
    manifest = read_manifest(directory)
    if resume and manifest is not None:
        if manifest["tokenizer_fingerprint"] != tokenizer.sha256():
            raise DataError(f"{directory} was tokenized with another tokenizer than the checkpoint's")
        return manifest
    kind = cfg.objective.name
    digest = examples_digest(splits)
    settings = {"seq_len": cfg.data.seq_len, "source_prefix": cfg.objective.source_prefix}
    if manifest is not None and (manifest.get("digest"), manifest.get("settings"), manifest["kind"],
                                 manifest["tokenizer_fingerprint"]) == (digest, settings, kind, tokenizer.sha256()):
        return manifest  # (dpo: with the reference log-probs computed so far)
    if is_main:
        tmp = out_dir / f".tmp-{EXAMPLES_DIR}"
        shutil.rmtree(tmp, ignore_errors=True)
        manifest = build_shards(tmp, tokenizer, splits, kind, rows=objective.row if kind in ("sft", "dpo") else None)
        manifest["sources"] = {"train": cfg.data.train, "valid": cfg.data.valid or "held out of train"}
        manifest.update(digest=digest, settings=settings)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        tmp.rename(directory)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return read_manifest(directory)


def _lengths(objective: Any, ds: ExampleDataset) -> list[np.ndarray]:
    """Per-example row lengths of each side the model sees, after truncation (sources; targets)."""
    if ds.kind == "sft":  # whole rows, EOS included
        return [np.minimum(ds.source_lengths + 1, objective.max_len)]
    if ds.kind == "dpo":  # a pair's two rows are padded to the longer
        return [np.minimum(np.maximum(ds.source_lengths, ds.rejected_lengths) + 1, objective.max_len)]
    extra = len(objective.input_ids([]))  # special tokens, prefix and separator around a source
    src = np.minimum(ds.source_lengths, objective.source_room()) + extra
    if ds.target_lengths is None:
        return [src]
    tgt = np.minimum(ds.target_lengths, objective.max_target - 1) + 1
    return [src, tgt] if objective.arch == "encoder-decoder" else [src + tgt]


def truncation(objective: Any, ds: ExampleDataset) -> dict[str, int]:
    """How many examples of ``ds`` are cut: sources beyond ``data.seq_len``, targets beyond the target length
    (sft: rows beyond ``data.seq_len``)."""
    if ds.kind == "sft":
        return {"rows_cut": int((ds.source_lengths + 1 > objective.max_len).sum())}
    if ds.kind == "dpo":  # pairs with an answer cut
        return {"pairs_cut": int((np.maximum(ds.source_lengths, ds.rejected_lengths) + 1 > objective.max_len).sum())}
    out = {"sources_cut": int((ds.source_lengths > objective.source_room()).sum())}
    if ds.target_lengths is not None:
        out["targets_cut"] = int((ds.target_lengths > objective.max_target - 1).sum())
    return out


def finetune(cfg: Config, resume: str | Path | None = None, stop_after: int | None = None,
             overwrite: bool = False) -> TrainResult:
    """Fine-tune as ``cfg`` describes (``objective.name`` a task, ``finetune.init`` the start, ``data.train``
    the examples); run it plainly or under ``torchrun``. Checkpoints, resume, ``overwrite``, precision and the
    best model by the validation metric (``best/``) work as in :func:`lmlab.train.pretrain`.

    Raises:
        ConfigError, DataError, CheckpointError: bad configuration, examples or checkpoint.
    """
    from lmlab.eval.task import baselines, eval_subset, task_scores

    task = cfg.objective.name
    if task not in TASKS:
        raise ConfigError(f"objective.name {task!r} is a pretraining objective (run it with `lmlab pretrain`); "
                          f"fine-tuning tasks: {', '.join(TASKS)}")
    if task == "dpo" and cfg.finetune.metric not in ("", "loss"):
        raise ConfigError(f"finetune.metric {cfg.finetune.metric!r}: dpo keeps the checkpoint of the lowest validation "
                          "loss (its reward accuracy and margin are logged beside it); leave finetune.metric empty")
    d = setup(cfg.train.device)
    resume_path = ckpt.resolve_checkpoint(resume) if resume is not None else None
    out_dir = Path(cfg.train.out_dir)
    init = Path(cfg.finetune.init).resolve()
    if overwrite and cfg.finetune.init not in ("", "none") and out_dir.resolve() in (init, *init.parents):
        raise ConfigError(f"finetune.init {cfg.finetune.init} lies in train.out_dir {out_dir}, which --overwrite "
                          "would empty first; give another train.out_dir")
    check_fresh_out_dir(out_dir, resume_path, overwrite, d.is_main)
    tc = cfg.train
    check_precision(tc.precision, d.device)
    rng_devices = [d.device.index or 0] if d.device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), run_precision(tc.precision):
        splits = load_splits(cfg.data, task)  # the examples as text: read once
        if resume_path is not None:  # the run's own model: its configuration, tokenizer, labels and weights
            model, tokenizer = ckpt.load_model(resume_path, keep_adapters=True)  # a LoRA run's base + adapters
            report: dict[str, Any] = {"resumed": str(resume_path)}
        else:
            labels = sorted(set(splits["train"].outputs)) if task == "classify" else None
            model, tokenizer, report = initial_model(cfg, labels)
            if labels is not None:
                model.id2label = labels
        cfg = dataclasses.replace(cfg, model=model.config)
        check_objective(cfg)  # the task on this architecture (sft: decoders)
        try:  # before anything is written: a tokenizer that lacks a token the task needs, named
            objective = build_objective(cfg, tokenizer)
        except ConfigError as e:
            raise ConfigError(f"the tokenizer of {_tokenizer_origin(cfg, resume_path)}: {e}") from None
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest = _shards(out_dir, cfg, tokenizer, objective, splits, resume_path is not None, d.is_main)
        if task == "classify" and manifest["labels"] != list(getattr(model, "id2label", None) or []):
            raise CheckpointError(f"the labels of {out_dir / EXAMPLES_DIR} differ from the model's id2label")
        model = model.to(d.device).train()
        objective.attach(model)
        if cfg.model.position == "learned" and objective.arch == "decoder" and task == "seq2seq":
            longest = cfg.data.seq_len + objective.max_target
            if longest > cfg.model.max_seq_len:
                raise ConfigError(f"a decoder row holds a source and a target: data.seq_len + data.decoder_seq_len "
                                  f"({longest}) must fit the model's {cfg.model.max_seq_len} learned positions")
        for stack in (model.encoder, model.decoder):
            if stack is not None:
                stack.checkpoint_blocks = tc.activation_checkpointing
        reference = None
        if task == "dpo" and resume_path is None:  # the initial model's log-probs of every answer, stored once
            reference = reference_pass(model, objective, out_dir / EXAMPLES_DIR, tc.batch_size, d, tc.precision,
                                       tc.progress)
        elif task == "dpo":
            check_reference(out_dir / EXAMPLES_DIR)
        # LoRA: the base frozen, adapters (and new tensors: a classifier) train; added after dpo's reference pass,
        # whose reference is then the model without adapters (with B = 0 it computes the same)
        if cfg.finetune.lora.r > 0 and resume_path is None:
            apply_lora(model, cfg, report)

        train_set = ExampleDataset(out_dir / EXAMPLES_DIR, "train")
        val_set = ExampleDataset(out_dir / EXAMPLES_DIR, "valid")
        sides = _lengths(objective, train_set)
        cut = truncation(objective, train_set)
        if getattr(objective, "packing", False):  # the sampler draws rows of examples (validation stays unpacked)
            train_set = PackedDataset(train_set, sides[0], objective.max_len)
            sides = [train_set.lengths]
        sampler = ExampleSampler(train_set, sum(sides), tc.batch_size * d.world_size, tc.seed)
        val_lengths = sum(_lengths(objective, val_set))
        val = lambda: eval_batches(val_set, val_lengths, tc.batch_size, tc.eval_batches)
        info = {"task": task, "train_examples": len(splits["train"]), "valid_examples": len(val_set),
                "padding_share": round(sampler.padding_share(sides), 4), **cut, "init": report}
        if isinstance(train_set, PackedDataset):
            info["packed_rows"] = len(train_set)
        info["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if reference is not None:
            info["reference_pass"] = reference
        if d.is_main:
            print(f"fine-tuning {task} on {info['train_examples']} examples ({len(val_set)} for validation); padding "
                  f"{info['padding_share']:.1%} of tokens; cut: " + ", ".join(
                      f"{v} {k.split('_')[0]}" for k, v in cut.items()))
            if "random" in report and isinstance(report["random"], list):
                print(f"from {report['init']}: {report['from_init']} tensors; new at random: "
                      f"{', '.join(report['random']) or 'none'}; left out: {', '.join(report['dropped']) or 'none'}"
                      + (f"; grown for added tokens: {', '.join(report['grown'])}" if report["grown"] else ""))
            if (lora := getattr(model, "lora_config", None)) is not None:
                total = sum(p.numel() for p in model.parameters())
                print(f"LoRA r={lora['r']}, alpha={lora['alpha']:g} on {', '.join(lora['targets'])}: "
                      f"{info['trainable_params']:,} trainable parameters of {total:,} "
                      f"({info['trainable_params'] / total:.2%}); base {lora['base']} frozen")
            if "packed_rows" in info:
                print(f"packed into {len(train_set)} rows of up to {objective.max_len} tokens")
        metric = cfg.finetune.metric or {"seq2seq": "bleu", "classify": "accuracy"}.get(task, "loss")
        scores = None
        if metric != "loss" or task == "classify":  # (classification scores cost one forward pass)
            scores = task_scores(cfg, objective, splits["valid"])
            inputs, references = eval_subset(cfg, splits["valid"])
            info["baselines"] = baselines(task, inputs, references, splits["train"].outputs,
                                          cfg.data.target_lang or None)
            if d.is_main and info["baselines"]:
                print("baselines on the validation examples scored: " + "; ".join(
                    f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items())
                    for name, values in info["baselines"].items()))
        evaluation = TaskEval(scores, f"val_{metric}", metric != "loss", cfg.finetune.patience)
        generators = {"objective": torch.Generator().manual_seed(tc.seed + 1)}
        torch.manual_seed(tc.seed + 2 + d.rank)  # dropout differs across ranks
        result = train_loop(cfg, d, tokenizer, objective, model, sampler, val, generators, resume_path, stop_after,
                            evaluation, start_info=info)
    return result
