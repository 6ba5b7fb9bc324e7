"""lmlab compare: the config is checked, the plan lists every cell as the command that runs it, scores aggregate
over seeds, and a tiny comparison runs end to end, skips what is done and resumes what is not."""

from __future__ import annotations

import html
import json
import re
import shlex
from pathlib import Path

import pytest

from lmlab.cli import build_parser, main
from lmlab.compare import aggregate, load_compare_config, mark_best, parse_compare_config, plan, run_compare
from lmlab.compare.report import Stat
from lmlab.config import load_config, parse_overrides
from lmlab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSIFY = """
[data]
seq_len = 48
[objective]
name = "classify"
[finetune]
metric = "accuracy"
eval_examples = 0
[train]
batch_size = 16
max_steps = 4
lr = 1e-3
warmup_steps = 1
eval_every = 100
eval_batches = 2
save_every = 100
log_every = 2
progress = false
peak_flops = 1e9
"""

SUMMARIZE = CLASSIFY.replace('"classify"', '"seq2seq"').replace('"accuracy"', '"rougeL"')


def _raw(shards: Path, task_dir: Path, data: Path, objectives=("clm/decoder", "mlm/encoder")) -> dict:
    (task_dir / "classify.toml").write_text(CLASSIFY)
    (task_dir / "summarize.toml").write_text(SUMMARIZE)
    return {
        "shards": str(shards), "objectives": list(objectives), "seeds": [0, 1], "max_flops": 3e8,
        "pretrain": {"train": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "eval_every": 100, "eval_batches": 1,
                               "save_every": 100, "log_every": 1, "progress": False, "peak_flops": 1e9},
                     "data": {"seq_len": 32}},
        "arch": {"decoder": {"preset": "gpt2-tiny"}, "encoder": {"preset": "bert-tiny", "model": {"d_ff": 128}},
                 "encoder-decoder": {"preset": "t5-tiny"}},
        "task": {"classes": {"config": str(task_dir / "classify.toml"), "data": str(data)}},
    }


def _cfg(raw: dict):
    return parse_compare_config(raw, "compare.toml")


# --------------------------------------------------------------------------- the config


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("shards"), "shards is missing"),
    (lambda r: r.update(objectives=["clm"]), r"objectives\[0\]: must be \"objective/architecture\""),
    (lambda r: r.update(objectives=["nope/decoder"]), "unknown pretraining objective 'nope'"),
    (lambda r: r.update(objectives=["classify/encoder"]), "unknown pretraining objective 'classify'"),
    (lambda r: r.update(objectives=["clm/encoder"]), "clm cannot train an encoder"),
    (lambda r: r.update(objectives=["bart/encoder-decoder"]) or r["arch"].pop("encoder-decoder"),
     r"needs a model: add \[arch.encoder-decoder\]"),
    (lambda r: r.update(seeds=[0, 0]), "seeds: must be a non-empty list of distinct integers"),
    (lambda r: r.update(max_flops=0), "max_flops: must be a positive FLOP count"),
    (lambda r: r.update(budget=1), r"unknown key\(s\) budget"),
    (lambda r: r["arch"]["decoder"].pop("preset"), "arch.decoder: preset is missing"),
    (lambda r: r["arch"].update(transformer={"preset": "gpt2-tiny"}), "arch.transformer: unknown architecture"),
    (lambda r: r.update(task={}), r"no \[task.NAME\]"),
    (lambda r: r["task"]["classes"].update(metrics=["loss"]), "task.classes.metrics: must be a non-empty list"),
    (lambda r: r["task"]["classes"].update(overrides={"train": {"max_stepz": 3}}), r"train\.max_stepz"),
    (lambda r: r["task"]["classes"].update(split="test"), r"task.classes: unknown key\(s\) split"),
    (lambda r: r["pretrain"]["train"].update(out_dir="x"), "train.out_dir is set by compare"),
    (lambda r: r["pretrain"]["train"].update(lrr=1.0), r"pretrain/clm-decoder/seed-0: unknown key\(s\) train\.lrr"),
    (lambda r: r.update(objective_overrides={"electra/encoder": {}}), "objective_overrides.electra/encoder: names no"),
    (lambda r: r.update(eval_at=[0.5, 1.0]), "eval_at: must be a list of distinct fractions of max_flops"),
    (lambda r: r.update(eval_at=[0.5, 0.5]), "eval_at: must be a list of distinct fractions"),
    (lambda r: r.update(eval_at=0.5), "eval_at: must be a list"),
    (lambda r: r["pretrain"]["train"].update(save_at_flops="1e8"), "train.save_at_flops is set by compare"),
])
def test_a_bad_config_is_refused_naming_the_key(sentinel_shards, class_data, tmp_path, change, message):
    raw = _raw(sentinel_shards, tmp_path, class_data)
    change(raw)
    with pytest.raises(ConfigError, match=message):
        plan(_cfg(raw), tmp_path / "out")


def test_a_config_file_is_read_and_bad_toml_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("objectives = [")
    with pytest.raises(ConfigError, match="not a valid TOML file"):
        load_compare_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_compare_config(tmp_path / "missing.toml")


def test_the_shipped_config_loads_and_plans(tmp_path, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # its paths are relative to the repository, as the README runs it
    cfg = load_compare_config(root / "configs" / "compare-small.toml")
    cells = plan(cfg, tmp_path / "out")
    assert {r.objective for r in cfg.rows} >= {"clm", "mlm", "electra", "span", "bart", "prefix_lm", "ul2"}
    assert len(cfg.seeds) == 3 and {t.name for t in cfg.tasks} == {"sections", "summaries"}
    assert all(c.na for c in cells if c.task is not None and c.task.name == "summaries" and c.row.arch == "encoder")


# --------------------------------------------------------------------------- the plan


def _run_config(command: str):
    """The run configuration the lmlab command line of a cell gives, as `lmlab pretrain/finetune` builds it."""
    args, extra = build_parser().parse_known_args(shlex.split(command)[1:])
    overrides = parse_overrides(extra)
    if args.preset:
        overrides["preset"] = args.preset
    if getattr(args, "init", None):
        overrides.setdefault("finetune", {})["init"] = args.init
    return load_config(args.config, overrides)


def test_the_plan_lists_every_cell_and_skips_what_cannot_run(sentinel_shards, class_data, reversal_data, tmp_path,
                                                              capsys):
    raw = _raw(sentinel_shards, tmp_path, class_data, ("clm/decoder", "mlm/encoder", "span/encoder-decoder"))
    raw["task"]["digits"] = {"config": str(tmp_path / "summarize.toml"), "data": str(reversal_data),
                             "overrides": {"train": {"max_steps": 7}}}
    raw["objective_overrides"] = {"mlm/encoder": {"objective": {"mask_prob": 0.2}}}
    out = tmp_path / "out"
    cells = plan(_cfg(raw), out)
    ids = [c.id for c in cells]
    pretrain = [i for i in ids if i.startswith("pretrain/")]
    assert pretrain == [f"pretrain/{r}/seed-{s}" for r in ("clm-decoder", "mlm-encoder", "span-encoder-decoder")
                        for s in (0, 1)]
    rows = ["clm-decoder", "mlm-encoder", "span-encoder-decoder", "none-decoder", "none-encoder",
            "none-encoder-decoder"]
    for task in ("classes", "digits"):
        for kind in ("finetune", "evaluate"):
            assert {i for i in ids if i.startswith(f"{kind}/{task}/")} == {
                f"{kind}/{task}/{r}/seed-{s}" for r in rows for s in (0, 1)}
    na = {c.id: c.na for c in cells if c.na}
    assert set(na) == {f"{k}/{t}/{r}/seed-{s}" for k in ("finetune", "evaluate") for s in (0, 1) for t, r in (
        ("classes", "span-encoder-decoder"), ("classes", "none-encoder-decoder"), ("digits", "mlm-encoder"),
        ("digits", "none-encoder"))}
    assert "classify cannot train an encoder-decoder" in na["finetune/classes/span-encoder-decoder/seed-0"]
    assert "seq2seq cannot train an encoder" in na["finetune/digits/mlm-encoder/seed-1"]

    by_id = {c.id: c for c in cells}
    for cell in cells:  # each command gives exactly the run configuration compare runs
        if cell.kind != "evaluate" and not cell.na:
            assert _run_config(cell.command()) == cell.config(), cell.id
    mlm = by_id["pretrain/mlm-encoder/seed-1"].config()
    assert (mlm.objective.name, mlm.objective.mask_prob, mlm.model.d_ff, mlm.train.seed, mlm.train.max_flops) == \
        ("mlm", 0.2, 128, 1, 3e8)
    assert mlm.train.out_dir == str(out / "pretrain" / "mlm-encoder" / "seed-1")
    ft = by_id["finetune/digits/clm-decoder/seed-0"].config()
    assert (ft.finetune.init, ft.train.max_steps, ft.data.train) == (
        str(out / "pretrain" / "clm-decoder" / "seed-0"), 7, str(reversal_data))
    none = by_id["finetune/classes/none-encoder/seed-1"].config()
    assert (none.finetune.init, none.finetune.tokenizer, none.model.arch, none.model.d_ff, none.train.seed) == (
        "none", str(sentinel_shards / "tokenizer.json"), "encoder", 128, 1)
    assert by_id["evaluate/classes/clm-decoder/seed-0"].command() == \
        f"lmlab evaluate {out / 'finetune' / 'classes' / 'clm-decoder' / 'seed-0'} --data {class_data} --split test"

    (tmp_path / "compare.toml").write_text(_toml(raw))
    assert main(["compare", "--config", str(tmp_path / "compare.toml"), "--out", str(out), "--plan"]) == 0
    printed = capsys.readouterr().out
    assert not out.exists()  # nothing ran
    commands = [line for line in printed.splitlines() if line.startswith("lmlab ")]
    assert len(commands) == len(cells) - len(na)
    assert "# n/a finetune/digits/mlm-encoder/seed-0: seq2seq cannot train an encoder" in printed
    for row in ("clm/decoder", "mlm/encoder", "span/encoder-decoder", "none/decoder"):
        assert f"#   {row}: " in printed and f"#   {row}: ?" not in printed


def test_eval_at_plans_fine_tuning_from_part_of_the_budget_and_changes_no_other_cell(sentinel_shards, class_data,
                                                                                      tmp_path):
    from lmlab.train.checkpoint import flops_dir

    raw = _raw(sentinel_shards, tmp_path, class_data)
    out = tmp_path / "out"
    before = plan(_cfg(raw), out)
    cells = plan(_cfg({**raw, "eval_at": [0.5, 0.25]}), out)
    assert [c.id for c in cells[:len(before)]] == [c.id for c in before]  # the same cells first, in the same order
    for old, new in zip(before, cells, strict=False):
        assert (new.out_dir, new.na, new.command() == old.command()) == (old.out_dir, old.na, new.kind != "pretrain")
        if new.kind == "pretrain":
            assert (new.config().train.save_at_flops, old.config().train.save_at_flops) == ((7.5e7, 1.5e8), ())
            assert new.config() == _run_config(new.command())
    extra = cells[len(before):]
    assert [c.id for c in extra] == [f"{k}/classes/{r}@{f}/seed-{s}" for r in ("clm-decoder", "mlm-encoder")
                                     for f in ("0.25", "0.5") for s in (0, 1) for k in ("finetune", "evaluate")]
    ft = {c.id: c for c in extra}["finetune/classes/mlm-encoder@0.25/seed-1"]
    assert ft.out_dir == out / "finetune" / "classes" / "mlm-encoder@0.25" / "seed-1"
    assert ft.config().finetune.init == str(out / "pretrain" / "mlm-encoder" / "seed-1" / flops_dir(7.5e7))
    assert all(c.config() == _run_config(c.command()) for c in extra if c.kind == "finetune")


def _toml(raw: dict) -> str:
    """A small TOML writer for the test's configs (tables of scalars, nested tables)."""
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines, tables = [], []

    def walk(prefix, table):
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix:
            tables.append(f"[{prefix}]")
            tables.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        else:
            lines.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in table.items():
            if isinstance(v, dict):
                walk(f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k), v)

    walk("", raw)
    return "\n".join(lines + tables) + "\n"


# --------------------------------------------------------------------------- aggregation


def test_aggregate_gives_mean_and_sample_std():
    s = aggregate([70.0, 72.0, 74.0])
    assert (s.mean, s.std, s.n) == (72.0, 2.0, 3)
    assert aggregate([5.0]) == Stat(5.0, 0.0, 1)
    assert aggregate([]) is None


def test_the_best_is_marked_and_close_rows_are_ties():
    column = {"a": Stat(80.0, 1.0, 3), "b": Stat(79.5, 0.2, 3), "c": Stat(70.0, 2.0, 3), "d": None,
              "e": Stat(78.9, 1.0, 3)}
    best, ties = mark_best(column)
    assert best == "a" and ties == {"b"}  # 0.5 < 1.0; e: 1.1 is not smaller than 1.0; c far below
    assert mark_best({"a": Stat(1.0, 0.0, 1), "b": Stat(1.0, 0.0, 1)})[1] == set()  # no spread: no tie
    assert mark_best({"x": None}) == (None, set())


# --------------------------------------------------------------------------- end to end


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _runs(files: dict[str, float]) -> dict[str, float]:
    """The files of the cells (and timings.json): all but the report and its figures, which each run rewrites."""
    from lmlab.compare.plots import FIGURES

    return {k: v for k, v in files.items() if k not in ("report.md", "report.html", *FIGURES.values())}


def _html(text: str) -> str:
    """A line of report.md as report.html should show it: escaped, `code` and **bold** (the best of a column)."""
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def _check_html(out: Path, figures: list[str]) -> str:
    """report.html: every heading, table row (each cell, the best of a column marked too), list item (the cells
    that cannot run, the missing ones, what was run where) and the config of report.md, the figures inside it as
    data, nothing from outside."""
    page, report = (out / "report.html").read_text(), (out / "report.md").read_text()
    lines = report.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## "):
            assert f"<h2>{line[3:]}</h2>" in page
        if line.startswith("| "):
            tag = "td" if lines[i - 1].startswith("|") else "th"  # a table's first line is its head
            assert "<tr>" + "".join(f"<{tag}>{_html(c)}</{tag}>" for c in line.strip("| ").split(" | ")) + \
                "</tr>" in page, line
        if line.startswith("- "):
            assert f"<li>{_html(line[2:])}</li>" in page, line
    config = report.split("\n```toml\n")[1].split("\n```\n")[0]
    assert f"<pre><code>{html.escape(config)}</code></pre>" in page
    for name in figures:
        assert f"]({name})" in report and (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count('<img alt="') == page.count('src="data:image/png;base64,') == len(figures)
    assert not any(s in page for s in ("http:", "https:", "<link", "<script", "src=\"file", "href="))
    return page


def test_a_tiny_comparison_runs_skips_what_is_done_and_resumes(sentinel_shards, class_data, tmp_path, capsys):
    from lmlab.compare.cells import TIMINGS, run_status
    from lmlab.train import checkpoint as ckpt
    from lmlab.train import pretrain
    from lmlab.train.log import source_commit

    raw = _raw(sentinel_shards, tmp_path, class_data)
    cfg = _cfg(raw)
    out = tmp_path / "out"
    cells = {c.id: c for c in plan(cfg, out)}
    stopped = cells["pretrain/clm-decoder/seed-1"]
    pretrain(stopped.config(), stop_after=1)  # stopped part-way, as Ctrl-C leaves a run
    assert run_status(stopped.out_dir) == "partial"
    killed = cells["finetune/classes/none-encoder/seed-0"].out_dir  # killed before its first checkpoint
    killed.mkdir(parents=True)
    (killed / "metrics.jsonl").write_text('{"step": 0, "event": "start"}\n')
    (killed / "notes.txt").write_text("mine")

    actions = run_compare(cfg, out, log=lambda _: None)
    assert actions.pop("pretrain/clm-decoder/seed-1") == "resumed"
    assert set(actions.values()) == {"ran"} and len(actions) == 4 * 2 * 2 + 3
    assert all(run_status(c.out_dir) == "done" for c in cells.values() if c.kind != "evaluate")
    metrics = [json.loads(line) for line in (stopped.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m.get("event") == "start"] == [0]  # one start: continued, not restarted
    assert (killed / "notes.txt").read_text() == "mine"
    flops = [[m["flops"] for m in (json.loads(x) for x in (c.out_dir / "metrics.jsonl").read_text().splitlines())
              if "flops" in m][-1] for c in cells.values() if c.kind == "pretrain"]
    assert all(3e8 <= f < 3e8 * 1.5 for f in flops)  # each stopped at the budget (a step is well under 1e8)

    report = (out / "report.md").read_text()
    for section in ("## Downstream scores", "## Downstream scores against pretraining FLOPs", "## Pretraining runs",
                    "## Parameters", "## Missing cells", "## What was run", "lmlab commit", "torch", "CPU"):
        assert section in report
    assert "None: every cell has run." in report
    commit = source_commit()
    if commit:  # lmlab runs from a git checkout
        ran_from = commit["lmlab_commit"] + (" with uncommitted changes" if commit["lmlab_dirty"] else "")
        assert f"- runs started from lmlab commit: {ran_from} (12 runs)\n" in report  # 4 pretraining, 8 fine-tuning
    # no eval_at: the section says it was not run, how to run it and what that costs (2 rows x 1 task x 2 seeds)
    assert "Not run: this comparison sets no `eval_at`" in report and "`eval_at = [0.25, 0.5]`" in report
    assert "4 more fine-tuning runs per fraction" in report
    costs = report.split("## Pretraining runs")[1].split("\n## ")[0]
    for row in ("clm/decoder", "mlm/encoder"):
        cost = next(t for t in costs.splitlines() if t.startswith(f"| {row} |")).strip("| ").split(" | ")
        assert float(cost[5].replace(",", "")) > 0 and float(cost[7]) > 0  # tokens/s and wall time measured
    table = [line for line in report.splitlines() if line.startswith("| ")]
    for row in ("clm/decoder", "mlm/encoder", "none/decoder", "none/encoder"):
        line = next(t for t in table if t.startswith(f"| {row} |"))
        assert line.count("±") == 2 and "(n=2)" in line
    assert sum(t.count("**") for t in table[:6]) == 2 * 2  # the best of each of the two columns is marked
    page = _check_html(out, ["scores.png", "pretraining-curves.png", "pretraining-cost.png"])
    assert "NOT comparable across objectives" not in report and "Not comparable across objectives" in page
    assert not (out / "scores-vs-flops.png").exists() and "<code>eval_at = [0.25, 0.5]</code>" in page
    timings = json.loads((out / TIMINGS).read_text())
    assert len(timings) == 4 * 2 * 2 + 4

    before = _files(out)
    again = run_compare(cfg, out, log=lambda _: None)
    assert set(again.values()) == {"skipped"}
    (tmp_path / "compare.toml").write_text(_toml(raw))
    assert main(["compare", "--config", str(tmp_path / "compare.toml"), "--out", str(out)]) == 0  # the command too
    after = _files(out)
    assert _runs(after) == _runs(before)
    assert "<pre><code>shards = " in (out / "report.html").read_text()  # the config file, as written

    # a changed config refuses to report the old cells as its own: nothing runs, nothing is deleted or rewritten
    (tmp_path / "bigger.toml").write_text(_toml({**raw, "max_flops": 6e8}))
    capsys.readouterr()
    assert main(["compare", "--config", str(tmp_path / "bigger.toml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmlab: error: ") and str(out / "pretrain" / "clm-decoder" / "seed-0") in err
    assert "train.max_flops: 3e+08 -> 6e+08" in err and "give a new --out" in err and "3 more cells" in err
    assert main(["compare", "--config", str(tmp_path / "bigger.toml"), "--out", str(out), "--plan"]) == 2
    task = {**raw["task"]["classes"], "overrides": {"train": {"lr": 5e-4}}}
    with pytest.raises(ConfigError, match=r"finetune/classes/clm-decoder/seed-0 .*train\.lr: 0\.001 -> 0\.0005"):
        run_compare(_cfg({**raw, "task": {"classes": task}}), out, log=lambda _: None)
    assert _files(out) == after

    # a run saved before lmlab had some keys: they take their defaults; a start record without a commit: unknown
    run = cells["pretrain/mlm-encoder/seed-0"].out_dir
    state_file = ckpt.list_checkpoints(run)[-1] / ckpt.STATE
    state = json.loads(state_file.read_text())
    del state["config"]["train"]["eval_at_start"], state["config"]["finetune"]["lora"]
    state_file.write_text(json.dumps(state))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    del records[0]["lmlab_commit"], records[0]["lmlab_dirty"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert set(run_compare(cfg, out, log=lambda _: None).values()) == {"skipped"}
    if commit:
        assert f"- runs started from lmlab commit: {ran_from} (11 runs), unknown (1 run: " in \
            (out / "report.md").read_text()


def test_eval_at_fine_tunes_from_part_of_the_budget_end_to_end(sentinel_shards, class_data, tmp_path):
    """Pretraining keeps its model at each eval_at fraction of the budget, each task is fine-tuned from it too, and
    the report shows the scores against pretraining FLOPs. A fraction added after pretraining finished cannot run:
    its cells say why, and nothing is retrained."""
    from lmlab.train.checkpoint import flops_dir

    raw = {**_raw(sentinel_shards, tmp_path, class_data, ("clm/decoder",)), "eval_at": [0.5]}
    out = tmp_path / "out"
    actions = run_compare(_cfg(raw), out, log=lambda _: None)
    assert set(actions.values()) == {"ran"} and len(actions) == 2 + 3 * 2 * 2  # clm, none, clm@0.5 x 2 seeds
    for seed in (0, 1):
        kept = json.loads((out / "pretrain" / "clm-decoder" / f"seed-{seed}" / flops_dir(1.5e8) /
                           "training_state.json").read_text())
        assert 1.5e8 <= kept["flops_seen"] < 3e8
        run = out / "finetune" / "classes" / "clm-decoder@0.5" / f"seed-{seed}"
        assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["init"]["init"].endswith(
            f"seed-{seed}/{flops_dir(1.5e8)}")
        assert (run / "eval-test" / "scores.json").is_file()
    report = (out / "report.md").read_text()
    assert "## Downstream scores against pretraining FLOPs" in report and "None: every cell has run." in report
    assert "| row | 0 (none row) | 0.5 × budget (1.5e+08) | 1 × budget (3e+08) |" in report
    sweep = [line for line in report.splitlines() if line.startswith("| clm/decoder | ") and line.count("±") == 3]
    assert len(sweep) == 1 and sweep[0].count("(n=2)") == 3  # none at 0, 0.5 and the whole budget
    _check_html(out, ["scores.png", "scores-vs-flops.png", "pretraining-curves.png", "pretraining-cost.png"])

    before, logged = _files(out), []
    again = run_compare(_cfg({**raw, "eval_at": [0.25, 0.5]}), out, log=logged.append)
    assert {k: v for k, v in again.items() if v != "skipped"} == {
        f"{k}/classes/clm-decoder@0.25/seed-{s}": "blocked" for k in ("finetune", "evaluate") for s in (0, 1)}
    assert any("did not keep flops-7.5e+07" in line and "delete that run" in line for line in logged)
    assert _runs(_files(out)) == _runs(before)
    assert "- finetune/classes/clm-decoder@0.25/seed-0" in (out / "report.md").read_text()


def test_task_configs_are_found_from_any_working_directory(tmp_path, monkeypatch, capsys):
    """A task's config: in the working directory, else beside the compare config, else in its directory's parent
    (the shipped configs name each other from the repository's root); found nowhere, every place tried is named."""
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    shipped = root / "configs" / "compare-small.toml"
    assert [t.config for t in load_compare_config(shipped).tasks] == [
        str(root / "configs" / "classify-sections.toml"), str(root / "configs" / "summarize-debian.toml")]
    assert main(["compare", "--config", str(shipped), "--out", "out", "--plan"]) == 0
    assert "lmlab finetune --config " + str(root / "configs" / "classify-sections.toml") in capsys.readouterr().out

    raw = _raw(tmp_path / "shards", tmp_path, tmp_path / "data")
    raw["task"]["classes"]["config"] = "classify.toml"  # beside the compare config: found
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    (tmp_path / "compare.toml").write_text(_toml(raw))
    assert load_compare_config(tmp_path / "compare.toml").tasks[0].config == str(tmp_path / "classify.toml")
    raw["task"]["classes"]["config"] = "nope.toml"
    (tmp_path / "sub" / "compare.toml").write_text(_toml(raw))
    with pytest.raises(ConfigError) as e:
        load_compare_config(tmp_path / "sub" / "compare.toml")
    assert "task.classes.config: nope.toml does not exist; looked for " in str(e.value)
    for tried in (tmp_path / "sub" / "nope.toml", tmp_path / "nope.toml"):  # the working directory, the config's,
        assert str(tried) in str(e.value)                                   # and its parent


def test_the_command_reports_a_bad_config_and_exits_2(tmp_path, capsys):
    (tmp_path / "compare.toml").write_text('shards = "s"\nobjectives = ["clm/decoder"]\nseeds = [0]\n')
    assert main(["compare", "--config", str(tmp_path / "compare.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "max_flops: must be a positive FLOP count" in capsys.readouterr().err


def test_an_interrupted_cell_stops_the_comparison_and_its_time_is_kept(sentinel_shards, class_data, tmp_path,
                                                                       monkeypatch):
    """Ctrl-C or SIGTERM: the run saves and returns interrupted; compare stops there (the CLI exits 130)."""
    from lmlab.compare import cells as cells_module
    from lmlab.train import TrainResult

    calls = []

    def interrupted(cfg, resume=None, overwrite=False, stop_after=None):
        calls.append(cfg.train.out_dir)
        return TrainResult(out_dir=Path(cfg.train.out_dir), step=1, checkpoint=None, interrupted=True)

    monkeypatch.setattr("lmlab.train.pretrain", interrupted)
    raw = _raw(sentinel_shards, tmp_path, class_data)
    (tmp_path / "compare.toml").write_text(_toml(raw))
    out = tmp_path / "out"
    assert main(["compare", "--config", str(tmp_path / "compare.toml"), "--out", str(out)]) == 130
    assert calls == [str(out / "pretrain" / "clm-decoder" / "seed-0")]  # the first cell, and no other
    assert list(json.loads((out / cells_module.TIMINGS).read_text())) == ["pretrain/clm-decoder/seed-0"]
    assert not (out / "report.md").exists()


def test_a_planned_command_stopped_part_way_continues_with_resume(sentinel_shards, class_data, tmp_path):
    """The cluster path: a cell's printed line plus --resume RUN_DIR finishes the run, and compare then skips it."""
    from lmlab.compare.cells import run_status
    from lmlab.train import pretrain

    cfg = _cfg(_raw(sentinel_shards, tmp_path, class_data))
    cell = plan(cfg, tmp_path / "out")[0]
    pretrain(cell.config(), stop_after=1)
    assert run_status(cell.out_dir) == "partial"
    assert main(shlex.split(cell.command())[1:] + ["--resume", str(cell.out_dir)]) == 0
    assert run_status(cell.out_dir) == "done"
