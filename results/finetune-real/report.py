"""Print the tables of results/finetune-real.md from the runs of run.sh (test scores, validation curves, times)."""
import json
import sys
from pathlib import Path

EXP = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/real")


def log(run):
    return [json.loads(line) for line in (EXP / run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def speed(run):
    rows = [r for r in log(run) if "tokens_per_s" in r]
    return sum(r["tokens_per_s"] for r in rows) / max(len(rows), 1)


for task, metrics in (("mt", ["bleu", "chrf", "rougeL"]), ("summaries", ["rouge1", "rouge2", "rougeL", "bleu"])):
    print(f"\n### {task}\n")
    print("| model | " + " | ".join(metrics) + " |")
    print("|---|" + "---|" * len(metrics))
    baselines = None
    inits = ("pretrained", "scratch", "long-pretrained", "long-scratch")
    for init in inits:
        path = EXP / f"{task}-{init}" / "test.json"
        if not path.is_file():
            continue
        text = path.read_text()
        result = json.loads(text[text.index("{"):])  # (a run.sh before its fix wrote its "==" line there too)
        baselines = result["baselines"]
        state = json.loads((EXP / f"{task}-{init}" / "best" / "training_state.json").read_text())
        steps = state["config"]["train"]["max_steps"]
        name = "span-pretrained T5, fine-tuned" if init.endswith("pretrained") else "same T5 from scratch"
        print(f"| {name}, {steps} steps (best {state['step']}) | "
              + " | ".join(f"{result['scores'][m]:.2f}" for m in metrics) + " |")
    for name, scores in (baselines or {}).items():
        print(f"| baseline: {name} | " + " | ".join(f"{scores[m]:.2f}" for m in metrics) + " |")
    for init in inits:
        run = f"{task}-{init}"
        if (EXP / run / "metrics.jsonl").is_file():
            curve = [(r["step"], r.get(f"val_{metrics[0]}")) for r in log(run) if f"val_{metrics[0]}" in r]
            print(f"\n{run}: validation {metrics[0]} by step {curve}; training {speed(run):,.0f} tokens/s")

print("\n### sections\n")
print("| model | accuracy | macro_f1 |")
print("|---|---|---|")
baselines = None
names = {"mlm": "lmlab encoder, MLM-pretrained", "electra": "lmlab encoder, ELECTRA-pretrained",
         "scratch": "lmlab encoder from scratch", "minilm": "all-MiniLM-L6-v2 fine-tuned",
         "minilm-scratch": "MiniLM architecture from scratch"}
for run, name in names.items():
    path = EXP / f"sections-{run}" / "test.json"
    if not path.is_file():
        continue
    text = path.read_text()
    result = json.loads(text[text.index("{"):])
    baselines = result["baselines"]
    curve = [(r["step"], round(r["val_accuracy"], 2)) for r in log(f"sections-{run}") if "val_macro_f1" in r]
    print(f"| {name} | {result['scores']['accuracy']:.2f} | {result['scores']['macro_f1']:.2f} |"
          f" <!-- val accuracy by step {curve}, {speed(f'sections-{run}'):,.0f} tokens/s -->")
for name, scores in (baselines or {}).items():
    print(f"| baseline: {name} | {scores['accuracy']:.2f} | {scores['macro_f1']:.2f} |")
