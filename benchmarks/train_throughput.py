"""Training throughput: lmlab against Hugging Face ``transformers`` on the same architecture, in one process.

Both sides: same sizes, same batch, same precision setting, dropout 0, SDPA attention, fused AdamW; a few
warm-up steps, then timed steps that alternate between the two (the median step of each). Rows: a GPT-2-like
causal LM, a BERT-like masked LM (15% of positions scored) and a T5 v1.1-like encoder-decoder (tokens/s
counts encoder and decoder tokens). The lmlab loss is
the objectives' own ``token_loss`` (cross-entropy in float32, summed, with the accuracy count) on
``model(...).logits``, and for the masked LM on ``model.logits(hidden[mask])`` (the projection only at scored
positions); Hugging Face uses its ``labels=`` path with -100.

MFU is against a matmul peak measured here in the chosen precision, from the FLOPs each side executes:
``model.flops_per_token`` (matmuls, 3x forward) for both, less the output head at unscored positions for
lmlab's masked LM (Hugging Face computes the head everywhere). With both sides near the peak, the ratio
cannot exceed 100% / HF MFU.

    .venv/bin/python benchmarks/train_throughput.py [--steps 10] [--warmup 3] [--quick] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from reference import hf_bert, hf_gpt2
from timing import alternating_medians

from lmlab.config import model_preset
from lmlab.model import build_model
from lmlab.objectives.base import token_loss
from lmlab.train.precision import autocast, compute_dtype, run_precision


@dataclass
class Size:
    vocab: int
    d: int
    layers: int
    heads: int
    gpt_batch: tuple[int, int]
    bert_batch: tuple[int, int]
    t5_batch: tuple[int, int, int]  # batch, encoder length, decoder length


FULL = Size(vocab=8192, d=384, layers=6, heads=6, gpt_batch=(8, 256), bert_batch=(16, 128), t5_batch=(8, 256, 64))
QUICK = Size(vocab=512, d=64, layers=2, heads=4, gpt_batch=(4, 64), bert_batch=(4, 64), t5_batch=(4, 64, 16))


def peak_flops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best FLOP/s of ``n x n`` matmuls in ``dtype`` (and the current fp32 matmul precision) over a few tries."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


PRECISION = "fp32"  # set from --precision: both sides run under the same autocast / matmul setting


def time_steps(sides: list[tuple], warmup: int, steps: int) -> list[float]:
    """Median seconds per optimizer step of each ``(step, params)`` side, where ``step()`` returns a loss, with
    fused AdamW on ``params``. The sides' steps alternate, so that load from other processes hits both alike."""

    def runner(step, params):
        opt = torch.optim.AdamW(params, lr=1e-4, fused=True)  # both libraries' default (HF: adamw_torch_fused)

        def one() -> None:
            with autocast(PRECISION, torch.device("cpu")):
                loss = step()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return one

    return [s for s, _ in alternating_medians([runner(*side) for side in sides], steps, warmup)]


def gpt_row(s: Size, warmup: int, steps: int) -> tuple[float, float, float, float]:
    B, T = s.gpt_batch
    cfg = model_preset("gpt2-small", vocab_size=s.vocab, d_model=s.d, n_layers=s.layers, n_heads=s.heads,
                       d_ff=4 * s.d, max_seq_len=T)
    ours = build_model(cfg).train()
    hf = hf_gpt2(s.vocab, s.d, s.layers, s.heads, T).train()
    x = torch.randint(0, s.vocab, (B, T), generator=torch.Generator().manual_seed(0))

    targets = torch.cat([x[:, 1:], torch.full((B, 1), -100)], dim=1)  # (B, T): token t+1, none for the last

    def lmlab_step():  # the causal-LM objective's loss: full logits, unscored positions ignored
        loss, n, _ = token_loss(ours(x).logits, targets)  # logits (B, T, V)
        return loss / n

    ours_s, hf_s = time_steps([(lmlab_step, ours.parameters()),
                              (lambda: hf(x, labels=x).loss, hf.parameters())], warmup, steps)
    return B * T / ours_s, B * T / hf_s, ours.flops_per_token(T), ours.flops_per_token(T)


def bert_row(s: Size, warmup: int, steps: int) -> tuple[float, float, float, float]:
    B, T = s.bert_batch
    cfg = model_preset("bert-small", vocab_size=s.vocab, d_model=s.d, n_layers=s.layers, n_heads=s.heads,
                       d_ff=4 * s.d, max_seq_len=T)
    ours = build_model(cfg).train()
    hf = hf_bert(s.vocab, s.d, s.layers, s.heads, T).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, s.vocab, (B, T), generator=g)
    scored = torch.rand(B, T, generator=g) < 0.15
    labels = torch.where(scored, x, -100)

    def lmlab_step():  # the masked-LM objective's loss: the head only at scored positions
        hidden = ours.hidden(x)  # (B, T, D)
        loss, n, _ = token_loss(ours.logits(hidden[scored]), x[scored])  # logits (N, V)
        return loss / n

    ours_s, hf_s = time_steps([(lmlab_step, ours.parameters()),
                              (lambda: hf(x, labels=labels).loss, hf.parameters())], warmup, steps)
    # lmlab runs the head (transform + projection) only at the scored positions, HF everywhere
    executed = ours.flops_per_token(T, head_fraction=scored.float().mean().item())
    return B * T / ours_s, B * T / hf_s, executed, ours.flops_per_token(T)


def t5_row(s: Size, warmup: int, steps: int) -> tuple[float, float, float, float]:
    """A T5 v1.1-like encoder-decoder (RMSNorm, relative bias, gated GELU, untied head): encoder S, decoder T."""
    B, S, T = s.t5_batch
    cfg = model_preset("t5-small", vocab_size=s.vocab, d_model=s.d, n_layers=s.layers, n_heads=s.heads,
                       d_ff=int(4 * s.d * 2 / 3) // 32 * 32, max_seq_len=S)
    ours = build_model(cfg).train()
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=s.vocab, d_model=s.d, d_kv=s.d // s.heads, d_ff=cfg.d_ff, num_layers=s.layers,
        num_decoder_layers=s.layers, num_heads=s.heads, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        tie_word_embeddings=False, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        decoder_start_token_id=0, pad_token_id=0, attn_implementation="sdpa")).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, s.vocab, (B, S), generator=g)
    y = torch.randint(1, s.vocab, (B, T), generator=g)
    decoder_inputs = torch.cat([torch.zeros(B, 1, dtype=torch.long), y[:, :-1]], dim=1)

    def lmlab_step():  # as the span-corruption objective: teacher forcing, cross-entropy on the decoder's logits
        loss, n, _ = token_loss(ours(x, decoder_input_ids=decoder_inputs).logits, y)  # logits (B, T, V)
        return loss / n

    ours_s, hf_s = time_steps([(lmlab_step, ours.parameters()),
                              (lambda: hf(input_ids=x, labels=y).loss, hf.parameters())], warmup, steps)
    return B * (S + T) / ours_s, B * (S + T) / hf_s, ours.flops_per_token(S, T), ours.flops_per_token(S, T)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per model")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: runs in seconds")
    parser.add_argument("--precision", choices=["fp32", "fp32-fast", "bf16"], default="fp32",
                        help="the same precision setting on both sides (lmlab's train.precision)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON (benchmarks/run_all.py)")
    args = parser.parse_args()
    global PRECISION
    PRECISION = args.precision
    with run_precision(args.precision):
        run(args)


def run(args: argparse.Namespace) -> None:
    s = QUICK if args.quick else FULL
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    # The peak is measured before each row and the best kept: a single measurement taken while the machine was
    # busy for a moment has read half the real peak (and MFUs above 100%).
    measure = lambda: peak_flops(512 if args.quick else 2048, dtype=compute_dtype(args.precision))  # noqa: E731
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{torch.get_num_threads()} threads, {args.precision}")
    print(f"model: {s.layers} layers, d {s.d}, {s.heads} heads, vocab {s.vocab}; "
          f"{args.warmup} warm-up + {args.steps} timed steps")
    rows = [(f"GPT-2-like CLM {s.gpt_batch[0]}x{s.gpt_batch[1]}", gpt_row),
            (f"BERT-like MLM {s.bert_batch[0]}x{s.bert_batch[1]}", bert_row),
            (f"T5-like {s.t5_batch[0]}x({s.t5_batch[1]}+{s.t5_batch[2]})", t5_row)]
    peak, measured = 0.0, []
    for name, row in rows:
        peak = max(peak, measure())
        measured.append((name, *row(s, args.warmup, args.steps)))
    peak = max(peak, measure())
    print(f"peak (matmul, the best of {len(rows) + 1} measurements around the rows) {peak / 1e9:.1f} GFLOP/s")
    print(f"{'row':<28}{'lmlab tok/s':>12}{'HF tok/s':>12}{'ratio':>8}{'lmlab MFU':>11}{'HF MFU':>8}")
    records = []
    for name, ours, hf, fpt, hf_fpt in measured:
        print(f"{name:<28}{ours:>12.0f}{hf:>12.0f}{ours / hf:>8.2f}{ours * fpt / peak:>10.1%}"
              f"{hf * hf_fpt / peak:>8.1%}", flush=True)
        records.append(dict(row=name, precision=args.precision, lmlab=ours, hf=hf, ratio=ours / hf,
                            mfu=ours * fpt / peak, hf_mfu=hf * hf_fpt / peak, peak=peak))
    if args.json:
        Path(args.json).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
