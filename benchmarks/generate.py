"""Generation speed: lmlab's ``generate`` against Hugging Face ``generate()`` on the same weights, in one process.

A GPT-2-like model is built in ``transformers`` with random weights and the same tensors are copied into
lmlab. Both decode greedily with a KV cache (fp32, SDPA attention), EOS disabled so every row runs the full
``--new`` tokens; one warm-up run each, then the median of ``--runs`` timed runs (lmlab and Hugging Face
alternate, so load from other processes hits both alike). Tokens/s counts generated tokens (batch x new).
The two outputs are also compared token by token. ``--profile`` splits one run of each into matrix
multiplications and everything else (torch.profiler, self CPU time).

    .venv/bin/python benchmarks/generate.py [--new 128] [--prompt 32] [--runs 3] [--quick] [--profile] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import transformers
from reference import hf_gpt2
from timing import alternating_medians

from lmlab.infer import generate
from lmlab.interop import load_hf

FULL = dict(vocab=8192, d=384, layers=6, heads=6)
QUICK = dict(vocab=512, d=64, layers=2, heads=4)


def gpt2_pair(vocab: int, d: int, layers: int, heads: int, max_len: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random Hugging Face GPT-2 and an lmlab model holding the same weights."""
    hf = hf_gpt2(vocab, d, layers, heads, max_len, bos_token_id=None, eos_token_id=None).eval()  # no EOS stop
    with tempfile.TemporaryDirectory() as tmp:  # the same weights, through lmlab's own importer
        hf.save_pretrained(tmp)
        ours = load_hf(tmp)[0]
    return hf, ours


def profile_split(fn, new_tokens: int) -> tuple[float, float]:
    """Milliseconds per generated column in matmuls (addmm, mm, bmm, baddbmm) and in everything else, from one
    run."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    matmuls = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")
    matmul = sum(e.self_cpu_time_total for e in events if e.key in matmuls)
    total = sum(e.self_cpu_time_total for e in events)
    return matmul / 1e3 / new_tokens, (total - matmul) / 1e3 / new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new", type=int, default=128, help="tokens generated per row")
    parser.add_argument("--prompt", type=int, default=32, help="prompt length")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (median) after one warm-up")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--quick", action="store_true", help="a tiny model: runs in seconds")
    parser.add_argument("--profile", action="store_true", help="also split time into matmuls and the rest")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON (benchmarks/run_all.py)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = QUICK if args.quick else FULL
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf, ours = gpt2_pair(**size, max_len=args.prompt + args.new)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"fp32, greedy, KV cache")
    print(f"model: {size['layers']} layers, d {size['d']}, {size['heads']} heads, vocab {size['vocab']}; "
          f"prompt {args.prompt}, {args.new} new tokens; 1 warm-up + median of {args.runs}")
    print(f"{'batch':>5}{'lmlab tok/s':>13}{'HF tok/s':>11}{'ratio':>8}  same tokens")
    records = []
    for B in args.batches:
        x = torch.randint(0, size["vocab"], (B, args.prompt), generator=torch.Generator().manual_seed(B))
        mask = torch.ones_like(x)
        run_ours = lambda x=x: generate(ours, x, max_new_tokens=args.new)  # noqa: E731
        run_hf = lambda x=x, mask=mask: hf.generate(  # noqa: E731
            x, attention_mask=mask, max_new_tokens=args.new, do_sample=False, num_beams=1, pad_token_id=0,
            eos_token_id=None)
        with torch.no_grad():
            (ours_s, ours_out), (hf_s, hf_out) = alternating_medians([run_ours, run_hf], args.runs)
        assert ours_out.shape == hf_out.shape == (B, args.prompt + args.new), (ours_out.shape, hf_out.shape)
        same = torch.equal(ours_out, hf_out)
        if not same:
            first = int((ours_out != hf_out).any(0).nonzero()[0]) - args.prompt
            same = f"False (first difference at new token {first})"
        n = B * args.new
        print(f"{B:>5}{n / ours_s:>13.0f}{n / hf_s:>11.0f}{hf_s / ours_s:>8.2f}  {same}", flush=True)
        records.append(dict(batch=B, threads=torch.get_num_threads(), lmlab=n / ours_s, hf=n / hf_s,
                            ratio=hf_s / ours_s, same=same is True))
        if args.profile:
            with torch.no_grad():
                for name, fn in (("lmlab", run_ours), ("HF", run_hf)):
                    mm, rest = profile_split(fn, args.new)
                    print(f"       {name:<6} per new token: matmuls {mm:.2f} ms, everything else {rest:.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(records))

if __name__ == "__main__":
    main()
