"""The training loop: one loop for every objective and architecture.

The objective builds batches and returns summed losses with target counts;
this loop divides by the global number of targets of the whole optimizer step
(all micro-batches, all ranks), so accumulation and data parallelism average
correctly whatever the masking or padding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from lmlab.config import Config, config_from_dict
from lmlab.data import Sampler, TokenDataset
from lmlab.data.prepare import check_shard_dir
from lmlab.errors import CheckpointError, ConfigError, DataError, DivergedError, make_output_dir
from lmlab.model import build_model
from lmlab.objectives import TASKS, Batch, Objective, build_objective, objective_tokenizer
from lmlab.tokenizer import Tokenizer
from lmlab.train import checkpoint as ckpt
from lmlab.train.distributed import Dist, all_reduce_sum, setup
from lmlab.train.flops import measure_peak_flops
from lmlab.train.log import MetricsLog, plot_losses, source_commit
from lmlab.train.optim import build_optimizer, lr_at
from lmlab.train.precision import (
    autocast,
    check_precision,
    compute_dtype,
    grad_scaler,
    precision_warning,
    run_precision,
)

logger = logging.getLogger(__name__)

EXAMPLES_DIR = "examples"  # a fine-tuning run's tokenized examples, under train.out_dir
# What lmlab writes in a run directory besides checkpoints and the leftovers of killed writes (checkpoint.py's
# STEP_DIR, TEMP_DIR, TEMP_FILE); --overwrite removes these and nothing else
RUN_DIRS = re.compile(rf"^(?:best|superseded-step-\d+(?:-\d+)?|{EXAMPLES_DIR}|\.tmp-{EXAMPLES_DIR}|eval-.+)$")
RUN_FILES = re.compile(r"^(?:metrics\.jsonl|loss\.png)$")


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    checkpoint: Path | None
    interrupted: bool = False
    last_eval: dict[str, float] = field(default_factory=dict)


class _ObjectiveModule(torch.nn.Module):
    """The model and its objective as one module, so DDP sees a ``forward`` however the objective
    reaches into the model (``model.hidden`` + ``model.logits`` for sparse heads, for example)."""

    def __init__(self, model: torch.nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Batch):
        return self.objective.loss(self.model, batch)


class _StopFlag:
    """Turns SIGINT/SIGTERM into a request to save and stop after the current step."""

    def __init__(self) -> None:
        self.set = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def prepare_config(cfg: Config, tokenizer: Tokenizer) -> Config:
    """Fill ``model.vocab_size`` from the tokenizer and check the two agree."""
    vocab = cfg.model.vocab_size or tokenizer.vocab_size
    if vocab < tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size ({vocab}) is smaller than the tokenizer's vocabulary "
                          f"({tokenizer.vocab_size}); leave it at 0 to take it from the tokenizer")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective: Objective, batches: Iterable[tuple], device: torch.device,
             seed: int = 0, precision: str = "fp32", forward: torch.nn.Module | None = None) -> dict[str, float]:
    """Validation loss (nats per target), perplexity (for language-model objectives) and, for objectives that
    report it, accuracy, over ``batches``: the arguments of ``objective.make_batch`` (fixed windows of the
    validation tokens, or the validation examples), the same at every call, so values are comparable.
    """
    modules = [model] + ([objective] if isinstance(objective, torch.nn.Module) else [])
    was_training = model.training
    for m in modules:
        m.eval()
    generator = torch.Generator().manual_seed(seed)
    loss_sum = n_sum = 0.0
    sums: dict[str, float] = {}
    for args in batches:
        batch = objective.make_batch(*args, generator).to(device)
        with autocast(precision, device):  # through ``forward`` (the trainer's step module) when given: FSDP's hooks
            loss, n, metrics = forward(batch) if forward is not None else objective.loss(model, batch)
        loss_sum += loss.item()
        n_sum += n.item()
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    for m in modules:
        m.train(was_training)
    val_loss = loss_sum / max(n_sum, 1)
    out = {"val_loss": val_loss}
    if objective.perplexity:  # a language-model loss: its exponential is a perplexity
        out["val_ppl"] = math.exp(min(val_loss, 50.0))
    out.update({f"val_{k}": v for k, v in objective.report(sums, n_sum).items()})  # e.g. accuracy
    return out


@dataclass
class TaskEval:
    """What a fine-tuning run adds to each evaluation: ``scores(model)`` (e.g. BLEU of decoded validation
    examples, as ``{"val_bleu": ...}``), and the key of ``last_eval`` that chooses the best checkpoint
    (``best/``), with whether higher is better and how many evaluations without progress stop the run."""

    scores: Callable[[torch.nn.Module], dict[str, float]] | None
    metric: str
    higher_is_better: bool
    patience: int = 0


def pretrain(cfg: Config, resume: str | Path | None = None, stop_after: int | None = None,
             overwrite: bool = False) -> TrainResult:
    """Train a model as ``cfg`` describes; run it plainly or under ``torchrun`` for data parallelism.

    Args:
        cfg: the run's configuration; ``cfg.data.path`` is a directory written by ``lmlab prepare``.
        resume: a checkpoint directory, or a run directory (its newest checkpoint), to continue exactly.
        stop_after: stop (and save) after this step even though the schedule runs to ``train.max_steps``.
        overwrite: a new run into a ``train.out_dir`` that holds another run first removes that run's files
            (:func:`remove_run`) instead of being refused; not with ``resume``.

    Returns:
        A :class:`TrainResult` with the last checkpoint written.

    Raises:
        ConfigError, DataError, CheckpointError: bad configuration, shards or checkpoint.
    """
    d = setup(cfg.train.device)
    resume_path = ckpt.resolve_checkpoint(resume) if resume is not None else None
    if not cfg.data.path:
        raise ConfigError("data.path is empty: set it to a directory written by `lmlab prepare`")
    if cfg.objective.name in TASKS:
        raise ConfigError(f"objective {cfg.objective.name!r} is a fine-tuning task: it trains on examples with "
                          "`lmlab finetune` (lmlab.train.finetune.finetune), not on token shards")
    check_shard_dir(cfg.data.path)  # a raw corpus given as data.path: say to run `lmlab prepare` first
    tokenizer = Tokenizer.load(Path(cfg.data.path) / "tokenizer.json")
    train_set = TokenDataset.open(cfg.data.path, "train", tokenizer)  # checks the shards match the tokenizer
    val_set = TokenDataset.open(cfg.data.path, "val", tokenizer)
    tokenizer = objective_tokenizer(cfg, tokenizer)
    if resume_path is not None and Tokenizer.load(resume_path / ckpt.TOKENIZER).sha256() != tokenizer.sha256():
        raise DataError(f"data.path {cfg.data.path} was tokenized with another tokenizer than the checkpoint "
                        f"{resume_path} was trained with; resume on the shards of that run, or re-run `lmlab "
                        "prepare` with its tokenizer")
    cfg = prepare_config(cfg, tokenizer)
    objective = build_objective(cfg, tokenizer)
    check_fresh_out_dir(Path(cfg.train.out_dir), resume_path, overwrite, d.is_main)
    Path(cfg.train.out_dir).mkdir(parents=True, exist_ok=True)
    objective.prepare(train_set.tokens)  # a one-time look at the training data (whole-word boundaries)

    tc = cfg.train
    seq_len = cfg.data.seq_len + objective.extra_tokens
    generators = {"data": torch.Generator().manual_seed(tc.seed),
                  "objective": torch.Generator().manual_seed(tc.seed + 1)}
    # Each rank draws the global batch and keeps its rows: a 2-process run sees what 1 process sees.
    sampler = Sampler(train_set, seq_len, tc.batch_size * d.world_size, generators["data"])
    val_sampler = Sampler(val_set, seq_len, tc.batch_size, torch.Generator())  # (refuses a too short split)
    val_batches = lambda: val_sampler.eval_batches(tc.eval_batches)  # fixed windows; the generator is not used

    # Every random choice comes from these generators and the global one (dropout), all saved in each
    # checkpoint; the caller's global generator is restored on return.
    rng_devices = [d.device.index or 0] if d.device.type == "cuda" else []
    check_precision(tc.precision, d.device)
    with torch.random.fork_rng(devices=rng_devices), run_precision(tc.precision):
        torch.manual_seed(tc.seed)
        model = build_model(cfg.model).to(d.device)
        objective.attach(model)  # an objective with modules of its own builds them now (seeded like the model)
        for stack in (model.encoder, model.decoder):
            if stack is not None:
                stack.checkpoint_blocks = tc.activation_checkpointing
        if isinstance(objective, torch.nn.Module):
            objective.to(d.device)
        torch.manual_seed(tc.seed + 2 + d.rank)  # dropout differs across ranks
        return train_loop(cfg, d, tokenizer, objective, model, sampler, val_batches, generators, resume_path,
                          stop_after)


def check_fresh_out_dir(out_dir: Path, resume_path: Path | None, overwrite: bool = False,
                        is_main: bool = True) -> None:
    """Refuse a ``train.out_dir`` that holds another run's checkpoints (a new run, or a resumed one whose
    checkpoint lives elsewhere: it may continue into an empty directory, a branch of that run), that is a file,
    or that cannot be written; create it. With ``overwrite`` a new run first removes what lmlab wrote there
    (:func:`remove_run`): the main rank removes, every rank waits until it is done."""
    out_dir = Path(out_dir)
    if overwrite and resume_path is not None:
        raise ConfigError("--overwrite and --resume exclude each other: --resume continues a run, --overwrite "
                          "replaces the run in train.out_dir with a new one; give one of them")
    held = ckpt.list_checkpoints(out_dir)
    if overwrite:
        if is_main and (removed := remove_run(out_dir)):
            logger.warning("--overwrite: removed %s from %s", ", ".join(removed), out_dir)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # no rank goes on while the old run is being removed
    elif held and resume_path is None:
        raise CheckpointError(f"{out_dir} already holds checkpoints; continue with --resume {out_dir}, "
                              "choose another train.out_dir, or replace that run with --overwrite")
    elif held and not Path(resume_path).resolve().parent == out_dir.resolve():
        raise CheckpointError(f"train.out_dir {out_dir} holds another run's checkpoints ({held[-1].name}), not "
                              f"those of {resume_path}; resuming would write among them. Continue that run with "
                              f"--resume {out_dir}, or give --train.out_dir an empty or new directory to continue "
                              f"{resume_path} there")
    make_output_dir(out_dir, "train.out_dir", CheckpointError)


def remove_run(out_dir: Path) -> list[str]:
    """Remove what lmlab wrote in the run directory ``out_dir``: its checkpoints, ``best/``, ``flops-*/``,
    ``superseded-step-*/``, ``metrics.jsonl``, ``loss.png``, fine-tuning's ``examples/``, ``eval-*/`` and the
    leftovers of killed writes; any other file there is left. Returns the names removed."""
    removed = []
    for p in sorted(out_dir.iterdir()) if out_dir.is_dir() else ():
        patterns = (ckpt.STEP_DIR, ckpt.FLOPS_DIR, ckpt.TEMP_DIR, RUN_DIRS) if p.is_dir() \
            else (ckpt.TEMP_FILE, RUN_FILES)
        if not any(r.match(p.name) for r in patterns):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except OSError as e:
            raise CheckpointError(f"--overwrite: cannot remove {p}: {e.strerror or e}") from None
        removed.append(p.name)
    return removed


def _set_aside_newer(out_dir: Path, resume_path: Path, step: int) -> Path | None:
    """Resuming from an older checkpoint of this run: move its newer checkpoints (and a newer ``best/`` or
    ``flops-*/``), with a copy of metrics.jsonl, into ``out_dir/superseded-step-NNNNNN[-k]``. They are kept, but
    neither pruned in favour of the new branch's checkpoints nor taken for its newest by a later ``--resume``."""
    newer = [p for p in ckpt.list_checkpoints(out_dir) if int(p.name.split("-")[1]) > step]
    for kept in [out_dir / ckpt.BEST, *sorted(p for p in out_dir.iterdir() if ckpt.FLOPS_DIR.match(p.name))]:
        if kept.is_dir():
            try:
                if ckpt.read_json(kept / ckpt.STATE).get("step", 0) > step:
                    newer.append(kept)
            except CheckpointError:
                pass
    if not newer or resume_path.resolve().parent != out_dir.resolve():
        return None
    aside = out_dir / f"superseded-step-{step:06d}"
    k = 1
    while aside.exists():
        k += 1
        aside = out_dir / f"superseded-step-{step:06d}-{k}"
    aside.mkdir()
    if (out_dir / "metrics.jsonl").is_file():
        shutil.copy2(out_dir / "metrics.jsonl", aside / "metrics.jsonl")
    for p in newer:
        os.replace(p, aside / p.name)
    return aside


def flops_per_step(objective: Objective, model: torch.nn.Module, sampler: Any, generators: dict[str, torch.Generator],
                   grad_accum: int, world_size: int, draws: int = 8) -> float:
    """The mean training FLOPs of a global step, over ``draws`` batches drawn the way the run draws them; the
    sampler's and every generator's state is put back afterwards, so the run itself is untouched."""
    data_state, states = sampler.checkpoint_state(), {k: g.get_state() for k, g in generators.items()}
    total = 0.0
    for _ in range(draws):
        batch = objective.make_batch(*sampler.sample(), generators["objective"])
        total += objective.flops(model, batch)
    sampler.restore(data_state)
    for k, g in generators.items():
        g.set_state(states[k])
    return total / draws * grad_accum


def train_loop(cfg: Config, d: Dist, tokenizer: Tokenizer, objective: Objective, model: torch.nn.Module,
               sampler: Any, val_batches: Callable[[], Iterable[tuple]], generators: dict[str, torch.Generator],
               resume_path: Path | None, stop_after: int | None, task: TaskEval | None = None,
               start_info: dict[str, Any] | None = None) -> TrainResult:
    """The one training loop of pretraining and fine-tuning.

    Args:
        sampler: ``sample()`` gives the arguments of ``objective.make_batch`` for the next global batch (windows
            of a token stream, or examples); ``checkpoint_state()``/``restore()`` carry what its generator in
            ``generators`` does not.
        val_batches: a fresh iterable of fixed validation batches (``make_batch`` arguments) at each call.
        generators: every generator of the run by name (``"objective"`` feeds ``make_batch``), all checkpointed.
        task: fine-tuning: task scores at each evaluation, the best checkpoint and early stopping.
        start_info: more facts for the first line of ``metrics.jsonl`` (examples, padding, truncation).
    """
    tc = cfg.train
    out_dir = Path(tc.out_dir)
    step_module = _ObjectiveModule(model, objective)  # holds the objective's own parameters too, if any
    fsdp = tc.parallel == "fsdp" and d.world_size > 1
    if fsdp:  # shard every block, then the rest (embeddings, heads, an objective's modules) at the root
        for stack in (model.encoder, model.decoder):
            for block in stack.layers if stack is not None else ():
                fully_shard(block)
        fully_shard(step_module)
    optimizer = build_optimizer(step_module, tc)
    owned = objective if isinstance(objective, torch.nn.Module) else None

    scaler = grad_scaler(tc.precision, d.device)  # fp16 only; a pass-through otherwise
    step, tokens_seen, flops_seen = 0, 0, 0.0
    # fine-tuning: the best value of the task metric so far, its step, and evaluations since it improved
    best: dict[str, Any] = {"value": None, "step": 0, "stale": 0}
    if resume_path is not None:
        state = ckpt.load_training_state(resume_path, model, optimizer, generators, owned)
        step, tokens_seen, flops_seen = state["step"], state.get("tokens_seen", 0), state.get("flops_seen", 0.0)
        if "grad_scaler" in state:
            scaler.load_state_dict(state["grad_scaler"])
        sampler.restore(state.get("data_state", {}))
        best = state.get("best", best)
        if d.is_main and (aside := _set_aside_newer(out_dir, resume_path, step)) is not None:
            logger.warning("resuming from step %d: the newer checkpoints of %s were moved to %s", step, out_dir,
                           aside)
    runner = DDP(step_module) if d.world_size > 1 and not fsdp else step_module
    if tc.compile:
        runner = torch.compile(runner)
    try:
        if d.is_main:
            ckpt.clean_stale(out_dir)  # what killed runs left (a metrics.jsonl rewrite, a checkpoint write)
        log = MetricsLog(out_dir / "metrics.jsonl", resume_step=step if resume_path else None) if d.is_main \
            else None
    except OSError as e:
        raise CheckpointError(f"cannot write {out_dir / 'metrics.jsonl'}: {e.strerror or e}") from None

    if tc.max_flops:  # the schedule spans the steps the budget affords: as estimated when the run began
        saved = state["config"]["train"] if resume_path is not None else {}
        if saved.get("max_flops") == tc.max_flops:
            steps = saved["max_steps"]
        else:
            per_step = flops_per_step(objective, model, sampler, generators, tc.grad_accum, d.world_size)
            steps = max(1, math.ceil(tc.max_flops / per_step))
            if d.is_main:
                print(f"train.max_flops {tc.max_flops:.3g}: about {per_step:.3g} FLOPs a step, so "
                      f"train.max_steps {steps}", flush=True)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(tc, max_steps=steps))
        tc = cfg.train
    n_params = model.num_params()
    # FLOP/s for MFU in this precision; None where it means nothing (bf16 emulated on a CPU)
    peak = tc.peak_flops or measure_peak_flops(d.device, compute_dtype(tc.precision))
    if d.is_main:
        if (warning := precision_warning(tc.precision, d.device)) is not None:
            logger.warning(warning)
        if tc.max_steps < tc.warmup_steps:
            logger.warning("train.max_steps (%d) is below train.warmup_steps (%d): the learning rate never gets "
                           "past %.3g of train.lr (%g); lower train.warmup_steps", tc.max_steps, tc.warmup_steps,
                           tc.max_steps / tc.warmup_steps, tc.lr)
    state_common = {"config": cfg.to_dict(), "world_size": d.world_size}
    if log is not None and resume_path is None:
        log.write({"step": 0, "event": "start", "params": n_params, "peak_flops": peak,
                   "world_size": d.world_size, **source_commit(), **(start_info or {})})

    def validate() -> dict[str, float]:
        """The validation loss (and perplexity...) and, fine-tuning, the task's scores of the model now."""
        scores = evaluate(model, objective, val_batches(), d.device, precision=tc.precision, forward=step_module)
        if task is not None and task.scores is not None:
            scores.update(task.scores(model))
        return scores

    if tc.eval_at_start and resume_path is None:  # the model as it starts: what training is measured against
        first = validate()
        if log is not None:
            log.write({"step": 0, **first})
        if d.is_main:
            print("step 0: " + ", ".join(f"{k} {v:.4f}" for k, v in first.items()), flush=True)

    last_step = min(tc.max_steps, stop_after) if stop_after is not None else tc.max_steps
    bar = tqdm(total=last_step, initial=step, disable=not (tc.progress and d.is_main), unit="step",
               dynamic_ncols=True, desc=f"{cfg.objective.name}")
    checkpoint: Path | None = resume_path
    last_eval: dict[str, float] = {}
    interrupted = False
    rows = slice(d.rank * tc.batch_size, (d.rank + 1) * tc.batch_size)

    def state() -> dict[str, Any]:
        return {**state_common, "tokens_seen": tokens_seen, "flops_seen": flops_seen, "last_eval": last_eval,
                "data_state": sampler.checkpoint_state(), **({"best": best} if task is not None else {}),
                **({"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {})}

    # Non-finite guard: a step whose loss or gradient norm is NaN or inf is skipped on the device (no sync);
    # the counts are read where the loop syncs anyway (logging, saving).
    params = [p for p in step_module.parameters() if p.requires_grad]
    fused = bool(optimizer.defaults.get("fused"))  # fused AdamW skips a step itself when told (found_inf)
    zero = torch.zeros((), dtype=torch.int64, device=d.device)
    bad_run, bad_worst, bad_total = zero.clone(), zero.clone(), zero.clone()  # this streak, the longest, all

    def check_bad() -> int:
        """Stop (raise) if ``train.max_bad_steps`` steps in a row were not finite; the number skipped so far."""
        run, worst, total = torch.stack([bad_run, bad_worst, bad_total]).tolist()
        if worst >= tc.max_bad_steps:
            bar.close()
            if log is not None:
                log.write({"step": step, "event": "diverged", "skipped_steps": total})
            kept = (f"the last good checkpoint is {checkpoint}: continue from it with --resume {checkpoint} and a "
                    "lower train.lr, a train.grad_clip or another train.precision") if checkpoint is not None \
                else "no checkpoint had been written"
            raise DivergedError(f"the loss or gradient norm was NaN or inf in {worst} steps in a row "
                                f"(train.max_bad_steps = {tc.max_bad_steps}; {total} skipped in all); stopped at "
                                f"step {step} without saving; {kept}")
        return total

    def save() -> Path:
        check_bad()
        # every rank takes part (FSDP gathers its shards); the main one writes
        path = ckpt.save_checkpoint(out_dir, step, model, tokenizer, optimizer, generators, state(),
                                    tc.keep_last, owned, write=d.is_main)
        if d.world_size > 1:
            torch.distributed.barrier()
        return path

    def improved() -> bool:
        """Whether the task metric of ``last_eval`` beats the best so far (then ``best`` records it)."""
        value = last_eval.get(task.metric)
        if value is None:
            return False
        better = best["value"] is None or (value > best["value"] if task.higher_is_better else value < best["value"])
        if better:
            best.update(value=value, step=step, stale=0)
        else:
            best["stale"] += 1
        return better

    step_module.train()
    first_step = step
    window_t, window_tokens, window_flops = time.perf_counter(), 0, 0.0
    with _StopFlag() as stop:
        while step < last_step:
            lr = lr_at(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Build all micro-batches first so that the global target count is known before any backward.
            batches = []
            for _ in range(tc.grad_accum):
                batches.append(objective.make_batch(*sampler.sample(), generators["objective"]).rows(rows))
            n_local = sum(objective.num_targets(b) for b in batches)
            step_flops = sum(objective.flops(model, b) for b in batches) * d.world_size  # (on the CPU batches)
            window_flops += step_flops
            n_global = all_reduce_sum(torch.tensor([float(n_local)]), d).item()
            loss_total = torch.zeros((), device=d.device)
            metric_sums: dict[str, torch.Tensor] = {}  # the objective's summed metrics of this step
            for i, batch in enumerate(batches):
                batch = batch.to(d.device)
                sync = i == len(batches) - 1 or d.world_size == 1
                if fsdp:
                    step_module.set_requires_gradient_sync(sync)
                ctx = contextlib.nullcontext() if sync or fsdp else runner.no_sync()
                with ctx:
                    with autocast(tc.precision, d.device):
                        loss_sum, _, metrics = runner(batch)
                    # DDP averages gradients over ranks; scale so the result is sum / global targets.
                    scaler.scale(loss_sum * (d.world_size / max(n_global, 1.0))).backward()
                loss_total += loss_sum.detach()
                for k, v in metrics.items():
                    metric_sums[k] = metric_sums.get(k, 0.0) + v.detach().float()
                window_tokens += batch.num_tokens() * d.world_size
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            if isinstance(norm, DTensor):
                norm = norm.full_tensor()
            bad = ~torch.isfinite(loss_total)
            if not scaler.is_enabled():  # fp16: an inf gradient is the loss scaler's to skip (and rescale)
                bad |= ~torch.isfinite(norm)
            if d.world_size > 1:  # the loss is this rank's: every rank must skip the same steps
                bad = all_reduce_sum(bad.to(torch.float32).reshape(1), d).reshape(()) > 0
            if fused and not scaler.is_enabled():
                optimizer.found_inf = bad.to(torch.float32)  # the update is skipped on the device when it is 1
                optimizer.step()
                del optimizer.found_inf
            elif scaler.is_enabled() or not bad.item():  # (fp16 skips inside the scaler; foreach AdamW syncs)
                scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            bad_run = (bad_run + 1) * bad
            bad_worst = torch.maximum(bad_worst, bad_run)
            bad_total = bad_total + bad
            step += 1
            tokens_seen += sum(b.num_tokens() for b in batches) * d.world_size
            flops_before, flops_seen = flops_seen, flops_seen + step_flops
            # the first step whose FLOPs reach a train.save_at_flops count keeps the model as it is then
            for count in tc.save_at_flops:  # (a resumed run passes each count where it did: the same step)
                if flops_before < count <= flops_seen:
                    ckpt.save_best(out_dir, model, tokenizer, {**state(), "step": step}, write=d.is_main,
                                   name=ckpt.flops_dir(count))
            if tc.max_flops and flops_seen >= tc.max_flops:  # the compute budget is spent: this step is the last
                last_step = min(last_step, step)
            if tc.compile and step == first_step + 1:  # the first step compiles: report it, leave it out of tok/s
                compile_s = time.perf_counter() - window_t
                window_t, window_tokens, window_flops = time.perf_counter(), 0, 0.0
                if log is not None:
                    log.write({"step": step, "event": "compiled", "compile_s": compile_s})
                if d.is_main and tc.progress:
                    bar.write(f"torch.compile: first step took {compile_s:.1f} s")

            if step % tc.log_every == 0 or step == last_step:
                skipped = check_bad()
                loss = all_reduce_sum(loss_total.reshape(1).cpu(), d).item() / max(n_global, 1.0)
                keys = sorted(metric_sums)
                summed = all_reduce_sum(torch.stack([metric_sums[k] for k in keys]).cpu(), d).tolist() if keys else []
                reported = objective.report(dict(zip(keys, summed, strict=True)), n_global)
                elapsed = time.perf_counter() - window_t
                tps = window_tokens / max(elapsed, 1e-9)
                mfu = window_flops / max(elapsed, 1e-9) / (peak * d.world_size) if peak else None
                window_t, window_tokens, window_flops = time.perf_counter(), 0, 0.0
                mfu_text = f"{mfu:.1%}" if mfu is not None else "?"
                shown = {k: f"{v:.3f}" for k, v in reported.items()}  # the objective's own (accuracy, ...)
                bar.set_postfix(loss=f"{loss:.3f}", **shown, tok_s=f"{tps:,.0f}", mfu=mfu_text, refresh=False)
                if log is not None:
                    log.write({"step": step, "loss": loss if math.isfinite(loss) else None, "lr": lr,
                               "tokens": tokens_seen, "flops": flops_seen, "tokens_per_s": tps, "mfu": mfu,
                               **reported,
                               **({"skipped_steps": skipped} if skipped else {})})
                if d.is_main and not tc.progress:  # no bar (CI, nohup): a plain line instead
                    print(f"step {step}/{last_step}: loss {loss:.4f}, "
                          + "".join(f"{k} {v}, " for k, v in shown.items())
                          + f"lr {lr:.3g}, {tps:,.0f} tok/s, mfu {mfu_text}"
                          + (f", {skipped} skipped" if skipped else ""), flush=True)
            if step % tc.eval_every == 0 or step == last_step:
                eval_t = time.perf_counter()
                last_eval = validate()
                new_best = task is not None and improved()
                if new_best:  # every rank takes part (FSDP gathers); the main one writes
                    ckpt.save_best(out_dir, model, tokenizer, {**state(), "step": step}, write=d.is_main)
                eval_s = time.perf_counter() - eval_t
                window_t += eval_s  # tokens/s counts training time only
                if log is not None:
                    log.write({"step": step, **last_eval, "eval_s": round(eval_s, 3),
                               **({"best": True} if new_best else {})})
                    plot_losses(log.read(), out_dir / "loss.png", f"{cfg.objective.name} · {cfg.model.arch}",
                                metric=task.metric if task is not None else None)
                if d.is_main:
                    (bar.write if tc.progress else print)(
                        f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items())
                        + (" (best so far)" if new_best else ""))
            bar.update(1)
            patience_out = task is not None and task.patience > 0 and best["stale"] >= task.patience
            if patience_out and step % tc.eval_every == 0 and d.is_main and tc.progress:
                bar.write(f"early stop: {task.metric} has not improved for {task.patience} evaluations "
                          f"(best {best['value']:.4f} at step {best['step']})")
            stopping = stop.set or step == last_step or patience_out
            if d.world_size > 1:  # every rank must agree to stop, or the others hang in the next all-reduce
                stopping = bool(all_reduce_sum(torch.tensor([float(stopping)]), d).item())
            # a periodic checkpoint is not written in the middle of skipped steps (the next good one is saved)
            if stopping or (step % tc.save_every == 0 and check_bad() >= 0 and not bool(bad_run)):
                checkpoint = save()
            if stopping:
                interrupted = stop.set
                break
    bar.close()
    return TrainResult(out_dir=out_dir, step=step, checkpoint=checkpoint, interrupted=interrupted,
                       last_eval=last_eval)


def config_from_checkpoint(path: str | Path) -> Config:
    """The full run configuration a training checkpoint was written with."""
    path = ckpt.resolve_checkpoint(path)
    state = ckpt.read_json(path / ckpt.STATE)
    if "config" not in state:
        raise CheckpointError(f"{path / ckpt.STATE} has no run configuration")
    return config_from_dict(state["config"])
