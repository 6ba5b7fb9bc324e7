"""What bf16 and int8 weights cost in quality: a decoder trained here, loaded in each weight type, on held-out text.

Random weights say nothing about quality, so this trains the demo's decoder (configs/demo-clm.toml: GPT-2-like,
d 256, 4 layers) on the Python standard library's docstrings for ``--steps`` steps (the modules the demo holds out
stay out), then loads its checkpoint to run in fp32, bf16 and int8 (``lmlab.load(..., for_inference=True,
dtype=..., quantize=...)``, as ``--dtype`` and ``--quantize`` do) and measures, on the held-out modules'
docstrings:

- perplexity (``file_perplexity``, each docstring a text), and its change from fp32;
- next-token agreement: the share of positions where the model's most likely next token, given the true text,
  is fp32's (teacher forcing, so one difference does not derail the rest);
- greedy continuations of 32 tokens from the first 16 tokens of held-out docstrings: the share identical to
  fp32's, and the mean number of tokens before the first difference.

    .venv/bin/python benchmarks/quantize_quality.py [--steps 300] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import lmlab
from lmlab.config import load_config
from lmlab.data.corpus import stdlib_modules
from lmlab.data.prepare import prepare
from lmlab.demo.tasks import split_module, write_demo_data
from lmlab.infer import generate
from lmlab.infer.score import file_perplexity
from lmlab.tokenizer import train_tokenizer
from lmlab.train.trainer import pretrain

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo-clm.toml"
WEIGHTS = {"fp32": ("fp32", None), "bf16": ("bf16", None), "int8": ("fp32", "int8"), "bf16+int8": ("bf16", "int8"),
           "int8-dynamic": ("fp32", "int8-dynamic")}


def train(out: Path, steps: int, quick: bool) -> tuple[Path, list[str]]:
    """Pretrain the demo's decoder on the training modules; return its run and the held-out (test) docstrings."""
    modules = stdlib_modules()
    data = write_demo_data(out / "data", modules)
    tokenizer = train_tokenizer([data["corpus"]], kind="bpe", vocab_size=2048 if quick else 8192)
    prepare(data["corpus"], tokenizer, out / "shards", progress=False)
    model = {"d_model": "64", "n_layers": "2", "n_heads": "4", "d_ff": "256"} if quick else {}
    pretrain(load_config(CONFIG, {"model": model, "data": {"path": str(out / "shards")},
                                  "train": {"out_dir": str(out / "run"), "max_steps": str(steps),
                                            "save_every": str(steps), "eval_every": str(steps),
                                            "progress": "false", "log_every": str(max(steps // 4, 1))}}))
    held_out = [d for module, docs in modules if split_module(module) == "test" for d in docs]
    return out / "run", held_out


@torch.no_grad()
def next_token_agreement(model, reference, rows: list[torch.Tensor]) -> float:
    same = total = 0
    for ids in rows:
        a, b = model(ids[None]).logits[0].argmax(-1), reference(ids[None]).logits[0].argmax(-1)
        same, total = same + int((a == b).sum()), total + len(ids)
    return same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps (batch 16 x 128 tokens)")
    parser.add_argument("--quick", action="store_true", help="a tiny model and 20 steps: runs in seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON (benchmarks/run_all.py)")
    args = parser.parse_args()
    steps = 20 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run, held_out = train(Path(tmp), steps, args.quick)
        text = Path(tmp) / "held_out.jsonl"
        text.write_text("".join(json.dumps({"text": d}) + "\n" for d in held_out), encoding="utf-8")
        print(f"trained the demo's decoder {steps} steps on the standard library's docstrings "
              f"({time.perf_counter() - t:.0f} s); held out: {len(held_out)} docstrings of the test modules")
        models = {name: lmlab.load(run, for_inference=True, dtype=dtype, quantize=quantize)
                  for name, (dtype, quantize) in WEIGHTS.items()}
        tok = models["fp32"][1].lmlab_tokenizer
        encoded = [torch.tensor(ids[:256]) for d in held_out[:200] if len(ids := tok.encode(d)) >= 24]
        prompts = [ids[:16] for ids in encoded[:64]]
        greedy = {}
        for name, (model, _) in models.items():
            greedy[name] = [generate(model, p[None], max_new_tokens=32, eos_token_id=[])[0, 16:] for p in prompts]
        base = file_perplexity(models["fp32"][0], tok, text, unit="document").perplexity
        print(f"{'weights':>12}{'bytes':>10}{'perplexity':>12}{'change':>9}{'next token = fp32':>19}"
              f"{'greedy = fp32':>15}{'tokens to 1st diff':>20}")
        rows = []
        for name, (model, _) in models.items():
            size = sum(t.numel() * t.element_size() for t in {*model.parameters(), *model.buffers()})
            ppl = file_perplexity(model, tok, text, unit="document").perplexity
            agree = next_token_agreement(model, models["fp32"][0], encoded)
            firsts = [int((a != b).nonzero()[0]) if bool((a != b).any()) else len(a)
                      for a, b in zip(greedy[name], greedy["fp32"], strict=True)]
            identical = sum(f == 32 for f in firsts) / len(firsts)
            print(f"{name:>12}{size / 1e6:>8.1f}MB{ppl:>12.3f}{ppl / base - 1:>+9.2%}{agree:>19.1%}{identical:>15.0%}"
                  f"{sum(firsts) / len(firsts):>20.1f}", flush=True)
            rows.append(dict(weights=name, bytes=size, perplexity=ppl, change=ppl / base - 1, next_token=agree,
                             greedy_identical=identical, first_difference=sum(firsts) / len(firsts)))
    if args.json:
        Path(args.json).write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
