"""Seconds per training step of every shipped pretraining config on this machine, and what its max_steps would take.

Each config runs as it is shipped (its model, batch, accumulation, sequence length and precision) on shards of the
standard library's docstrings made with a byte-level BPE tokenizer of 8,192 tokens and 100 sentinels; only the
evaluation is cut to one batch. The step time is measured as ``lmlab demo`` sizes its stages
(:func:`lmlab.demo.budget.probe`): 4 steps, the first a warm-up, the median of the others. No reference library:
this is the table behind the README's "how long a step takes" (issue 15, item 24).

    .venv/bin/python benchmarks/config_steps.py [--configs gpt2-small bert-small ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import torch

from lmlab.config import load_config
from lmlab.data import prepare
from lmlab.demo.budget import probe
from lmlab.demo.tasks import write_demo_data
from lmlab.tokenizer import train_tokenizer
from lmlab.train import pretrain

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PRETRAINING = ["gpt2-small", "llama-small", "bert-small", "bert-wwm", "electra-small", "gpt2-prefix-lm", "gpt2-fim",
               "t5-span", "t5-ul2", "bart-denoise"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=PRETRAINING, help="config names under configs/")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = write_demo_data(tmp / "data")["corpus"]
        tokenizer = train_tokenizer([corpus], kind="bpe", vocab_size=8192, sentinels=100)
        with contextlib.redirect_stdout(io.StringIO()):
            prepare(corpus, tokenizer, tmp / "shards", progress=False)
        print(f"{'config':<16}{'tokens/step':>12}{'s/step':>9}{'tokens/s':>10}{'max_steps':>10}{'hours':>8}")
        for name in args.configs:
            def train(extra: list[str], name: str = name) -> None:
                pretrain(load_config(CONFIGS / f"{name}.toml", [f"--data.path={tmp / 'shards'}",
                                                                "--train.eval_batches=1", *extra]))

            cfg = load_config(CONFIGS / f"{name}.toml", [f"--data.path={tmp / 'shards'}"])
            tc = cfg.train
            tokens = tc.batch_size * tc.grad_accum * cfg.data.seq_len  # the encoder's (or decoder's) rows
            with contextlib.redirect_stdout(io.StringIO()):
                cost = probe(train, tmp / "probe")
            hours = tc.max_steps * cost.step_s / 3600
            rows.append({"config": name, "tokens_per_step": tokens, "step_s": cost.step_s, "max_steps": tc.max_steps,
                         "hours": hours, "precision": tc.precision})
            print(f"{name:<16}{tokens:>12,}{cost.step_s:>9.2f}{tokens / cost.step_s:>10,.0f}{tc.max_steps:>10,}"
                  f"{hours:>8.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
