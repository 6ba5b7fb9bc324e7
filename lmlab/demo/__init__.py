"""``lmlab demo``: pretrain, fine-tune and use small models within a time budget on a laptop CPU.

On the docstrings of the Python standard library (no download), it trains a byte-level BPE tokenizer, prepares
token shards, pretrains a decoder with causal LM and an encoder with masked LM, fine-tunes each for a real task
held out by module (the decoder summarizes a docstring into its summary line, the encoder tells which package a
docstring comes from), each from the pretrained weights and from scratch with the same steps, and shows what
pretraining bought. Every stage is sized to its share of ``--minutes`` from a few measured steps
(:mod:`lmlab.demo.budget`).
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lmlab.config import load_config
from lmlab.data import TokenDataset, prepare
from lmlab.demo.budget import EVALS, Budget, format_steps, parse_steps, probe
from lmlab.demo.tasks import write_demo_data
from lmlab.eval import unigram_loss
from lmlab.infer import fill_mask, sample
from lmlab.objectives import check_objective
from lmlab.tokenizer import train_tokenizer
from lmlab.train import load_model, pretrain
from lmlab.train.finetune import finetune
from lmlab.train.log import read_metrics

CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
FILL_MASK_TEXTS = ["Return the [MASK] of the list.", "If the file does not [MASK], an exception is raised."]
PROMPTS = ["Return a new", "This module provides"]
# shares of the training budget; a task's share pays for two runs (pretrained, from scratch)
SHARES = {"clm": 0.30, "mlm": 0.30, "summarize": 0.24, "classify": 0.16}
DEFAULT_MINUTES = 8.0
# below these step counts a stage learns too little to show anything (the masked LM leaves the unigram plateau
# after about 100 steps; fine-tuning needs a few epochs' worth of batches)
USEFUL_STEPS = {"clm": 100, "mlm": 100, "summarize": 60, "classify": 60}
TITLES = {"clm": "a {n}-layer decoder with causal LM", "mlm": "a {n}-layer encoder with masked LM",
          "summarize": "the decoder to summarize a docstring (body -> summary line)",
          "classify": "the encoder to tell a docstring's package"}
METRICS = {"summarize": ("rougeL", "ROUGE-L", "lead sentence"), "classify": ("accuracy", "accuracy", "majority class")}


def _schedule(steps: int) -> list[str]:
    """The overrides that size a run to ``steps``: EVALS evaluations, one checkpoint at the end, 1/8 warm-up."""
    return [f"--train.max_steps={steps}", f"--train.eval_every={math.ceil(steps / EVALS)}",
            f"--train.save_every={steps}", f"--train.warmup_steps={max(1, steps // 8)}"]


def _rows(run: Path) -> list[dict]:
    return read_metrics(run / "metrics.jsonl")


class _Stages:
    """Sizes each stage from the budget (or ``--steps``) and runs it; remembers the step counts chosen."""

    def __init__(self, out: Path, minutes: float, steps: dict[str, int] | None, stages: list[str],
                 clock: Callable[[], float]) -> None:
        self.out, self.minutes, self.fixed, self.clock = out, minutes, steps, clock
        self.budget = Budget(minutes, {s: SHARES[s] for s in stages}, clock) if steps is None else None
        self.steps: dict[str, int] = {}

    def size(self, stage: str, runs: int, train: Callable[[list[str]], object]) -> int:
        """The steps of ``stage`` (``runs`` runs of the same configuration: ``train(overrides)``)."""
        if self.budget is None:
            self.steps[stage] = self.fixed[stage]
            return self.steps[stage]
        seconds = self.budget.allot(stage)
        t0 = self.clock()
        with contextlib.redirect_stdout(io.StringIO()):  # the probe's step lines are not the story
            cost = probe(train, self.out / ".probe", self.clock)
        steps = cost.steps_within(seconds - (self.clock() - t0), runs)
        self.steps[stage] = steps
        print(f"    {seconds / 60:.1f} min for this stage: a step takes {cost.step_s:.2f} s and an evaluation "
              f"{cost.eval_s:.1f} s here (measured), so {runs} x {steps} steps")
        if steps < USEFUL_STEPS[stage]:
            print(f"    note: this machine is too slow to learn much here in the time given: {steps} steps where "
                  f"about {USEFUL_STEPS[stage]} are needed; `lmlab demo --minutes "
                  f"{math.ceil(self.minutes * USEFUL_STEPS[stage] / steps)}` gives it enough")
        return steps


def run_demo(corpus: str | Path | None = None, out_dir: str | Path = "runs/demo", steps: str | None = None,
             minutes: float = DEFAULT_MINUTES, overrides: list[str] | None = None, vocab_size: int = 8192,
             clock: Callable[[], float] = time.perf_counter) -> dict[str, dict[str, float]]:
    """Run the demo; return each model's validation loss beside the unigram baseline, and each task's test scores
    pretrained and from scratch.

    ``out_dir`` is the demo's own: its runs are started afresh each time. ``steps`` (``"300"`` or
    ``"clm=300,mlm=250,summarize=150,classify=120"``) fixes the step counts instead of ``minutes``. With a
    ``corpus`` of the user's own, only pretraining runs (the tasks are built from the standard library). The rows of
    ``.jsonl``/``.csv``/``.tsv``/``.parquet`` files hold their text in ``data.text_field`` (an override).
    """
    t0 = clock()
    overrides = list(overrides or [])
    text_field = load_config(CONFIGS / "demo-clm.toml", overrides).data.text_field
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = corpus is None
    stages = list(SHARES) if tasks else ["clm", "mlm"]
    sizer = _Stages(out, minutes, parse_steps(steps, stages), stages, clock)
    n = len(stages) + 2
    if tasks:
        data = write_demo_data(out)
        corpus = data["corpus"]
        print(f"corpus: docstrings of the Python standard library, without the modules held out for the tasks' "
              f"validation and test -> {corpus}")
    else:
        corpus = Path(corpus)
        print(f"corpus: {corpus} (fine-tuning is shown on the standard library's docstrings: run `lmlab demo` "
              "without --corpus)")
    print(f"[1/{n}] training a byte-level BPE tokenizer ({vocab_size} tokens) on {corpus}")
    tokenizer = train_tokenizer([corpus], kind="bpe", vocab_size=vocab_size, text_field=text_field)
    tokenizer.save(out / "tokenizer")
    print(f"[2/{n}] tokenizing the corpus into memory-mapped shards")
    prepare(corpus, tokenizer, out / "shards", progress=True, text_field=text_field, overwrite=True)
    if sizer.budget is not None:
        print(f"budget: {minutes:g} minutes of training: " + ", ".join(
            f"{name} {share / sum(SHARES[s] for s in stages):.0%}" for name, share in SHARES.items()
            if name in stages) + " (a task's share covers its pretrained and from-scratch runs)")

    train_set = TokenDataset.open(out / "shards", "train", tokenizer)
    val_set = TokenDataset.open(out / "shards", "val", tokenizer)
    results: dict[str, dict[str, float]] = {}
    checkpoints = {}
    for i, name in enumerate(("clm", "mlm")):
        run_dir = out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        config = _pretraining_config(name, out / "shards", run_dir, overrides)
        check_objective(config([]))
        print(f"[{3 + i}/{n}] pretraining " + TITLES[name].format(n=config([]).model.n_layers))
        count = sizer.size(name, 1, lambda extra, config=config: pretrain(config(extra)))
        result = pretrain(config(_schedule(count)))
        if result.interrupted:
            print(f"interrupted; the last checkpoint is {result.checkpoint}")
            raise KeyboardInterrupt
        # The unigram model scores the same kind of targets: every token for causal LM, the non-special
        # tokens an MLM may choose for masked LM.
        exclude = list(tokenizer.special_ids) if name == "mlm" else None
        unigram = unigram_loss(train_set.tokens, val_set.tokens, tokenizer.vocab_size, exclude_ids=exclude)
        results[name] = {"val_loss": result.last_eval["val_loss"], "unigram_loss": unigram,
                         **{k: v for k, v in result.last_eval.items() if k != "val_loss"}}
        checkpoints[name] = result.checkpoint

    print("\nvalidation loss (nats per predicted token) against a unigram model of the same corpus:")
    for name in ("clm", "mlm"):
        r = results[name]
        extra = f"   masked-token accuracy {r['val_accuracy']:.1%}" if "val_accuracy" in r else ""
        print(f"  {name}: model {r['val_loss']:.3f}   unigram {r['unigram_loss']:.3f}   "
              f"(perplexity {r['val_ppl']:.1f} vs {math.exp(r['unigram_loss']):.1f}){extra}")

    if tasks:
        for i, (name, init) in enumerate((("summarize", checkpoints["clm"]), ("classify", checkpoints["mlm"]))):
            print(f"\n[{5 + i}/{n}] fine-tuning {TITLES[name]}, pretrained and from scratch")
            results[name] = _fine_tune(name, init, data[name], out, overrides, sizer)

    _use(checkpoints, out if tasks else None, data if tasks else None)
    if tasks:
        print("\nwhat pretraining bought at this budget (test split, held-out modules):")
        for name in ("summarize", "classify"):
            key, label, baseline = METRICS[name]
            r = results[name]
            print(f"  {name}: {label} {r['pretrained'][key]:.1f} pretrained vs {r['scratch'][key]:.1f} from scratch "
                  f"({r['pretrained'][key] - r['scratch'][key]:+.1f}; {baseline} {r['baseline'][key]:.1f}); "
                  f"validation loss {r['pretrained']['val_loss']:.3f} vs {r['scratch']['val_loss']:.3f}")
        print(f"pictures: {_plot(out, results)}")
    spent = clock() - t0
    print(f"\ndemo finished in {spent:.0f} s ({spent / 60:.1f} min); rerun exactly: lmlab demo --steps "
          f"{format_steps(sizer.steps)}")
    return results


def _pretraining_config(name: str, shards: Path, run_dir: Path, overrides: list[str]) -> Callable:
    """``config(extra)``: the demo's pretraining configuration ``name`` with the user's overrides, then ``extra``."""
    base = [f"--data.path={shards}", f"--train.out_dir={run_dir}", *overrides]
    return lambda extra: load_config(CONFIGS / f"demo-{name}.toml", [*base, *extra])


def _fine_tune(name: str, init: Path, data: Path, out: Path, overrides: list[str], sizer: _Stages) -> dict:
    """Fine-tune ``init`` for task ``name`` and the same model from scratch, with the same steps; their test
    scores and the baseline's."""
    from lmlab.eval.task import evaluate

    def config(extra: list[str], scratch: bool = False):
        return load_config(CONFIGS / f"demo-{name}.toml", [
            f"--finetune.init={init}", f"--data.train={data}", f"--finetune.scratch={str(scratch).lower()}",
            *overrides, *extra])

    steps = sizer.size(name, 2, lambda extra: finetune(config(extra)))
    scores: dict[str, dict[str, float]] = {}
    for run in ("pretrained", "scratch"):
        run_dir = out / f"{name}-{run}"
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"    {run}: {steps} steps -> {run_dir}")
        result = finetune(config([f"--train.out_dir={run_dir}", *_schedule(steps)], scratch=run == "scratch"))
        if result.interrupted:
            print(f"interrupted; the last checkpoint is {result.checkpoint}")
            raise KeyboardInterrupt
        evaluation = evaluate(run_dir, data, "test")
        scores[run] = {**evaluation.scores, "val_loss": result.last_eval["val_loss"]}
    key, label, baseline = METRICS[name]
    scores["baseline"] = evaluation.baselines[baseline]
    extra = "macro_f1" if name == "classify" else "rouge1"
    print(f"    test ({evaluation.num_examples} examples): {label} pretrained {scores['pretrained'][key]:.1f}, "
          f"scratch {scores['scratch'][key]:.1f}, {baseline} {scores['baseline'][key]:.1f}; {extra} "
          f"{scores['pretrained'][extra]:.1f} / {scores['scratch'][extra]:.1f} / {scores['baseline'][extra]:.1f}")
    return scores


def _use(checkpoints: dict[str, Path], out: Path | None, data: dict[str, Path] | None) -> None:
    """The models in use: fill-mask, sampled continuations, and (with the tasks) an unseen docstring summarized
    and classified."""
    mlm, mlm_tok = load_model(checkpoints["mlm"])
    print("\nfill-mask (masked LM), top 5:")
    for text in FILL_MASK_TEXTS:
        print(f"  {text}")
        for candidates in fill_mask(mlm, mlm_tok, text, top_k=5):
            print("    " + "   ".join(f"{t!r} {p:.2f}" for t, p in candidates))
    clm, clm_tok = load_model(checkpoints["clm"])
    print("\nsampled continuations (causal LM, temperature 0.8, top-k 40):")
    for prompt in PROMPTS:
        text = sample(clm, clm_tok, prompt, max_new_tokens=40, temperature=0.8, top_k=40, seed=0)
        print(f"  {prompt!r} -> {text!r}")
    if out is None or data is None:
        return
    from lmlab.data.examples import read_examples
    from lmlab.eval.task import classify, load_task, predict

    summaries = read_examples(data["summarize"] / "test.jsonl", "seq2seq")
    source, reference = summaries.inputs[0], summaries.outputs[0]
    print(f"\nsummary of an unseen docstring:\n  {_clip(source)}")
    for run in ("pretrained", "scratch"):
        model, objective, cfg = load_task(out / f"summarize-{run}", for_inference=True)
        summary = predict(model, objective, [source], max_new_tokens=cfg.finetune.max_new_tokens)[0]
        print(f"    {run + ':':<12}{summary!r}")
    print(f"    {'reference:':<12}{reference!r}")
    labelled = read_examples(data["classify"] / "test.jsonl", "classify")
    text, truth = labelled.inputs[len(labelled) // 2], labelled.outputs[len(labelled) // 2]
    print(f"\npackage of an unseen docstring:\n  {_clip(text)}")
    for run in ("pretrained", "scratch"):
        model, objective, _ = load_task(out / f"classify-{run}", for_inference=True)
        (label,), (prob,) = classify(model, objective, [text])
        print(f"    {run + ':':<12}{label} ({prob:.2f})")
    print(f"    {'truth:':<12}{truth}")


def _clip(text: str, width: int = 160) -> str:
    """``text`` on one line, cut at ``width`` characters."""
    text = " ".join(text.split())
    return text[:width] + (" ..." if len(text) > width else "")


def _plot(out: Path, results: dict) -> Path:
    """One PNG: the pretraining curves, and each task's validation metric pretrained against from scratch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for name, colour in (("clm", "tab:blue"), ("mlm", "tab:orange")):
        rows = _rows(out / name)
        train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        ax.plot(*zip(*train, strict=True), color=colour, alpha=0.4, lw=1)
        ax.plot(*zip(*val, strict=True), "o-", color=colour, label=f"{name} validation")
        ax.axhline(results[name]["unigram_loss"], color=colour, ls=":", lw=1, label=f"{name} unigram")
    ax.set(title="pretraining", xlabel="step", ylabel="loss (nats per token)")
    ax.legend(fontsize=8)
    for ax, name in zip(axes[1:], ("summarize", "classify"), strict=True):
        key, label, baseline = METRICS[name]
        for run, colour in (("pretrained", "tab:green"), ("scratch", "tab:gray")):
            points = [(r["step"], r[f"val_{key}"]) for r in _rows(out / f"{name}-{run}") if f"val_{key}" in r]
            ax.plot(*zip(*points, strict=True), "o-", color=colour, label=run)
        ax.axhline(results[name]["baseline"][key], color="tab:red", ls=":", lw=1, label=f"{baseline} (test)")
        ax.set(title=f"fine-tuning: {name}", xlabel="step", ylabel=f"validation {label}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "demo.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["run_demo"]
