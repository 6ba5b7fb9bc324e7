"""Generation speed: lmlab's ``generate`` against Hugging Face ``generate()`` on the same weights and weight type,
in one process, and against the limit memory bandwidth sets.

A model is built in ``transformers`` with random weights and saved; lmlab loads that directory to run only
(``lmlab.load(..., for_inference=True, dtype=..., quantize=..., rows=batch)``, as its CLI does: laid out for the
rows of a decoding step) and Hugging Face loads it in
the same dtype: fp32; bf16 (``dtype=torch.bfloat16``); int8 (lmlab: weight-only int8 with per-channel scales;
Hugging Face: ``torch.ao`` dynamic quantization of its ``nn.Linear`` layers, the int8 path PyTorch offers it on a
CPU; GPT-2's blocks are ``Conv1D``, which it leaves in fp32); int8-dynamic (lmlab: ``--quantize int8-dynamic``,
the same kind of product as ``torch.ao``'s, against the same Hugging Face model as int8). Both decode greedily
with a KV cache, EOS disabled so every row runs the full ``--new`` tokens; one warm-up run each, then the median
of ``--runs`` timed runs (alternating, so load from other processes hits both alike). Tokens/s counts generated
tokens (batch x new).

The limit: a decoding step reads every weight matrix once (the decoder's and the head's: the bytes of
``--model`` in that dtype), so at batch 1 no implementation beats ``bandwidth / bytes`` tokens/s, with the
bandwidth a streaming read reaches on this machine (the best of several ``sum`` over 1 GiB). Each lmlab row says
which share of the limit it reaches. ``--memory`` also loads each dtype in a fresh process and reports its
resident memory after loading and at the peak of a ``generate`` call, beside the bytes of its weights; it loads
the model as an lmlab checkpoint (``convert_from_hf`` of the directory: what ``lmlab convert from-hf`` writes).

``--device cuda`` runs both sides on the GPU (the prepared check of issue 16's CUDA paths; not yet run on one):
the limit is the GPU's streaming read, int8 has no ``transformers`` row (``torch.ao``'s dynamic quantization is
CPU-only), int8-dynamic is left out (lmlab refuses it off x86 CPUs), and ``--memory`` reports CUDA memory
allocated after loading and at the peak of a ``generate`` call, in this process.

    .venv/bin/python benchmarks/generate.py [--model gpt2|llama-1b] [--dtypes fp32 bf16 int8 int8-dynamic]
        [--batches 1 8] [--new 128] [--prompt 32] [--runs 3] [--quick] [--memory] [--threads N] [--json PATH]
        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import tokenizers
import torch
import transformers
from timing import alternating_medians

import lmlab
from lmlab.infer import generate
from lmlab.interop import convert_from_hf
from lmlab.model.layers import Linear, return_freed_memory

MODELS = {  # random-weight decoders: the GPT-2-like benchmark model, and a Llama-like 1B-class one
    "gpt2": dict(kind="gpt2", vocab=8192, d=384, layers=6, heads=6),
    "llama-1b": dict(kind="llama", vocab=32000, d=2048, layers=16, heads=32, kv_heads=8, d_ff=5632),
    "quick": dict(kind="gpt2", vocab=512, d=64, layers=2, heads=4),
}
HF_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32, "int8-dynamic": torch.float32}
OURS = {"fp32": ("fp32", None), "bf16": ("bf16", None), "int8": ("fp32", "int8"),  # lmlab.load's dtype, quantize
        "int8-dynamic": ("fp32", "int8-dynamic")}
CPU = torch.device("cpu")


def hf_model(spec: dict, max_len: int) -> transformers.PreTrainedModel:
    """The random Hugging Face model of ``spec`` (dropout 0, SDPA attention, no EOS)."""
    if spec["kind"] == "gpt2":
        from reference import hf_gpt2

        return hf_gpt2(spec["vocab"], spec["d"], spec["layers"], spec["heads"], max_len, bos_token_id=None,
                       eos_token_id=None)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=spec["vocab"], hidden_size=spec["d"], intermediate_size=spec["d_ff"],
        num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"], num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=max(max_len, 2048), bos_token_id=None, eos_token_id=None, pad_token_id=0,
        tie_word_embeddings=False, attn_implementation="sdpa"))


def load_hf(path: str, dtype: str, device: torch.device = CPU) -> torch.nn.Module | None:
    """Hugging Face's model of ``path`` in ``dtype`` on ``device``; None for int8 off the CPU (no ``torch.ao``)."""
    if dtype.startswith("int8") and device.type != "cpu":
        return None
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=HF_DTYPES[dtype],
                                                              attn_implementation="sdpa").eval().to(device)
    if dtype.startswith("int8"):
        with warnings.catch_warnings():  # deprecated in favour of torchao, which is not a dependency here
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def bytes_per_step(model: torch.nn.Module) -> int:
    """The bytes one decoding step reads: every weight matrix of the decoder and the head (and int8 scales)."""
    tensors = {id(t): t for m in (model.decoder, model.head) for layer in m.modules() if isinstance(layer, Linear)
               for t in (layer.weight, getattr(layer, "scale", None)) if t is not None}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def synced(fn, device: torch.device):
    """``fn`` that returns only once ``device`` has finished its work (a CUDA call returns before)."""
    if device.type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(device)
        return out
    return call


def bandwidth(gib: float = 1.0, runs: int = 7, device: torch.device = CPU) -> float:
    """Bytes/s of a streaming read: the best of ``runs`` sums over a ``gib`` GiB float32 tensor on ``device``."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)
    read = synced(x.sum, device)
    read()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - t)
    return x.numel() * 4 / best


def memory(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak since the last :func:`reset_peak`) of this process, bytes."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS


def anonymous_peak(fn):
    """``fn()`` and the peak of this process's anonymous resident memory (``RssAnon``, polled every 2 ms) while it
    ran: its own allocations, not the pages of a weights file it maps (page cache, which the kernel can drop)."""
    peak, done = [memory("RssAnon")], threading.Event()

    def poll() -> None:
        while not done.wait(0.002):
            peak[0] = max(peak[0], memory("RssAnon"))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        out = fn()
    finally:
        done.set()
        thread.join()
    return out, max(peak[0], memory("RssAnon"))


def load_ours(path: str, dtype: str, rows: int = 1, device: torch.device = CPU) -> torch.nn.Module:
    """lmlab's model of ``path`` loaded to run in the weight type ``dtype`` (of :data:`OURS`), as the CLI loads it."""
    weights, quantize = OURS[dtype]
    model, _ = lmlab.load(path, device=device, for_inference=True, dtype=weights, quantize=quantize, rows=rows)
    return model


def memory_child(path: str, dtype: str, warm_up: str, new: int) -> None:
    """(In a fresh process) load the model of ``path`` to run in ``dtype`` and print its memory as JSON, each
    beyond the memory before loading: resident after loading, the peak of anonymous memory while loading, and
    the peak of a ``generate`` call. A tiny model (``warm_up``) is loaded and run first, so that what any first
    load costs once (lazy imports, torch's thread pool) is not counted as the model's."""
    tiny = load_ours(warm_up, dtype)
    generate(tiny, torch.ones(1, 8, dtype=torch.long), max_new_tokens=new)
    del tiny
    return_freed_memory()
    base, base_anon = memory("VmRSS"), memory("RssAnon")
    model, peak_anon = anonymous_peak(lambda: load_ours(path, dtype))
    weights = sum(t.numel() * t.element_size() for t in {*model.parameters(), *model.buffers()})
    loaded, peak_load = memory("VmRSS") - base, peak_anon - base_anon
    reset_peak()
    generate(model, torch.ones(1, 8, dtype=torch.long), max_new_tokens=new)
    peak = memory("VmHWM") - base
    print(json.dumps(dict(weights=weights, loaded=loaded, peak_load=peak_load, peak=peak)))


def lmlab_checkpoint(hf_dir: str | Path, vocab: int, out: Path) -> Path:
    """The lmlab checkpoint of a Hugging Face directory (``convert_from_hf``), with a word-level tokenizer of
    ``vocab`` words, which a checkpoint holds."""
    words = {f"w{i}": i for i in range(vocab)}
    tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="w0")).save(f"{hf_dir}/tokenizer.json")
    return convert_from_hf(hf_dir, out)


def cuda_memory_rows(path: str, dtypes: list[str], new: int, device: torch.device) -> list[dict]:
    """On a GPU, in this process: CUDA memory allocated by loading each dtype (and its peak while loading) and
    at the peak of a ``generate`` call, beyond what was allocated before, against the weights' bytes."""
    rows = []
    print("\nCUDA memory of a model loaded to run (this process; beyond what was allocated before loading)")
    print(f"{'dtype':>12}{'weights MB':>12}{'loaded':>9}{'peak, load':>12}{'peak, generate':>16}")
    for dtype in dtypes:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model = load_ours(path, dtype, device=device)
        weights = sum(t.numel() * t.element_size() for t in {*model.parameters(), *model.buffers()})
        loaded, peak_load = (torch.cuda.memory_allocated(device) - base,
                             torch.cuda.max_memory_allocated(device) - base)
        torch.cuda.reset_peak_memory_stats(device)
        synced(lambda m=model: generate(m, torch.ones(1, 8, dtype=torch.long, device=device), max_new_tokens=new),
               device)()
        peak = torch.cuda.max_memory_allocated(device) - base
        print(f"{dtype:>12}{weights / 1e6:>12.1f}{loaded / weights:>8.2f}x{peak_load / weights:>11.2f}x"
              f"{peak / weights:>15.2f}x", flush=True)
        rows.append(dict(kind="memory", dtype=dtype, weights=weights, loaded=loaded, peak_load=peak_load, peak=peak))
        model = None
    return rows


def memory_rows(path: str, warm_up: str, dtypes: list[str], new: int) -> list[dict]:
    rows = []
    print("\nmemory of a model loaded to run (fresh process each; beyond the process's memory before loading)")
    print(f"{'dtype':>12}{'weights MB':>12}{'loaded':>9}{'peak, load (anonymous)':>24}{'peak, generate':>16}")
    for dtype in dtypes:
        out = subprocess.run([sys.executable, __file__, "--memory-child", path, dtype, warm_up, "--new", str(new)],
                             capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        r = json.loads(out)
        w = r["weights"]
        print(f"{dtype:>12}{w / 1e6:>12.1f}{r['loaded'] / w:>8.2f}x{r['peak_load'] / w:>23.2f}x"
              f"{r['peak'] / w:>15.2f}x", flush=True)
        rows.append(dict(kind="memory", dtype=dtype, **r))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["gpt2", "llama-1b"], default="gpt2")
    parser.add_argument("--dtypes", nargs="+", choices=list(OURS), default=list(OURS))
    parser.add_argument("--new", type=int, default=128, help="tokens generated per row")
    parser.add_argument("--prompt", type=int, default=32, help="prompt length")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (median) after one warm-up")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--quick", action="store_true", help="a tiny model: runs in seconds")
    parser.add_argument("--memory", action="store_true", help="also measure each dtype's memory (fresh processes)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON (benchmarks/run_all.py)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both sides run")
    parser.add_argument("--memory-child", nargs=3, metavar=("PATH", "DTYPE", "WARM_UP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    if args.memory_child:
        memory_child(*args.memory_child, args.new)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    dtypes = [d for d in args.dtypes if device.type == "cpu" or d != "int8-dynamic"]  # (x86 CPUs only)
    spec = MODELS["quick" if args.quick else args.model]
    bw = bandwidth(0.25 if args.quick else 1.0, device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {where}, "
          f"greedy, KV cache; streaming read {bw / 1e9:.1f} GB/s")
    print(f"model: {args.model if not args.quick else 'quick'} ({spec['layers']} layers, d {spec['d']}, vocab "
          f"{spec['vocab']}), random weights; prompt {args.prompt}, {args.new} new tokens; 1 warm-up + median of "
          f"{args.runs}")
    print(f"{'dtype':>12}{'batch':>6}{'lmlab tok/s':>13}{'limit':>8}{'of limit':>10}{'HF tok/s':>10}{'ratio':>8}"
          f"  same tokens as HF")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        hf_model(spec, args.prompt + args.new).save_pretrained(tmp)
        for dtype in dtypes:
            hf = load_hf(tmp, dtype, device)
            for B in args.batches:  # lmlab's model laid out for the rows of its steps, as the CLI loads it
                ours = load_ours(tmp, dtype, rows=B, device=device)
                step_bytes = bytes_per_step(ours)
                x = torch.randint(0, spec["vocab"], (B, args.prompt), generator=torch.Generator().manual_seed(B))
                x = x.to(device)
                run_ours = synced(lambda x=x, m=ours: generate(m, x, max_new_tokens=args.new), device)
                run_hf = synced(lambda x=x, m=hf: m.generate(
                    x, attention_mask=torch.ones_like(x), max_new_tokens=args.new, do_sample=False, num_beams=1,
                    pad_token_id=0, eos_token_id=None), device)
                sides = [run_ours] if hf is None else [run_ours, run_hf]
                with torch.no_grad():
                    (ours_s, ours_out), *theirs = alternating_medians(sides, args.runs)
                n = B * args.new
                limit = B * bw / step_bytes
                row = dict(kind="speed", dtype=dtype, batch=B, threads=torch.get_num_threads(), lmlab=n / ours_s,
                           limit=limit, of_limit=n / ours_s / limit, bandwidth=bw, step_bytes=step_bytes,
                           model=args.model, device=device.type)
                assert ours_out.shape == (B, args.prompt + args.new), ours_out.shape
                if theirs:
                    (hf_s, hf_out), = theirs
                    assert hf_out.shape == ours_out.shape, hf_out.shape
                    new = ours_out[:, args.prompt:] == hf_out[:, args.prompt:]
                    same = "identical" if bool(new.all()) else \
                        f"first difference at new token {int(new.all(0).logical_not().nonzero()[0])}"
                    row.update(hf=n / hf_s, ratio=hf_s / ours_s, same=bool(new.all()))
                    hf_cells = f"{n / hf_s:>10.0f}{hf_s / ours_s:>8.2f}  {same}"
                else:
                    hf_cells = f"{'—':>10}{'—':>8}  (no transformers int8 on {device.type})"
                print(f"{dtype:>12}{B:>6}{n / ours_s:>13.0f}{limit:>8.0f}{n / ours_s / limit:>10.0%}{hf_cells}",
                      flush=True)
                records.append(row)
            ours = hf = None  # freed before the next dtype loads
        if args.memory and device.type == "cuda":
            records += cuda_memory_rows(tmp, dtypes, min(args.new, 32), device)
        elif args.memory:
            ours = lmlab_checkpoint(tmp, spec["vocab"], Path(tmp) / "lmlab")
            (Path(tmp) / "tiny").mkdir()
            hf_model(MODELS["quick"], args.prompt + args.new).save_pretrained(Path(tmp) / "tiny")
            warm_up = lmlab_checkpoint(Path(tmp) / "tiny", MODELS["quick"]["vocab"], Path(tmp) / "tiny-lmlab")
            records += memory_rows(str(ours), str(warm_up), dtypes, min(args.new, 32))
    if args.json:
        Path(args.json).write_text(json.dumps(records))


if __name__ == "__main__":
    main()
