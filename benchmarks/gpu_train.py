"""The prepared GPU run: a ~125M-parameter GPT-2-like model trained in bf16 autocast with ``torch.compile``,
lmlab against Hugging Face ``transformers`` (compiled the same way) in one process.

It prints tokens/s of both, their ratio, and lmlab's MFU against the bf16 matmul peak measured on the device
(``lmlab.train.flops.measure_peak_flops``). The aim is MFU >= 0.45. Model: 12 layers, d 768, 12 heads,
vocab 50304, sequence 1024, batch 16; the loss is the objectives' ``token_loss``, fused AdamW on both sides.
``--quick`` is a tiny model for a check on the CPU (eager, fp32 autocast off).

    python benchmarks/gpu_train.py [--batch 16] [--steps 20] [--warmup 5] [--no-compile]    # on a CUDA device
    python benchmarks/gpu_train.py --quick                                                   # on the CPU, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import transformers
from reference import hf_gpt2

from lmlab.config import model_preset
from lmlab.model import build_model
from lmlab.objectives.base import token_loss
from lmlab.train.flops import measure_peak_flops


def tokens_per_second(model, loss_fn, x, targets, device, warmup: int, steps: int, bf16: bool) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def one():
        with amp:
            loss = loss_fn(model, x, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):  # the first steps compile
        one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return x.numel() * steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--no-compile", action="store_true", help="eager on both sides")
    parser.add_argument("--quick", action="store_true", help="a tiny model on the CPU, eager, fp32")
    args = parser.parse_args()
    quick = args.quick
    device = torch.device("cpu" if quick or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not quick:
        raise SystemExit("no CUDA device: this is the GPU run (use --quick for a check on the CPU)")
    size = dict(vocab=512, d=64, layers=2, heads=4, T=64) if quick else dict(vocab=50304, d=768, layers=12,
                                                                             heads=12, T=1024)
    B, T, V = (2 if quick else args.batch), size["T"], size["vocab"]
    bf16, compile_ = not quick, not (quick or args.no_compile)
    torch.manual_seed(0)
    cfg = model_preset("gpt2-small", vocab_size=V, d_model=size["d"], n_layers=size["layers"],
                       n_heads=size["heads"], d_ff=4 * size["d"], max_seq_len=T)
    ours = build_model(cfg).to(device).train()
    transformers.logging.set_verbosity_error()
    hf = hf_gpt2(V, size["d"], size["layers"], size["heads"], T).to(device).train()
    x = torch.randint(0, V, (B, T), device=device)
    targets = torch.cat([x[:, 1:], torch.full((B, 1), -100, device=device)], dim=1)

    def ours_loss(model, x, targets):
        loss, n, _ = token_loss(model(x).logits, targets)
        return loss / n

    def hf_loss(model, x, targets):
        return model(x, labels=x).loss

    fwd_ours, fwd_hf = (torch.compile(ours), torch.compile(hf)) if compile_ else (ours, hf)
    n_params = sum(p.numel() for p in ours.parameters())
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = measure_peak_flops(device, dtype, n=1024 if quick else 8192)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{'bf16' if bf16 else 'fp32'}, {'compiled' if compile_ else 'eager'}; peak {peak / 1e12:.1f} TFLOP/s")
    print(f"GPT-2-like: {n_params / 1e6:.0f}M parameters, {size['layers']} layers, d {size['d']}, vocab {V}, "
          f"batch {B}x{T}; {args.warmup} warm-up + {args.steps} timed steps")
    ours_tps = tokens_per_second(fwd_ours, ours_loss, x, targets, device, args.warmup, args.steps, bf16)
    hf_tps = tokens_per_second(fwd_hf, hf_loss, x, targets, device, args.warmup, args.steps, bf16)
    mfu = ours_tps * ours.flops_per_token(T) / peak
    print(f"lmlab {ours_tps:,.0f} tok/s, transformers {hf_tps:,.0f} tok/s, ratio {ours_tps / hf_tps:.2f}; "
          f"lmlab MFU {mfu:.1%} (aim >= 45%)")


if __name__ == "__main__":
    main()
