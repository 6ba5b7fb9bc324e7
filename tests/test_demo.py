"""``lmlab demo``: the time budget on a fake clock, the tasks held out by module, and the whole story end to end
(shortened), including a budgeted run reproduced exactly by the step counts it prints."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmlab.cli import main
from lmlab.demo import SHARES, _Stages, run_demo
from lmlab.demo.budget import EVALS, PROBE_STEPS, Budget, Cost, cost_of, format_steps, parse_steps
from lmlab.demo.tasks import packages, split_module, summary_pair, write_demo_data
from lmlab.errors import ConfigError

TINY = ["--model.d_model=32", "--model.d_ff=64", "--model.n_layers=1", "--model.n_heads=2", "--data.seq_len=32",
        "--train.batch_size=4", "--train.eval_batches=1", "--train.progress=false", "--train.peak_flops=1e11",
        "--finetune.eval_examples=8"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_gives_each_stage_its_share_of_what_is_left():
    clock = FakeClock()
    budget = Budget(8, {"clm": 0.25, "mlm": 0.25, "summarize": 0.3, "classify": 0.2}, clock)
    assert budget.allot("clm") == pytest.approx(480 * 0.25)
    clock.now += 200  # clm ran over (120 s were its share): the others share the 280 s left
    assert budget.allot("mlm") == pytest.approx(280 * 0.25 / 0.75)
    clock.now += 40
    assert budget.allot("summarize") == pytest.approx(240 * 0.3 / 0.5)
    clock.now += 500  # over the budget: the last stage gets nothing, and is then sized to one step
    assert budget.allot("classify") == 0.0
    assert Cost(setup_s=3, step_s=0.5, eval_s=1).steps_within(0.0) == 1
    with pytest.raises(ConfigError, match="--minutes"):
        Budget(0, SHARES)


def test_steps_within_pays_setup_and_evaluations_per_run():
    cost = Cost(setup_s=2.0, step_s=0.5, eval_s=1.0)
    assert cost.steps_within(60.0) == (60 - 2 - EVALS) // 0.5
    assert cost.steps_within(60.0, runs=2) == (30 - 2 - EVALS) // 0.5


def test_cost_of_a_probe_from_its_metrics():
    # four logged steps of 1,000 tokens: a slow warm-up, then 0.5 s, 0.4 s, 0.6 s; one evaluation of 2 s
    rows = [{"step": 0, "event": "start"}] + [
        {"step": i + 1, "loss": 5.0, "tokens": 1000 * (i + 1), "tokens_per_s": 1000 / s}
        for i, s in enumerate([3.0, 0.5, 0.4, 0.6])] + [{"step": 4, "val_loss": 4.0, "eval_s": 2.0}]
    cost = cost_of(rows, wall_s=10.0)
    assert cost.step_s == pytest.approx(0.5) and cost.eval_s == 2.0
    assert cost.setup_s == pytest.approx(10.0 - 4.5 - 2.0)


def test_stages_are_sized_from_a_probe_on_a_fake_clock(tmp_path, capsys):
    """The probe trains PROBE_STEPS steps of the stage's own configuration; the stage gets what its share
    affords after the probe's own time."""
    clock = FakeClock()
    seen = []

    def train(overrides):  # a fake run: 1 s to set up, 0.25 s a step (a slow first one), 2 s for an evaluation
        seen.append(overrides)
        out = next(o.split("=", 1)[1] for o in overrides if o.startswith("--train.out_dir="))
        rows = []
        clock.now += 1.0
        for step in range(1, PROBE_STEPS + 1):
            s = 1.0 if step == 1 else 0.25
            clock.now += s
            rows.append({"step": step, "tokens": 512 * step, "tokens_per_s": 512 / s})
        clock.now += 2.0
        rows.append({"step": PROBE_STEPS, "val_loss": 3.0, "eval_s": 2.0})
        Path(out).mkdir(parents=True)
        (Path(out) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    stages = _Stages(tmp_path, 10, None, ["clm", "summarize"], clock)
    steps = stages.size("clm", 1, train)
    allotted = 600 * SHARES["clm"] / (SHARES["clm"] + SHARES["summarize"])
    probe_s = 1.0 + 1.0 + 0.25 * (PROBE_STEPS - 1) + 2.0
    assert steps == int((allotted - probe_s - 1.0 - EVALS * 2.0) / 0.25)
    assert f"--train.max_steps={PROBE_STEPS}" in seen[0] and not (tmp_path / ".probe").exists()
    clock.now += 60.0
    pair = stages.size("summarize", 2, train)  # two runs share what is left after clm's probe and 60 s
    assert pair == int(((600 - probe_s - 60.0 - probe_s) / 2 - 1.0 - EVALS * 2.0) / 0.25)
    assert stages.steps == {"clm": steps, "summarize": pair}
    assert "a step takes 0.25 s" in capsys.readouterr().out


def test_step_counts_parse_and_print_back():
    stages = list(SHARES)
    assert parse_steps(None, stages) is None
    assert parse_steps("30", stages) == dict.fromkeys(stages, 30)
    counts = {"clm": 300, "mlm": 250, "summarize": 120, "classify": 90}
    assert parse_steps(format_steps(counts), stages) == counts
    for bad in ("0", "x", "clm=3", "clm=3,mlm=2,summarize=1,classify=0", "clm=3,mlm=2,summarize=1,classify=1,x=2"):
        with pytest.raises(ConfigError, match="--steps"):
            parse_steps(bad, stages)


def _module_in(split: str, prefix: str) -> str:
    return next(f"{prefix}/m{i}.py" for i in range(10_000) if split_module(f"{prefix}/m{i}.py") == split)


def test_tasks_are_held_out_by_module(tmp_path):
    doc = "Summary of {m} {i}.\n\nA body long enough to be summarized, about {m}, number {i}."
    modules = []
    for package in ("alpha", "beta"):
        names = [_module_in(s, package) for s in ("train", "valid", "test")]
        names += [f"{package}/extra{i}.py" for i in range(4)]
        modules += [(m, [doc.format(m=m, i=i) for i in range(40)]) for m in names]
    modules += [("gamma/only.py", [doc.format(m="gamma/only.py", i=0)])]
    paths = write_demo_data(tmp_path, modules)
    corpus = [json.loads(line)["text"] for line in (paths["corpus"] / "stdlib_docstrings.jsonl").open()]
    held_out = {m for m, _ in modules if split_module(m) != "train"}
    assert corpus and not any(m in text for text in corpus for m in held_out)  # no held-out docstring pretrained on
    for task, field in (("summarize", "source"), ("classify", "text")):
        rows = {s: [json.loads(line) for line in (paths[task] / f"{s}.jsonl").open()]
                for s in ("train", "valid", "test")}
        for split, examples in rows.items():
            mods = {re.search(r"about (\S+),", ex[field]).group(1) if task == "summarize"
                    else re.search(r"of (\S+) ", ex[field]).group(1) for ex in examples}
            assert all(split_module(m) == split for m in mods), (task, split)
        assert rows["test"] and rows["valid"]
    assert packages(modules) == ["alpha", "beta"]  # gamma: one module, too few docstrings
    labels = {json.loads(line)["label"] for line in (paths["classify"] / "train.jsonl").open()}
    assert labels == {"alpha", "beta"}


def test_summary_pairs_follow_pep_257():
    assert summary_pair("Return x.\n\nThe value of x, as given, without any changes at all.") == \
        {"source": "The value of x, as given, without any changes at all.", "target": "Return x."}
    assert summary_pair("One line only, with no body at all in this docstring.") is None
    assert summary_pair("Two lines\nof summary.\n\nA body long enough to count as a source here.") is None
    assert summary_pair("Short body.\n\nToo short.") is None


def test_demo_on_a_user_corpus(docs, tmp_path, capsys):
    corpus = tmp_path / "corpus.csv"  # rows with their text in "body" (--data.text_field)
    with open(corpus, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "body"], *enumerate(docs)])
    argv = ["demo", "--corpus", str(corpus), "--out", str(tmp_path / "demo"), "--steps", "2",
            "--data.text_field=body", "--data.seq_len=32", "--train.batch_size=2", "--train.eval_batches=1",
            "--train.progress=false", "--train.peak_flops=1e11"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for part in ("[1/4]", "[4/4]", "unigram", "fill-mask", "sampled continuations", "demo finished",
                 "--steps clm=2,mlm=2"):
        assert part in out
    for name in ("clm", "mlm"):
        run = tmp_path / "demo" / name
        assert (run / "step-000002" / "model.safetensors").is_file()
        assert (run / "loss.png").is_file() and (run / "metrics.jsonl").is_file()


def test_whole_story_within_a_budget_and_reproduced_by_its_steps(tmp_path, capsys):
    """Tiny models, a budget of a few seconds: every section is printed, the picture written, and the step counts
    it prints rerun the same training exactly."""
    results = run_demo(out_dir=tmp_path / "a", minutes=0.25, overrides=TINY, vocab_size=600)
    out = capsys.readouterr().out
    for part in ("[1/6]", "[6/6]", "budget: 0.25 minutes", "a step takes", "unigram", "fill-mask",
                 "sampled continuations", "summary of an unseen docstring", "package of an unseen docstring",
                 "what pretraining bought", "lead sentence", "majority class", "pictures:", "demo finished"):
        assert part in out, part
    assert (tmp_path / "a" / "demo.png").is_file()
    assert set(results["classify"]) == {"pretrained", "scratch", "baseline"}
    steps = re.search(r"rerun exactly: lmlab demo --steps (\S+)", out).group(1)
    assert set(parse_steps(steps, list(SHARES))) == set(SHARES)
    run_demo(out_dir=tmp_path / "b", steps=steps, overrides=TINY, vocab_size=600)
    assert "a step takes" not in capsys.readouterr().out  # no probes with fixed steps
    for run in ("clm", "mlm", "summarize-pretrained", "summarize-scratch", "classify-pretrained", "classify-scratch"):
        a, b = (load_file(str(next((tmp_path / side / run).glob("step-*")) / "model.safetensors")) for side in "ab")
        assert all(torch.equal(a[k], b[k]) for k in a), run
