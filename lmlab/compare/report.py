"""The comparison's report: downstream scores aggregated over seeds, what each pretraining run cost, and what
was run where.

:func:`aggregate` and :func:`mark_best` are pure (numbers in, numbers out); :func:`collect` reads the cells'
files into a :class:`ReportData`; renderers turn that into pages: the figures (:mod:`lmlab.compare.plots`, PNGs
beside the report), :func:`render_markdown` (``report.md``, which shows the figures), and ``report.html``, the
same page made self-contained (:mod:`lmlab.compare.html`: the figures inside it as data).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.compare.cells import SCORES, TIMINGS, Cell, cell_status
from lmlab.compare.config import CompareConfig
from lmlab.train.log import read_metrics, source_commit

REPORT = "report.md"
HTML = "report.html"


@dataclass(frozen=True)
class Stat:
    """A metric over seeds: mean, sample standard deviation (0 for one seed) and the number of seeds."""

    mean: float
    std: float
    n: int

    def text(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" + (f" (n={self.n})" if self.n else "")


def aggregate(values: list[float]) -> Stat | None:
    """Mean ± standard deviation (``statistics.stdev``, n - 1) of one cell's scores over seeds; None for none."""
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def mark_best(column: dict[str, Stat | None]) -> tuple[str | None, set[str]]:
    """The row with the highest mean of a column, and the rows tied with it: those whose mean is closer to the
    best's than the seed spread (the larger standard deviation of the two). Every metric here is higher-better."""
    scored = {row: s for row, s in column.items() if s is not None}
    if not scored:
        return None, set()
    best = max(scored, key=lambda r: scored[r].mean)
    top = scored[best]
    ties = {r for r, s in scored.items() if r != best and top.mean - s.mean < max(top.std, s.std)}
    return best, ties


@dataclass
class PretrainCost:
    """What a row's pretraining runs cost, over the seeds run so far."""

    runs: int
    steps: float
    tokens: float
    flops: float
    tokens_per_s: float
    train_s: float
    wall_s: float | None


@dataclass
class ReportData:
    """Everything a report shows; the renderers only format it."""

    cfg: CompareConfig
    rows: list[str]
    columns: list[tuple[str, str]]  # (task, metric)
    table: dict[str, dict[tuple[str, str], Stat | None]]  # row -> column -> scores over seeds
    na: dict[tuple[str, str], str]  # (row, task) -> why it cannot run
    costs: dict[str, PretrainCost | None]
    params: dict[str, tuple[int, int] | None]  # row -> (all parameters, non-embedding)
    missing: list[str]  # cells not done yet
    provenance: dict[str, str] = field(default_factory=dict)
    curves: dict[str, dict[int, list[dict[str, Any]]]] = field(default_factory=dict)  # row -> seed -> metrics.jsonl
    scores: dict[str, dict[tuple[str, str], list[float]]] = field(default_factory=dict)  # the table's seeds' values
    # eval_at: row -> fraction of the budget -> column -> scores over seeds of the fine-tuning from there
    sweep: dict[str, dict[float, dict[tuple[str, str], Stat | None]]] = field(default_factory=dict)
    finetune_s: float | None = None  # the mean wall seconds of a fine-tuning run and its evaluation


def _cost(rows: list[dict[str, Any]]) -> tuple[float, float, float, float]:
    """(steps, tokens, FLOPs, training seconds) of a run from its metrics.jsonl; the training time sums each
    logged window's tokens over its tokens/s, so evaluations and start-up are left out."""
    logged = [r for r in rows if r.get("tokens_per_s")]
    if not logged:
        return 0.0, 0.0, 0.0, 0.0
    seconds, before = 0.0, 0
    for r in logged:
        seconds += (r["tokens"] - before) / r["tokens_per_s"]
        before = r["tokens"]
    last = logged[-1]
    return float(last["step"]), float(last["tokens"]), float(last.get("flops", 0.0)), seconds


def param_counts(cells: list[Cell], shards: str) -> dict[str, tuple[int, int] | None]:
    """Each row's parameters (all, and without the lookup-only embeddings) as its runs build the model: the
    pretraining config of a pretrained row (its objective's tokens added), the architecture's model for a
    ``none`` row; built on the meta device, so nothing is allocated. None when the shards' tokenizer is missing."""
    import torch

    from lmlab.model import build_model
    from lmlab.objectives import objective_tokenizer
    from lmlab.tokenizer import Tokenizer
    from lmlab.train.trainer import prepare_config

    path = Path(shards) / "tokenizer.json"
    out: dict[str, tuple[int, int] | None] = {}
    for cell in cells:
        if cell.row.name in out or cell.kind == "evaluate" or cell.na:
            continue
        if not path.is_file():
            out[cell.row.name] = None
            continue
        cfg = cell.config()
        tokenizer = Tokenizer.load(path)
        if cell.kind == "pretrain":
            tokenizer = objective_tokenizer(cfg, tokenizer)
        with torch.device("meta"):
            model = build_model(prepare_config(cfg, tokenizer).model)
        out[cell.row.name] = (model.num_params(non_embedding=False), model.num_params())
    return out


def _commit(start: dict[str, Any]) -> str:
    """The lmlab commit a run's start record (the first line of its ``metrics.jsonl``) names, or ``unknown``."""
    if "lmlab_commit" not in start:
        return "unknown"
    return start["lmlab_commit"] + (" with uncommitted changes" if start.get("lmlab_dirty") else "")


def provenance(cfg: CompareConfig, ran_from: Counter[str]) -> dict[str, str]:
    """What was run and where: the config file, the lmlab commits the runs started from (``ran_from``: how many
    runs each) and the one writing the report, the machine, torch."""
    import torch

    from lmlab.train.flops import cpu_name

    why = {"unknown": ": not recorded, by an lmlab from before runs recorded it or not run from a git checkout"}
    runs = [f"{commit} ({n} {'run' if n == 1 else 'runs'}{why.get(commit, '')})" for commit, n in
            ran_from.most_common()]
    here = source_commit()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"config": cfg.source, "runs started from lmlab commit": ", ".join(runs) or "none run yet",
            "report written at lmlab commit": _commit(here) if here else "unknown (not a git checkout)",
            "CPU": f"{cpu_name()}, {cores} cores usable", "torch": torch.__version__,
            "threads": str(torch.get_num_threads()), "Python": platform.python_version(),
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def collect(cfg: CompareConfig, out: str | Path, cells: list[Cell]) -> ReportData:
    """Read every cell's results under ``out`` (what is not done yet is listed as missing)."""
    out = Path(out)
    rows = [r.name for r in cfg.all_rows]
    columns = [(t.name, m) for t in cfg.tasks for m in t.metrics]
    values: dict[str, dict[tuple[str, str], list[float]]] = {r: {c: [] for c in columns} for r in rows}
    at_values: dict[str, dict[float, dict[tuple[str, str], list[float]]]] = {
        r.name: {f: {c: [] for c in columns} for f in cfg.eval_at} for r in cfg.rows} if cfg.eval_at else {}
    na: dict[tuple[str, str], str] = {}
    missing: list[str] = []
    timings = json.loads((out / TIMINGS).read_text(encoding="utf-8")) if (out / TIMINGS).is_file() else {}
    per_row: dict[str, list[tuple[float, float, float, float, float | None]]] = {r.name: [] for r in cfg.rows}
    curves: dict[str, dict[int, list[dict[str, Any]]]] = {r.name: {} for r in cfg.rows}
    ran_from: Counter[str] = Counter()  # the lmlab commit of each pretraining and fine-tuning run done
    pairs: list[float] = []  # the wall seconds of each fine-tuning run and its evaluation
    for cell in cells:
        status = cell_status(cell)
        if status == "n/a":
            assert cell.task is not None
            na[(cell.row.name, cell.task.name)] = cell.na
            continue
        if status != "done":
            missing.append(cell.id)
            continue
        if cell.kind != "evaluate":
            records = read_metrics(cell.out_dir / "metrics.jsonl")
            ran_from[_commit(records[0] if records else {})] += 1
        if cell.kind == "pretrain":
            curves[cell.row.name][cell.seed] = records
            per_row[cell.row.name].append((*_cost(records), timings.get(cell.id)))
        elif cell.kind == "evaluate":
            assert cell.task is not None
            scores = json.loads((cell.out_dir / SCORES).read_text(encoding="utf-8"))["scores"]
            into = values[cell.row.name] if cell.at is None else at_values[cell.row.name][cell.at]
            tuned = "finetune" + cell.id.removeprefix("evaluate")  # the run it evaluated
            if cell.at is None and cell.id in timings and tuned in timings:
                pairs.append(timings[tuned] + timings[cell.id])
            for metric in cell.task.metrics:
                if metric in scores:
                    into[(cell.task.name, metric)].append(float(scores[metric]))
    costs: dict[str, PretrainCost | None] = {}
    for row, runs in per_row.items():
        if not runs:
            costs[row] = None
            continue
        steps, tokens, flops, train_s, walls = zip(*runs, strict=True)
        known = [w for w in walls if w is not None]
        costs[row] = PretrainCost(len(runs), statistics.fmean(steps), statistics.fmean(tokens),
                                  statistics.fmean(flops), sum(tokens) / max(sum(train_s), 1e-9),
                                  statistics.fmean(train_s), statistics.fmean(known) if known else None)
    table = {r: {c: aggregate(v) for c, v in cols.items()} for r, cols in values.items()}
    sweep = {r: {f: {c: aggregate(v) for c, v in cols.items()} for f, cols in by.items()} for r, by in
             at_values.items()}
    return ReportData(cfg, rows, columns, table, na, costs, param_counts(cells, cfg.shards), missing,
                      provenance(cfg, ran_from), curves, values, sweep, statistics.fmean(pairs) if pairs else None)


def sweep_points(data: ReportData, row: str, column: tuple[str, str]) -> list[tuple[float, Stat]]:
    """A pretrained row's scores in ``column`` against its pretraining FLOPs: its architecture's ``none`` row at 0,
    the fine-tunings from each ``eval_at`` fraction of the budget, and the whole budget; what is not scored yet
    is left out. The FLOPs are the nominal ones (each model is the first step's at or past them)."""
    cfg = data.cfg
    arch = row.rsplit("/", 1)[1]
    points: list[tuple[float, Stat | None]] = [(0.0, data.table.get(f"none/{arch}", {}).get(column))]
    points += [(f * cfg.max_flops, data.sweep[row][f][column]) for f in cfg.eval_at]
    points.append((cfg.max_flops, data.table[row][column]))
    return [(x, s) for x, s in points if s is not None]


def _count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f}"


def _sweep_tables(data: ReportData) -> list[str]:
    """``eval_at``: per task, its main metric for each pretrained row from 0 (the none row) to the whole budget."""
    cfg = data.cfg
    fractions = [0.0, *cfg.eval_at, 1.0]
    lines = ["## Downstream scores against pretraining FLOPs", "",
             f"Each pretrained row fine-tuned from its model at {', '.join(f'{f:g}' for f in cfg.eval_at)} and 1 "
             f"times the budget ({cfg.max_flops:.3g} FLOPs; each model is that of the first step at or past those "
             "FLOPs), and at 0 its architecture's `none` row: each task's main metric, mean ± standard deviation "
             "over seeds.", ""]
    for task in cfg.tasks:
        column = (task.name, task.metrics[0])
        lines += [f"{task.name} {task.metrics[0]}:", "",
                  "| row | " + " | ".join(f"{f:g} × budget ({f * cfg.max_flops:.3g})" if f else "0 (none row)"
                                           for f in fractions) + " |",
                  "|---|" + "---|" * len(fractions)]
        for row in (r.name for r in cfg.rows):
            if (row, task.name) in data.na:
                continue
            got = dict(sweep_points(data, row, column))
            lines.append(f"| {row} | " + " | ".join(got[f * cfg.max_flops].text() if f * cfg.max_flops in got
                                                    else "—" for f in fractions) + " |")
        lines.append("")
    return lines


def _no_sweep(data: ReportData) -> list[str]:
    """Without ``eval_at``: the section says it was not run, how to run it and about what that costs."""
    cfg = data.cfg
    runs = len(cfg.seeds) * sum((r.name, t.name) not in data.na for r in cfg.rows for t in cfg.tasks)
    cost = (f", about {runs * data.finetune_s / 60:.0f} min a fraction at this comparison's mean of "
            f"{data.finetune_s:.0f} s for a fine-tuning run and its evaluation" if data.finetune_s else "")
    return ["## Downstream scores against pretraining FLOPs", "",
            "Not run: this comparison sets no `eval_at`, so each pretrained row is scored at its whole budget only "
            "(its architecture's `none` row is the score at 0). To score the rows along the way, set `eval_at = "
            "[0.25, 0.5]` (fractions of `max_flops`) in the config: each pretraining run then also keeps its model "
            "at those FLOPs, at no extra training, and every task is also fine-tuned and evaluated from each kept "
            f"model: {runs} more fine-tuning runs per fraction (the rows, tasks and seeds that can run){cost}. A "
            "pretraining run keeps those models only if `eval_at` is set before it runs, so for a comparison that "
            "has run, use a new `--out`: everything runs again.", ""]


def _figure(figures: dict[str, str], key: str, caption: str) -> list[str]:
    return [f"![{caption}]({figures[key]})", ""] if key in figures else []


def render_markdown(data: ReportData, figures: dict[str, str] | None = None) -> str:
    """The report as Markdown: the main table (best of each column in bold, ties with it marked ≈) and its
    figure, the scores against pretraining FLOPs (without ``eval_at``: how to get them), the pretraining costs
    and loss curves, the parameters, what is missing, and what was run where (the commits of the runs too).
    ``figures``: the PNG file of each figure drawn (:func:`lmlab.compare.plots.draw`), by key; those not given are
    left out."""
    cfg = data.cfg
    figures = figures or {}
    lines = ["# Pretraining objectives compared downstream", "",
             f"Each pretraining run stops at the same compute, `train.max_flops` = {cfg.max_flops:.3g} FLOPs; every "
             f"row is then fine-tuned on each task and scored on its test split; {len(cfg.seeds)} seed(s) "
             f"({', '.join(map(str, cfg.seeds))}) for each. `none` rows are fine-tuned from random weights of the "
             "same model with the same tokenizer (no pretraining).", "", "## Downstream scores", "",
             "Mean ± standard deviation over seeds (n = seeds scored). **Bold**: the best of the column; ≈: a tie "
             "with it (the difference is smaller than the larger of the two standard deviations).", ""]
    marks = {c: mark_best({r: data.table[r][c] for r in data.rows}) for c in data.columns}
    lines.append("| row | " + " | ".join(f"{task} {metric}" for task, metric in data.columns) + " |")
    lines.append("|---|" + "---|" * len(data.columns))
    for row in data.rows:
        cells = []
        for col in data.columns:
            stat, (best, ties) = data.table[row][col], marks[col]
            if (row, col[0]) in data.na:
                cells.append("n/a")
            elif stat is None:
                cells.append("—")
            else:
                cells.append(f"**{stat.text()}**" if row == best else f"{stat.text()} ≈" if row in ties
                             else stat.text())
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if data.na:
        lines += ["", "Not applicable:", ""] + [f"- {row} on {task}: {why}" for (row, task), why in
                                                 sorted(data.na.items())]
    lines.append("")
    lines += _figure(figures, "scores", "Each task's main metric per row: mean ± standard deviation over seeds "
                     "(dots: the seeds); hatched: the none rows, no pretraining")
    if cfg.eval_at:
        lines += _sweep_tables(data)
        lines += _figure(figures, "sweep", "Each task's main metric against the pretraining FLOPs its model had: "
                         "0 is the architecture's none row")
    else:
        lines += _no_sweep(data)
    lines += ["## Pretraining runs", "",
              "Means over the seeds run. tokens/s and training time count training steps only (from "
              "`metrics.jsonl`); wall time is the whole run as `lmlab compare` timed it. Each objective's own loss "
              "is in its runs' `metrics.jsonl` and `loss.png`, and in the curves below; losses of different "
              "objectives are not comparable.",
              "", "| row | runs | steps | tokens | FLOPs | tokens/s | training time (s) | wall time (s) |",
              "|---|---|---|---|---|---|---|---|"]
    for row, c in data.costs.items():
        if c is None:
            lines.append(f"| {row} | 0 | — | — | — | — | — | — |")
            continue
        wall = f"{c.wall_s:.1f}" if c.wall_s is not None else "—"
        lines.append(f"| {row} | {c.runs} | {c.steps:.0f} | {_count(c.tokens)} | {c.flops:.3g} | "
                     f"{c.tokens_per_s:,.0f} | {c.train_s:.1f} | {wall} |")
    lines.append("")
    lines += _figure(figures, "cost", "What each objective's pretraining cost on this machine: tokens/s, and "
                     "training and wall time per run (means over seeds)")
    if "curves" in figures:
        lines += ["**Not comparable across objectives**: each curve is an objective's own loss, the loss of the "
                  "prediction it trains (next token, masked tokens, replaced-token detection, spans...), so a "
                  "lower curve is not a better model; compare each row's curve with itself only. Training loss "
                  "against training FLOPs, the mean over seeds and, shaded, the lowest to the highest seed; "
                  "validation loss as points.", ""]
        lines += _figure(figures, "curves", "Each objective's own pretraining loss against FLOPs (not comparable "
                         "across objectives)")
    lines += ["## Parameters", "", "Non-embedding leaves out the lookup-only tables: positions, token types and, "
              "where the head is untied, the input token embedding (a tied one is also the output head, so it "
              "counts).", "", "| row | parameters | non-embedding |", "|---|---|---|"]
    for row, n in data.params.items():
        lines.append(f"| {row} | {_count(n[0])} | {_count(n[1])} |" if n else f"| {row} | ? | ? |")
    lines += ["", "## Missing cells", ""]
    lines += [f"- {c}" for c in data.missing] or ["None: every cell has run."]
    lines += ["", "## What was run", ""] + [f"- {k}: {v}" for k, v in data.provenance.items()]
    lines += ["", "```toml", cfg.text.rstrip() or "# (given as a dict, not a file)", "```", ""]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_report(cfg: CompareConfig, out: str | Path, cells: list[Cell]) -> Path:
    """Collect the results under ``out`` and write the figures (PNG), ``out/report.md`` and ``out/report.html``
    (the same page, self-contained: the figures inside it); returns the path of ``report.md``."""
    from lmlab.compare.html import markdown_to_html
    from lmlab.compare.plots import draw

    out = Path(out)
    data = collect(cfg, out, cells)
    text = render_markdown(data, draw(data, out))
    _write(out / REPORT, text)
    _write(out / HTML, markdown_to_html(text, out, "Pretraining objectives compared downstream"))
    return out / REPORT




def render_plan(cfg: CompareConfig, cells: list[Cell]) -> str:
    """``--plan``: each row's parameters, then every cell as the command that runs it from the start (in order:
    a fine-tuning cell needs its pretraining cell done; a partial run continues with the same command and
    ``--resume RUN_DIR``), its status, and the cells that cannot run, with why."""
    lines = [f"# lmlab compare: {len(cfg.all_rows)} rows, {len(cfg.tasks)} task(s), {len(cfg.seeds)} seed(s), "
             f"pretraining budget {cfg.max_flops:.3g} FLOPs a run", "# parameters (all / non-embedding):"]
    for row, n in param_counts(cells, cfg.shards).items():
        lines.append(f"#   {row}: " + (f"{_count(n[0])} / {_count(n[1])}" if n else
                                       f"? (no tokenizer at {cfg.shards}: prepare the shards first)"))
    for cell in cells:
        status = cell_status(cell)
        if status == "n/a":
            if cell.kind == "finetune":
                lines.append(f"# n/a {cell.id}: {cell.na}")
            continue
        lines.append(f"# {cell.id} [{status}]")
        lines.append(cell.command())
    return "\n".join(lines) + "\n"
