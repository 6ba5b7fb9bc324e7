"""Task evaluation of fine-tuned models: decode or classify examples, then score with the metric libraries.

The inputs are formatted by the run's own task objective (prefix, special tokens, truncation), so a model is
evaluated exactly as it was fine-tuned. Generation is batched over inputs sorted by length (little padding),
greedy or beam search through :func:`lmlab.generate` with its KV cache; encoder outputs are computed once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.data.examples import Examples, Fields, RawExamples, read_examples, split_file
from lmlab.errors import CheckpointError, DataError, TokenizerError
from lmlab.eval.baselines import copy_baseline, lead_baseline, majority_baseline
from lmlab.eval.metrics import compute
from lmlab.objectives.base import pad_batch

SEQ2SEQ_METRICS = ["bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"]
CLASSIFY_METRICS = ["accuracy", "macro_f1"]


def _check_sizes(batch_size: int, max_new_tokens: int = 0) -> None:
    from lmlab.infer import InferenceError

    if batch_size < 1 or max_new_tokens < 0:
        raise InferenceError(f"batch_size must be >= 1 and max_new_tokens >= 0, got {batch_size} and "
                             f"{max_new_tokens}")


@torch.no_grad()
def predict(model: torch.nn.Module, objective: Any, sources: list[str], *, num_beams: int = 1,
            max_new_tokens: int = 64, batch_size: int = 32) -> list[str]:
    """The model's output text for each source (in order), decoded greedily or with beam search.

    Raises:
        InferenceError: ``batch_size`` below 1 or ``max_new_tokens`` below 0 (or a decoding option out of range).
    """
    from lmlab.infer.generate import generate

    _check_sizes(batch_size, max_new_tokens)
    was_training = model.training
    model.eval()
    rows = [objective.encode(s) for s in sources]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # similar lengths share a batch
    enc_dec = objective.arch == "encoder-decoder"
    limit = None
    stack = model.decoder
    if stack.pos_emb is not None and not enc_dec:  # a decoder's prompt and output share its learned positions
        limit = stack.pos_emb.num_embeddings - stack.pos_offset
    out: list[str] = [""] * len(rows)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = pad_batch([rows[i] for i in chunk], left=not enc_dec, pad=objective.pad)
        new = max_new_tokens if limit is None else max(min(max_new_tokens, limit - ids.shape[1]), 1)
        tokens = generate(model, ids.to(device), mask.to(device), max_new_tokens=new, num_beams=num_beams,
                          eos_token_id=objective.eos, pad_token_id=objective.pad,
                          decoder_start_token_id=objective.start)
        generated = tokens[:, 1:] if enc_dec else tokens[:, ids.shape[1]:]
        for i, row in zip(chunk, generated.tolist(), strict=True):
            end = row.index(objective.eos) if objective.eos in row else len(row)
            out[i] = objective.tokenizer.decode(row[:end], skip_special_tokens=True).strip()
    model.train(was_training)
    return out


@torch.no_grad()
def classify(model: torch.nn.Module, objective: Any, texts: list[str], batch_size: int = 64
             ) -> tuple[list[str], list[float]]:
    """The predicted label of each text and its probability."""
    _check_sizes(batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = [objective.encode(t) for t in texts]
    labels, probs = [], []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_batch(rows[start:start + batch_size], pad=objective.pad)
        ids, mask = ids.to(device), mask.to(device)
        p = model.classify(model.hidden(ids, attention_mask=mask), attention_mask=mask).float().softmax(-1)
        best = p.max(-1)
        labels += [model.id2label[i] for i in best.indices.tolist()]
        probs += best.values.tolist()
    model.train(was_training)
    return labels, probs


def pair_rows(objective: Any, examples: RawExamples) -> list[tuple[np.ndarray, ...]]:
    """Each preference pair's rows as example shards hold them: chosen ids and scored flags, rejected ids and
    flags (dpo)."""
    rows = []
    for x, y, z, where in zip(examples.inputs, examples.outputs, examples.rejected, examples.origin, strict=True):
        try:
            (c, c_flags), (r, r_flags) = objective.row(x, y), objective.row(x, z)
        except TokenizerError as e:
            raise DataError(f"{where}: {e}") from None
        rows.append((np.array(c, dtype=np.int64), np.array(c_flags, dtype=bool), np.array(r, dtype=np.int64),
                     np.array(r_flags, dtype=bool)))
    return rows


@torch.no_grad()
def pair_logps(model: torch.nn.Module, objective: Any, rows: list[tuple[np.ndarray, ...]], batch_size: int = 32
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) float64 log-probs of each pair's chosen and rejected answers under ``model``, and (N, 2) their
    token counts (dpo's :meth:`~lmlab.objectives.dpo.DPO.logps`), batched by length."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logps = torch.zeros(len(rows), 2, dtype=torch.float64)
    counts = torch.zeros(len(rows), 2, dtype=torch.long)
    order = sorted(range(len(rows)), key=lambda i: -max(len(rows[i][0]), len(rows[i][2])))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        c, c_flags, r, r_flags = zip(*(rows[i] for i in chunk), strict=True)
        examples = Examples(list(c), scored=list(c_flags), rejected=list(r), rejected_scored=list(r_flags))
        lp, n = objective.logps(model, objective.make_batch(examples, None).to(device))
        logps[chunk], counts[chunk] = lp.cpu(), n.cpu()
    model.train(was_training)
    return logps, counts


def preference_scores(model: torch.nn.Module, objective: Any, examples: RawExamples, reference: torch.nn.Module,
                      batch_size: int = 32) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """A dpo model's held-out preference scores on ``examples`` against ``reference`` (the model its run started
    from): the loss and TRL's ``rewards/accuracies``, ``rewards/margins``... (means over pairs), and a record per
    pair (prompt, chosen, rejected and their rewards)."""
    rows = pair_rows(objective, examples)
    ref, _ = pair_logps(reference, objective, rows, batch_size)
    policy, counts = pair_logps(model, objective, rows, batch_size)
    losses, rewards, logps = objective.compare(policy, ref, counts)
    sums = {k: float(v) for k, v in objective.pair_metrics(rewards, logps).items()}
    scores = {"loss": losses.mean().item(), **objective.report(sums, len(losses))}
    records = [{"prompt": x, "chosen": y, "rejected": z, "reward_chosen": rc, "reward_rejected": rr}
               for x, y, z, (rc, rr) in zip(examples.inputs, examples.outputs, examples.rejected, rewards.tolist(),
                                            strict=True)]
    return scores, records


def reference_model(path: str | Path, cfg: Any) -> torch.nn.Module:
    """The model a dpo run started from, its reference: ``finetune.init`` built again as the run built it, and
    checked against the weights its reference pass recorded (``examples/reference.json``).

    Raises:
        CheckpointError: the init cannot be loaded, or is no longer the model the run started from.
    """
    from lmlab.train.checkpoint import resolve_model_dir
    from lmlab.train.finetune import initial_model
    from lmlab.train.reference import INFO, weights_sha256
    from lmlab.train.trainer import EXAMPLES_DIR

    try:
        with torch.random.fork_rng():
            model, _, _ = initial_model(cfg, None)
    except (CheckpointError, OSError) as e:
        raise CheckpointError(f"the reference of the dpo run {path} is the model it started from, finetune.init "
                              f"{cfg.finetune.init}, and that cannot be built again: {e}") from None
    info = resolve_model_dir(path).parent / EXAMPLES_DIR / INFO
    if info.is_file() and json.loads(info.read_text(encoding="utf-8")).get("model") != weights_sha256(model):
        raise CheckpointError(f"finetune.init {cfg.finetune.init} is no longer the model the dpo run {path} started "
                              "from (its weights differ from those of the run's reference pass), so rewards against "
                              "it would mean nothing")
    return model


def task_scores(cfg: Any, objective: Any, valid: RawExamples):
    """The scores a fine-tuning run adds to each evaluation, as a function of the model: ``val_bleu``, ``val_chrf``,
    ``val_rouge*`` on the first ``finetune.eval_examples`` validation examples decoded, or ``val_accuracy`` and
    ``val_macro_f1`` of a classifier."""
    fc = cfg.finetune
    sources, references = eval_subset(cfg, valid)
    max_new = fc.max_new_tokens or cfg.data.decoder_seq_len or cfg.data.seq_len

    def scores(model: torch.nn.Module) -> dict[str, float]:
        if objective.name == "classify":
            predictions, _ = classify(model, objective, sources, batch_size=cfg.train.batch_size * 4)
            names = CLASSIFY_METRICS
        else:
            predictions = predict(model, objective, sources, num_beams=fc.num_beams, max_new_tokens=max_new,
                                  batch_size=cfg.train.batch_size * 4)
            names = SEQ2SEQ_METRICS
        values = compute(names, predictions, references, lang=cfg.data.target_lang or None)
        return {f"val_{k}": v for k, v in values.items() if isinstance(v, float)}

    return scores


def baselines(kind: str, inputs: list[str], references: list[str], train_labels: list[str] | None = None,
              lang: str | None = None) -> dict[str, dict[str, float]]:
    """The scores of the baselines that give a result its meaning: copying the source and its lead sentence
    (text to text), the training labels' majority class (classification); none for instructions (sft), whose
    answers are no copy of their prompts."""
    if kind == "sft":
        return {}
    if kind == "classify":
        guess = majority_baseline(train_labels or references, len(references))
        return {"majority class": _split(compute(CLASSIFY_METRICS, guess, references))[0]}
    return {name: _split(compute(SEQ2SEQ_METRICS, guess, references, lang=lang))[0]
            for name, guess in (("copy the source", copy_baseline(inputs)), ("lead sentence", lead_baseline(inputs)))}


def eval_subset(cfg: Any, valid: RawExamples) -> tuple[list[str], list[str]]:
    """The validation inputs and references a fine-tuning run scores: the first ``finetune.eval_examples``."""
    n = cfg.finetune.eval_examples or len(valid)
    return valid.inputs[:n], valid.outputs[:n]


@dataclass
class EvalResult:
    """What :func:`evaluate` measured: the scores, the baselines' scores, the metric signatures and speed."""

    split: str
    num_examples: int
    scores: dict[str, float]
    baselines: dict[str, dict[str, float]]
    signatures: dict[str, str] = field(default_factory=dict)
    examples_per_s: float = 0.0
    predictions_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "num_examples": self.num_examples, "scores": self.scores,
                "baselines": self.baselines, "signatures": self.signatures, "examples_per_s": self.examples_per_s,
                "predictions_file": str(self.predictions_file) if self.predictions_file else None}


def _split(values: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    return ({k: v for k, v in values.items() if not isinstance(v, str)},
            {k.removesuffix("_signature"): v for k, v in values.items() if isinstance(v, str)})


def load_task(path: str | Path, device: str | torch.device = "cpu", for_inference: bool = False,
              dtype: str = "fp32", quantize: str | None = None, rows: int = 1):
    """``(model, objective, cfg)`` of a fine-tuned checkpoint or run (its ``best/`` model when it has one): the
    objective formats inputs as the run did. ``for_inference``, ``dtype``, ``quantize`` and ``rows`` as
    :func:`~lmlab.train.checkpoint.load_model` takes them."""
    from lmlab.config import config_from_dict
    from lmlab.errors import CheckpointError
    from lmlab.objectives import TASKS, build_objective
    from lmlab.train.checkpoint import STATE, load_model, read_json, resolve_model_dir

    directory = resolve_model_dir(path)
    state = read_json(directory / STATE) if (directory / STATE).is_file() else {}
    if not isinstance(state.get("config"), dict) or state["config"].get("objective", {}).get("name") not in TASKS:
        raise CheckpointError(f"{path} is not a fine-tuned model (its training_state.json names no task "
                              f"objective: {', '.join(TASKS)}); fine-tune it with `lmlab finetune`")
    cfg = config_from_dict(state["config"])
    model, tokenizer = load_model(directory, device, for_inference=for_inference, dtype=dtype, quantize=quantize,
                                  rows=rows)
    objective = build_objective(cfg, tokenizer)
    objective.attach(model)
    return model, objective, cfg


def evaluate(path: str | Path, data: str | Path, split: str = "test", *, num_beams: int = 1,
             max_new_tokens: int = 0, batch_size: int = 32, limit: int = 0, out: str | Path | None = None,
             device: str | torch.device = "cpu", dtype: str = "fp32", quantize: str | None = None) -> EvalResult:
    """Evaluate a fine-tuned model on a split of examples: decode (or classify) every example, write
    ``predictions.jsonl`` (input, reference, prediction per line) and ``scores.json`` to ``out`` (default
    ``<run>/eval-<split>``), and score with sacrebleu / rouge-score (or accuracy and macro-F1), beside the
    baselines: copying the source and its lead sentence (text to text), the training set's majority label
    (classification). A dpo model is scored on preference pairs against the model its run started from
    (:func:`preference_scores`: loss, reward accuracy and margin...), one line per pair with its rewards.

    Raises:
        CheckpointError: not a fine-tuned checkpoint; DataError: no such split or unreadable examples.
    """
    model, objective, cfg = load_task(path, device, for_inference=True, dtype=dtype, quantize=quantize,
                                      rows=batch_size * max(num_beams, 1))  # the rows of a decoding step
    kind = objective.name
    file = split_file(data, split) if Path(data).is_dir() else Path(data)
    if file is None:
        raise DataError(f"{data} has no {split} split (a {split}.jsonl/.tsv/.csv/.parquet file)")
    examples = read_examples(file, kind, Fields.from_config(cfg.data))
    if limit < 0:
        raise DataError(f"limit must be >= 0 (0: every example), got {limit}")
    if limit:
        examples = examples.take(list(range(min(limit, len(examples)))))
    t0 = time.perf_counter()
    if kind == "dpo":
        scores, records = preference_scores(model, objective, examples, reference_model(path, cfg), batch_size)
        rate = len(examples) / max(time.perf_counter() - t0, 1e-9)
        return _write_eval(path, split, out, records, EvalResult(split, len(examples), scores, {}, {}, rate))
    if kind == "classify":
        predictions, _ = classify(model, objective, examples.inputs, batch_size=batch_size)
    else:
        max_new = max_new_tokens or cfg.finetune.max_new_tokens or cfg.data.decoder_seq_len or cfg.data.seq_len
        predictions = predict(model, objective, examples.inputs, num_beams=num_beams, max_new_tokens=max_new,
                              batch_size=batch_size)
    rate = len(examples) / max(time.perf_counter() - t0, 1e-9)
    lang = cfg.data.target_lang or None
    train_labels = None
    if kind == "classify":
        scores, signatures = _split(compute(CLASSIFY_METRICS, predictions, examples.outputs))
        train_file = split_file(data, "train") if Path(data).is_dir() else None
        if train_file is not None:
            train_labels = read_examples(train_file, kind, Fields.from_config(cfg.data)).outputs
    else:
        scores, signatures = _split(compute(SEQ2SEQ_METRICS, predictions, examples.outputs, lang=lang))
    guesses = baselines(kind, examples.inputs, examples.outputs, train_labels, lang)
    records = [{"input": x, "reference": ref, "prediction": pred}
               for x, ref, pred in zip(examples.inputs, examples.outputs, predictions, strict=True)]
    return _write_eval(path, split, out, records, EvalResult(split, len(examples), scores, guesses, signatures, rate))


def _write_eval(path: str | Path, split: str, out: str | Path | None, records: list[dict[str, Any]],
                result: EvalResult) -> EvalResult:
    """Write ``predictions.jsonl`` (``records``, one a line) and ``scores.json`` (``result``) to ``out``."""
    from lmlab.train.checkpoint import resolve_model_dir

    if out is None:  # a run: RUN/eval-SPLIT; a checkpoint directory given itself: beside it, named after it
        model_dir = resolve_model_dir(path)
        out = model_dir.parent / (f"eval-{split}" if model_dir != Path(path) else f"eval-{split}-{model_dir.name}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    result.predictions_file = out_dir / "predictions.jsonl"
    (out_dir / "scores.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result
