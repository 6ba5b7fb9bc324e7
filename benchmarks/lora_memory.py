"""LoRA against full fine-tuning on the same model: trainable parameters and peak memory of training steps.

Each mode runs in a fresh process (peak resident memory only grows): it builds the model (random weights: memory
does not depend on their values) and the batch, for LoRA freezes it and adds adapters as ``finetune.lora`` does
(:func:`lmlab.train.lora.attach_lora`), builds lmlab's AdamW on what trains, takes three causal-LM steps (forward,
backward, AdamW) and reports the peak resident set of the process and how much the steps grew it (activations,
gradients and optimizer state).

    .venv/bin/python benchmarks/lora_memory.py [--preset gpt2-base] [--r 8] [--targets q,k,v,o]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
import torch.nn.functional as F


def measure(preset: str, lora: bool, r: int, targets: list[str], batch: int, seq: int) -> dict:
    from lmlab.config import TrainConfig, model_preset
    from lmlab.model import build_model
    from lmlab.train.lora import attach_lora
    from lmlab.train.optim import build_optimizer

    torch.manual_seed(0)
    model = build_model(model_preset(preset, vocab_size=50257, max_seq_len=seq)).train()
    if lora:
        attach_lora(model, {"base": "", "base_fingerprint": "", "r": r, "alpha": 2.0 * r, "dropout": 0.0,
                            "targets": targets, "trained": []})
    x = torch.randint(0, 50257, (batch, seq), generator=torch.Generator().manual_seed(0))
    targets_ = torch.cat([x[:, 1:], torch.full((batch, 1), -100)], dim=1)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-4))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        F.cross_entropy(model(x).logits.flatten(0, 1), targets_.flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peak_mib": peak / 1024, "growth_mib": (peak - before) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="gpt2-base", help="a model preset (vocabulary 50,257, as GPT-2's)")
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--targets", default="q,k,v,o")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = p.parse_args()
    targets = args.targets.split(",")
    if args.child:
        print(json.dumps(measure(args.preset, args.child == "lora", args.r, targets, args.batch, args.seq)))
        return
    print(f"{args.preset}, batch {args.batch} x {args.seq} tokens, fp32, AdamW, 3 steps; torch {torch.__version__}")
    print(f"{'mode':<28}{'trainable':>14}{'of':>14}{'peak RSS MiB':>14}{'step growth':>13}")
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, "--child", mode, "--preset", args.preset, "--r", str(args.r), "--targets",
               args.targets, "--batch", str(args.batch), "--seq", str(args.seq)]
        m = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        name = "full fine-tuning" if mode == "full" else f"LoRA r={args.r} on {args.targets}"
        print(f"{name:<28}{m['trainable']:>14,}{m['params']:>14,}{m['peak_mib']:>14,.0f}{m['growth_mib']:>13,.0f}",
              flush=True)


if __name__ == "__main__":
    main()
