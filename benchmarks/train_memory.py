"""Peak memory of a training step: lmlab against Hugging Face ``transformers``, same architecture and batch.

Each measurement runs in a fresh process (peak resident memory only grows): it builds the model and the
batch, records the resident set, takes two optimizer steps (forward, backward, AdamW) and reports how much
the peak resident set grew, which is the step's activations, gradients and optimizer state. Rows and sizes
are those of ``train_throughput.py`` (fp32, dropout 0, SDPA).

    .venv/bin/python benchmarks/train_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def measure(row: str, side: str, quick: bool) -> float:
    """Growth of the peak resident set (MiB) over two training steps, in this process."""
    import transformers
    from reference import hf_bert, hf_gpt2
    from train_throughput import FULL, QUICK

    from lmlab.config import model_preset
    from lmlab.model import build_model

    transformers.logging.set_verbosity_error()
    s = QUICK if quick else FULL
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if row == "gpt2":
        B, T = s.gpt_batch
        x = torch.randint(0, s.vocab, (B, T), generator=g)
        if side == "lmlab":
            model = build_model(model_preset("gpt2-small", vocab_size=s.vocab, d_model=s.d, n_layers=s.layers,
                                             n_heads=s.heads, d_ff=4 * s.d, max_seq_len=T))
            targets = torch.cat([x[:, 1:], torch.full((B, 1), -100)], dim=1)
            step = lambda: F.cross_entropy(model(x).logits.flatten(0, 1), targets.flatten())  # noqa: E731
        else:
            model = hf_gpt2(s.vocab, s.d, s.layers, s.heads, T)
            step = lambda: model(x, labels=x).loss  # noqa: E731
    else:
        B, T = s.bert_batch
        x = torch.randint(0, s.vocab, (B, T), generator=g)
        scored = torch.rand(B, T, generator=g) < 0.15
        if side == "lmlab":
            model = build_model(model_preset("bert-small", vocab_size=s.vocab, d_model=s.d, n_layers=s.layers,
                                             n_heads=s.heads, d_ff=4 * s.d, max_seq_len=T))
            step = lambda: F.cross_entropy(model.logits(model.hidden(x)[scored]), x[scored])  # noqa: E731
        else:
            model = hf_bert(s.vocab, s.d, s.layers, s.heads, T)
            labels = torch.where(scored, x, -100)
            step = lambda: model(x, labels=labels).loss  # noqa: E731
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        step().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON (benchmarks/run_all.py)")
    p.add_argument("--child", nargs=2, metavar=("ROW", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.quick)))
        return
    print(f"torch {torch.__version__}: growth of peak resident memory over two training steps (MiB)")
    print(f"{'row':<16}{'lmlab':>10}{'HF':>10}{'ratio':>8}")
    records = []
    for row, name in (("gpt2", "GPT-2-like CLM"), ("bert", "BERT-like MLM")):
        mib = {}
        for side in ("lmlab", "hf"):
            cmd = [sys.executable, __file__, "--child", row, side] + (["--quick"] if args.quick else [])
            mib[side] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        print(f"{name:<16}{mib['lmlab']:>10.0f}{mib['hf']:>10.0f}{mib['lmlab'] / mib['hf']:>8.2f}", flush=True)
        records.append(dict(row=name, lmlab=mib["lmlab"], hf=mib["hf"], ratio=mib["lmlab"] / mib["hf"]))
    if args.json:
        Path(args.json).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
