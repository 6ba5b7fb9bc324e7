"""The table of results/instruct-real.md from the runs of run.sh: held-out SFT loss before and after, DPO's
held-out reward accuracy and margin before (the step-0 evaluation) and after, the log-prob preference accuracy of
every model (pairs.json), trainable parameters, and wall time.

    python results/instruct-real/summary.py runs/instruct
"""
import json
import sys
from pathlib import Path

exp = Path(sys.argv[1])


def records(run):
    return [json.loads(line) for line in (exp / run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def evals(run):
    return [r for r in records(run) if "val_loss" in r]


pairs = json.loads((exp / "pairs.json").read_text())
print("| run | trainable parameters | held-out loss, start → end | reward accuracy / margin (test) "
      "| log-prob preference accuracy (test) |")
print("|---|---|---|---|---|")
for run in ("sft", "sft-lora", "dpo", "dpo-lora"):
    start = records(run)[0]
    first, last = evals(run)[0], evals(run)[-1]
    trainable = start.get("trainable_params", start.get("params"))
    test = json.loads((exp / run / "test.json").read_text())["scores"] if (exp / run / "test.json").exists() else {}
    reward = (f"{test['rewards/accuracies']:.1%} / {test['rewards/margins']:.2f}" if "rewards/accuracies" in test
              else "—")
    acc = pairs.get(str(exp / run), {}).get("accuracy")
    print(f"| {run} | {trainable:,} | {first['val_loss']:.3f} → {last['val_loss']:.3f} | {reward} | "
          + (f"{acc:.1%}" if acc is not None else "—") + " |")
for base in ("clm",):
    acc = pairs.get(str(exp / base), {}).get("accuracy")
    print(f"| {base} (pretrained only) | — | — | — | {acc:.1%} |")
