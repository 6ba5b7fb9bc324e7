"""The tables of results/instruct-real.md from the runs of run.sh: SFT's held-out completion loss before and after,
DPO's held-out loss, reward accuracy and margin before (the step-0 evaluation of train.eval_at_start) and after,
its test scores (lmlab evaluate), every model's log-prob preference accuracy (pairs.json), trainable parameters,
and each run's wall time when run.sh's log is given.

    python results/instruct-real/summary.py runs/instruct [runs/instruct.log]
"""
import json
import re
import sys
from pathlib import Path

exp = Path(sys.argv[1])
log = Path(sys.argv[2]).read_text().splitlines() if len(sys.argv) > 2 else []
pairs = json.loads((exp / "pairs.json").read_text())


def records(run):
    return [json.loads(line) for line in (exp / run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def evals(run):
    return [r for r in records(run) if "val_loss" in r]


def time_cell(run):
    """The wall time run.sh's `step` logged for the command that wrote ``run``, as the table's last cell; no cell
    without the log."""
    for i, line in enumerate(log):
        if line.startswith("== ") and re.search(rf"--train\.out_dir \S*{exp.name}/{run}(\s|$)", line):
            return [f"{next(float(w.split()[1]) for w in log[i + 1:] if w.strip().startswith('wall ')):.0f} s"]
    return []


def cells(run, *columns):
    start = records(run)[0]
    trainable = start.get("trainable_params", start.get("params"))
    acc = pairs[str(exp / run)]["accuracy"]
    return [run, f"{trainable:,}", *columns, f"{acc:.1%}", *time_cell(run)]


def table(head, rows):
    time = ["time"] if log else []
    print("| " + " | ".join(head + ["log-prob preference accuracy (test)"] + time) + " |")
    print("|" + "---|" * (len(head) + 1 + len(time)))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


base = pairs[str(exp / "clm")]["accuracy"]
table(["run", "trainable parameters", "held-out completion loss, start → end"],
      [["pretrained decoder", "—", "—", f"{base:.1%}", *time_cell("clm")]]
      + [cells(run, f"{evals(run)[0]['val_loss']:.3f} → {evals(run)[-1]['val_loss']:.3f}")
         for run in ("sft", "sft-lora")])
rows = []
for run in ("dpo", "dpo-lora"):
    first, last = evals(run)[0], evals(run)[-1]
    test = json.loads((exp / run / "test.json").read_text())["scores"]
    rows.append(cells(
        run, f"{first['val_loss']:.3f} → {last['val_loss']:.3f}",
        f"{first['val_rewards/accuracies']:.1%} → {last['val_rewards/accuracies']:.1%}",
        f"{first['val_rewards/margins']:.3f} → {last['val_rewards/margins']:.3f}".replace("-0.000", "0.000"),
        f"{test['rewards/accuracies']:.1%} / {test['rewards/margins']:.3f}"))
table(["run", "trainable parameters", "held-out DPO loss, start → end", "held-out reward accuracy, start → end",
       "held-out reward margin, start → end", "test reward accuracy / margin"], rows)
