"""Batch construction cost of every objective, against the training step it feeds.

For each shipped objective config (small presets), on a corpus prepared here from the standard library's
docstrings: the time ``objective.make_batch`` takes for one batch (sampling included), the time of one
training step of the config's model on that batch (forward, backward, AdamW), and their ratio. Batch
construction must stay a small fraction of the step (the trainer builds batches in the loop).

    .venv/bin/python benchmarks/objectives.py            # small presets, about a minute on 2 cores
    .venv/bin/python benchmarks/objectives.py --quick    # tiny presets
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lmlab.config import load_config
from lmlab.data import Sampler, TokenDataset, prepare, write_stdlib_corpus
from lmlab.model import build_model
from lmlab.objectives import build_objective, objective_tokenizer
from lmlab.tokenizer import train_tokenizer
from lmlab.train.optim import build_optimizer

PRESET_FAMILY = {"gpt2": "gpt2", "bert": "bert", "t5": "t5", "bart": "t5", "electra": "bert", "llama": "llama"}
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RUNS = {"clm": "gpt2-small.toml", "mlm": "bert-small.toml", "mlm-wwm": "bert-wwm.toml", "span": "t5-span.toml",
        "bart": "bart-denoise.toml", "fim": "gpt2-fim.toml", "prefix_lm": "gpt2-prefix-lm.toml", "ul2": "t5-ul2.toml",
        "electra": "electra-small.toml"}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(cfg, tokenizer, shards: Path):
    """One objective: a batch, the median time to build one, and the median time of a training step on it."""
    tok = objective_tokenizer(cfg, tokenizer)
    objective = build_objective(cfg, tok)
    model = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "vocab_size": tok.vocab_size}))
    objective.attach(model)
    data = TokenDataset.open(shards, "train", tokenizer)
    t = time.perf_counter()
    objective.prepare(data.tokens)
    print(f"  {cfg.objective.name}: prepare {time.perf_counter() - t:.2f} s", flush=True)
    owner = torch.nn.ModuleDict({"model": model, **({"objective": objective}
                                                    if isinstance(objective, torch.nn.Module) else {})})
    optimizer = build_optimizer(owner, cfg.train)
    sampler = Sampler(data, cfg.data.seq_len + objective.extra_tokens, cfg.train.batch_size,
                      torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)

    def make():
        return objective.make_batch(*sampler.sample(), g)

    for _ in range(3):
        batch = make()

    def step():
        loss, n, _ = objective.loss(model, batch)
        (loss / n).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return batch, median_time(make, 20), median_time(step, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny presets and batches")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON (benchmarks/run_all.py)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lmlab-bench-"))
    corpus = write_stdlib_corpus(work / "corpus")
    tokenizer = train_tokenizer([corpus], vocab_size=8192, sentinels=100)
    prepare(corpus, tokenizer, work / "shards", progress=False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch construction vs training step")
    print(f"{'objective':10} {'batch':>9} {'make_batch ms':>14} {'step ms':>9} {'share':>7}")
    records = []
    for name, file in RUNS.items():
        overrides = {"data": {"path": str(work / "shards")}}
        if args.quick:
            overrides |= {"data": {"path": str(work / "shards"), "seq_len": 64}, "train": {"batch_size": 4},
                          "preset": PRESET_FAMILY[file.split("-")[0]] + "-tiny"}
        cfg = load_config(CONFIGS / file, overrides)
        batch, t_batch, t_step = measure(cfg, tokenizer, work / "shards")
        shape = "x".join(map(str, batch.input_ids.shape))
        print(f"{name:10} {shape:>9} {t_batch * 1e3:14.2f} {t_step * 1e3:9.1f} {t_batch / t_step:7.1%}", flush=True)
        records.append(dict(objective=name, batch=shape, make_batch=t_batch, step=t_step, share=t_batch / t_step))
    if args.json:
        Path(args.json).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
