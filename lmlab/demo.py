"""``lmlab demo``: the whole life of two small models in a few minutes on a laptop CPU.

Trains a byte-level BPE tokenizer, prepares token shards, pretrains a decoder
with causal LM and an encoder with masked LM, compares both with a unigram
model of the corpus, and shows them in use (fill-mask, sampled continuation).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from lmlab.config import load_config
from lmlab.data import TokenDataset, prepare, write_stdlib_corpus
from lmlab.eval import unigram_loss
from lmlab.infer import fill_mask, sample
from lmlab.objectives import check_objective
from lmlab.tokenizer import train_tokenizer
from lmlab.train import load_model, pretrain

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FILL_MASK_TEXTS = ["Return the [MASK] of the list.", "If the file does not [MASK], an exception is raised."]
PROMPTS = ["Return a new", "This module provides"]


def run_demo(corpus: str | Path | None = None, out_dir: str | Path = "runs/demo", steps: int | None = None,
             overrides: list[str] | None = None, vocab_size: int = 8192) -> dict[str, dict[str, float]]:
    """Run the demo; return each model's validation loss beside the unigram baseline.

    ``out_dir`` is the demo's own: its model runs are started afresh each time. The rows of a corpus of
    ``.jsonl``/``.csv``/``.tsv``/``.parquet`` files hold their text in ``data.text_field`` (an override).
    """
    t0 = time.perf_counter()
    text_field = load_config(CONFIGS / "demo-clm.toml", list(overrides or [])).data.text_field
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if corpus is None:
        corpus = write_stdlib_corpus(out / "corpus")
        print(f"corpus: docstrings of the Python standard library -> {corpus}")
    print(f"[1/4] training a byte-level BPE tokenizer ({vocab_size} tokens) on {corpus}")
    tokenizer = train_tokenizer([corpus], kind="bpe", vocab_size=vocab_size, text_field=text_field)
    tokenizer.save(out / "tokenizer")
    print("[2/4] tokenizing the corpus into memory-mapped shards")
    prepare(corpus, tokenizer, out / "shards", progress=True, text_field=text_field)

    train_set = TokenDataset.open(out / "shards", "train", tokenizer)
    val_set = TokenDataset.open(out / "shards", "val", tokenizer)
    results: dict[str, dict[str, float]] = {}
    checkpoints = {}
    for i, name in enumerate(("clm", "mlm")):
        run_dir = out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        extra = [f"--data.path={out / 'shards'}", f"--train.out_dir={run_dir}"]
        if steps is not None:
            extra += [f"--train.max_steps={steps}", f"--train.eval_every={max(1, steps // 3)}",
                      f"--train.save_every={steps}", f"--train.warmup_steps={max(1, steps // 12)}"]
        cfg = load_config(CONFIGS / f"demo-{name}.toml", extra + list(overrides or []))
        check_objective(cfg)
        kind = "decoder, causal LM" if name == "clm" else "encoder, masked LM"
        print(f"[{3 + i}/4] pretraining a {cfg.model.n_layers}-layer {kind} for {cfg.train.max_steps} steps")
        result = pretrain(cfg)
        if result.interrupted:
            print(f"interrupted; the last checkpoint is {result.checkpoint}")
            raise KeyboardInterrupt
        # The unigram model scores the same kind of targets: every token for causal LM, the non-special
        # tokens an MLM may choose for masked LM.
        exclude = list(tokenizer.special_ids) if name == "mlm" else None
        base = unigram_loss(train_set.tokens, val_set.tokens, tokenizer.vocab_size, exclude_ids=exclude)
        results[name] = {"val_loss": result.last_eval["val_loss"], "unigram_loss": base,
                         **{k: v for k, v in result.last_eval.items() if k != "val_loss"}}
        checkpoints[name] = result.checkpoint
        print(f"    loss curve: {run_dir / 'loss.png'}   metrics: {run_dir / 'metrics.jsonl'}")

    print("\nvalidation loss (nats per predicted token) against a unigram model of the same corpus:")
    for name, r in results.items():
        extra = f"   masked-token accuracy {r['val_accuracy']:.1%}" if "val_accuracy" in r else ""
        print(f"  {name}: model {r['val_loss']:.3f}   unigram {r['unigram_loss']:.3f}   "
              f"(perplexity {r['val_ppl']:.1f} vs {math.exp(r['unigram_loss']):.1f}){extra}")

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
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; checkpoints: {checkpoints['clm']}, "
          f"{checkpoints['mlm']}")
    return results
