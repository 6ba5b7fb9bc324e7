"""Run every benchmark and write ``benchmarks/RESULTS.md``: the machine, each script's table, and the speed aims
of the project next to what was measured.

Each script runs in its own process, one after the other (they would slow each other down), and hands its
rows back through ``--json``; its printed table goes into the file as it is. About 20 minutes on 2 CPU cores;
``--quick`` runs the tiny sizes in about a minute (a smoke test: the aims are about the full sizes).

    .venv/bin/python benchmarks/run_all.py [--quick] [--out benchmarks/RESULTS.md]      # make bench
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (key, section title, script, arguments)
RUNS = [
    ("train-fp32", "Training throughput, fp32", "train_throughput.py", []),
    ("train-bf16", "Training throughput, bf16 autocast", "train_throughput.py", ["--precision", "bf16"]),
    ("train-fast", "Training throughput, fp32-fast", "train_throughput.py", ["--precision", "fp32-fast"]),
    ("memory", "Peak memory of a training step", "train_memory.py", []),
    ("generate", "Generation, greedy, 128 new tokens, fp32 / bf16 / int8 / int8-dynamic weights", "generate.py",
     ["--runs", "5", "--memory"]),
    ("generate-1", "Generation on one thread, fp32", "generate.py", ["--runs", "5", "--threads", "1", "--dtypes",
                                                                     "fp32"]),
    ("generate-1b", "Generation, a Llama-like 1B-class decoder (d 2048, 16 layers), batch 1", "generate.py",
     ["--model", "llama-1b", "--batches", "1", "--new", "32", "--prompt", "16", "--runs", "3", "--memory"]),
    ("quantize", "Quality of bf16 and int8 weights: a decoder trained here, on held-out text", "quantize_quality.py",
     []),
    ("objectives", "Batch construction per objective", "objectives.py", []),
    ("finetune", "Fine-tuning and beam-search evaluation, seq2seq (T5-like)", "finetune.py", []),
]


def machine() -> list[str]:
    """What the numbers were measured on."""
    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 2**20:.0f} GiB memory"
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return [f"- date: {datetime.date.today().isoformat()}, lmlab commit {commit}",
            f"- CPU: {cpu}, {os.cpu_count()} cores{memory}; {gpu}",
            f"- Python {platform.python_version()}, torch {torch.__version__}, "
            f"transformers {version('transformers')}, {torch.get_num_threads()} torch threads by default"]


def run(script: str, args: list[str], quick: bool) -> tuple[str, list[dict] | None, float]:
    """The script's printed output, its JSON rows (None if it failed) and its wall time in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(HERE / script), *args, *(["--quick"] if quick else []), "--json", str(out)]
        if quick and script == "generate.py":
            cmd += ["--runs", "1"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        text = proc.stdout.rstrip()
        if proc.returncode != 0:
            return text + "\n" + proc.stderr.rstrip()[-3000:], None, seconds
        return text, json.loads(out.read_text()), seconds


def aims(rows: dict[str, list[dict] | None]) -> list[tuple[str, str, str, bool | None]]:
    """(aim, target, measured, met) for each speed aim of the project; met is None when its benchmark failed."""
    out = []

    def add(aim: str, target: str, key: str, measure, check) -> None:
        if rows.get(key) is None:
            out.append((aim, target, "benchmark failed", None))
            return
        measured = measure(rows[key])
        out.append((aim, target, measured[0], check(measured[1])))

    def ratios(key_rows: list[dict]) -> tuple[str, list[float]]:
        text = ", ".join(f"{r['row'].split(' ')[0]} {r['ratio']:.2f}x" for r in key_rows)
        return text, [r["ratio"] for r in key_rows]

    for key, precision in (("train-fp32", "fp32"), ("train-bf16", "bf16")):
        add(f"training tokens/s vs transformers, {precision}, every row", ">= 1.3x", key, ratios,
            lambda v: min(v) >= 1.3)
    add("training tokens/s vs transformers, BERT-like MLM, fp32", ">= 1.8x", "train-fp32",
        lambda r: (f"{r[1]['ratio']:.2f}x", r[1]["ratio"]), lambda v: v >= 1.8)
    add("MFU of the GPT-2-like row in fp32-fast (against the measured fp32-fast peak)", ">= 0.55", "train-fast",
        lambda r: (f"{r[0]['mfu']:.2f} (peak {r[0]['peak'] / 1e9:.0f} GFLOP/s)", r[0]["mfu"]), lambda v: v >= 0.55)
    def speed(key_rows: list[dict], batch: int, field: str, form: str) -> tuple[str, list[float]]:
        chosen = [x for x in key_rows if x["kind"] == "speed" and x["batch"] == batch]
        return ", ".join(f"{x['dtype']} {format(x[field], form)}" for x in chosen), [x[field] for x in chosen]

    for key, model in (("generate", "GPT-2-like"), ("generate-1b", "1B Llama-like")):
        add(f"generation tokens/s vs transformers.generate, batch 1, {model}, each dtype", ">= 2x", key,
            lambda r: speed(r, 1, "ratio", ".2f"), lambda v: min(v) >= 2.0)
        add(f"generation tokens/s at batch 1 against the memory-bandwidth limit, {model}, each dtype", ">= 70%",
            key, lambda r: speed(r, 1, "of_limit", ".0%"), lambda v: min(v) >= 0.7)
        add(f"memory of a loaded model / at a generate call's peak vs its weights, {model}", "<= 1.1x", key,
            lambda r: (", ".join(f"{x['dtype']} {x['loaded'] / x['weights']:.2f}x / {x['peak'] / x['weights']:.2f}x"
                                 for x in r if x["kind"] == "memory"),
                       [x["peak"] / x["weights"] for x in r if x["kind"] == "memory"]), lambda v: max(v) <= 1.1)
    for weights, limit in (("bf16", 0.01), ("int8", 0.02), ("int8-dynamic", 0.02)):
        add(f"held-out perplexity with {weights} weights vs fp32", f"within {limit:.0%}", "quantize",
            lambda r, w=weights: (f"{next(x['change'] for x in r if x['weights'] == w):+.2%}",
                                  next(x["change"] for x in r if x["weights"] == w)),
            lambda v, t=limit: abs(v) <= t)
    add("generation tokens/s vs transformers.generate, batch 8, each dtype", ">= 1.5x", "generate",
        lambda r: speed(r, 8, "ratio", ".2f"), lambda v: min(v) >= 1.5)
    add("generation in fp32 gives transformers' tokens exactly", "identical", "generate",
        lambda r: ("identical" if all(x["same"] for x in r if x["kind"] == "speed" and x["dtype"] == "fp32")
                   else "different", all(x["same"] for x in r if x["kind"] == "speed" and x["dtype"] == "fp32")),
        lambda v: v)
    add("batch construction, share of the training step, every objective", "< 3%", "objectives",
        lambda r: (f"at most {max(x['share'] for x in r):.2%} "
                   f"({max(r, key=lambda x: x['share'])['objective']})", max(x["share"] for x in r)),
        lambda v: v < 0.03)
    add("peak memory of a training step vs transformers", "<= 1.0x", "memory", ratios, lambda v: max(v) <= 1.0)
    for kind, aim, target in (("finetune", "seq2seq fine-tuning tokens/s vs transformers (Seq2SeqTrainer's step)", 1.0),
                              ("evaluate", "beam-search evaluation sentences/s vs transformers.generate", 1.5)):
        add(aim, f">= {target}x", "finetune",
            lambda r, k=kind: (f"{next(x['ratio'] for x in r if x['kind'] == k):.2f}x",
                               next(x["ratio"] for x in r if x["kind"] == k)),
            lambda v, t=target: v >= t)
    add("beam-search evaluation gives transformers' outputs exactly", "identical", "finetune",
        lambda r: (next(f"{x['differ']} of {x['n']} differ" for x in r if x["kind"] == "evaluate"),
                   next(x["same"] for x in r if x["kind"] == "evaluate")), lambda v: v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in about a minute")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="the Markdown file written")
    args = parser.parse_args()
    host = machine()  # before the runs: the commit they measure
    sections, rows = [], {}
    for key, title, script, script_args in RUNS:
        print(f"== {title}: {script} {' '.join(script_args)}", flush=True)
        text, rows[key], seconds = run(script, script_args, args.quick)
        print(text, flush=True)
        command = " ".join(["benchmarks/" + script, *script_args, *(["--quick"] if args.quick else [])])
        status = "" if rows[key] is not None else " **(failed)**"
        sections += [f"### {title}{status}", "", f"`{command}` ({seconds:.0f} s)", "", "```", text, "```", ""]

    lines = ["# Benchmark results", "",
             "Written by `benchmarks/run_all.py` (`make bench`); run it again to regenerate this file. "
             "`benchmarks/README.md` says what each script measures and how.", ""]
    if args.quick:
        lines += ["**Tiny sizes (`--quick`): a smoke test, not the measurement the aims are about.**", ""]
    lines += ["## Machine", "", *host, "", "## Aims", "",
              "| aim | target | measured | met |", "|---|---|---|---|"]
    for aim, target, measured, met in aims(rows):
        lines.append(f"| {aim} | {target} | {measured} | {'-' if met is None else 'yes' if met else 'no'} |")
    lines += ["", "## Each benchmark", "", *sections]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    if any(r is None for r in rows.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
