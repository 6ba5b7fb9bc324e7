"""The cells of a comparison, each an ordinary run directory, and running them: skip the finished, resume the
interrupted, start the rest.

Pretraining: ``OUT/pretrain/<objective>-<arch>/seed-<s>``, stopped by ``train.max_flops``. Fine-tuning:
``OUT/finetune/<task>/<row>/seed-<s>`` from the pretraining run of the same row and seed (or, for the ``none``
row, from random weights of the architecture's model with the shards' tokenizer), then evaluated on the test
split (``eval-test/scores.json`` in the run). A combination the task cannot train (a summary from an encoder) is a
cell marked not applicable, with the reason.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmlab.compare.config import CompareConfig, Overrides, Row, TaskSpec
from lmlab.config import Config, load_config
from lmlab.errors import ConfigError

Kind = Literal["pretrain", "finetune", "evaluate"]
Status = Literal["new", "partial", "done", "n/a"]
TIMINGS = "timings.json"  # OUT/timings.json: each cell's wall seconds, summed over the calls that ran it
SCORES = Path("eval-test") / "scores.json"  # a fine-tuning run's test scores, as `lmlab evaluate` writes them
_SET_BY_COMPARE = {"train": ("out_dir", "seed", "max_flops"), "data": ("path", "train"), "objective": ("name",),
                   "finetune": ("init", "scratch", "tokenizer")}


@dataclass(frozen=True)
class Cell:
    """One run of the comparison. ``sections`` are the run config's overrides (``{"train": {...}, "preset":
    ...}``) on top of ``config_file`` (a task's fine-tuning config) or the defaults; ``na`` says why a cell cannot
    run (then it never does)."""

    kind: Kind
    row: Row
    seed: int
    out_dir: Path
    task: TaskSpec | None = None
    config_file: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    na: str = ""

    @property
    def id(self) -> str:
        """``pretrain/clm-decoder/seed-0``, ``finetune/sections/none-encoder/seed-1``, ``evaluate/...``."""
        task = f"{self.task.name}/" if self.task is not None else ""
        return f"{self.kind}/{task}{self.row.slug}/seed-{self.seed}"

    def config(self) -> Config:
        """The run's configuration, checked (raises ConfigError naming the key)."""
        return load_config(self.config_file, self.sections)

    def command(self) -> str:
        """The ``lmlab`` command line that runs this cell from the start."""
        if self.kind == "evaluate":
            assert self.task is not None
            beams = f" --num-beams {self.task.num_beams}" if self.task.num_beams > 1 else ""
            return f"lmlab evaluate {shlex.quote(str(self.out_dir))} --data {shlex.quote(self.task.data)} " \
                   f"--split test{beams}"
        args = ["lmlab", self.kind] + (["--config", self.config_file] if self.config_file else [])
        for section, values in self.sections.items():
            if section == "preset":
                args += ["--preset", values]
                continue
            for key, value in values.items():
                args.append(f"--{section}.{key}={_text(value)}")
        return shlex.join(args)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # short where exact: 1e+13, 0.002
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    return str(value)


def _merge(*layers: Overrides) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


def _own(layer: Overrides, where: str) -> Overrides:
    """Refuse the keys compare sets itself in a user's overrides."""
    for section, keys in _SET_BY_COMPARE.items():
        for key in keys:
            if key in layer.get(section, {}):
                raise ConfigError(f"{where}: {section}.{key} is set by compare (out_dir, seed and budget per cell, "
                                  "the shards, the row's objective and init); leave it out")
    return layer


def _model(cfg: CompareConfig, arch: str, extra: Overrides | None = None) -> dict[str, Any]:
    spec = cfg.archs[arch]
    return {"preset": spec.preset, "model": {**spec.model, **(extra or {}).get("model", {})}}


def _na(kind: str, row: Row, cfg: CompareConfig) -> str:
    """Why ``row`` cannot be fine-tuned for the task ``kind``, or ''."""
    from lmlab.objectives import TASKS

    if row.arch not in TASKS[kind].archs:
        return f"{kind} cannot train an {row.arch} in lmlab (it trains: {', '.join(TASKS[kind].archs)})"
    model = {**cfg.archs[row.arch].model, **cfg.objective_overrides.get(row.name, {}).get("model", {})}
    if kind == "seq2seq" and row.objective != "none" and model.get("lm_head") is False:
        return f"{row.name} is pretrained without a token head (model.lm_head = false), so it cannot generate"
    return ""


def plan(cfg: CompareConfig, out: str | Path) -> list[Cell]:
    """Every cell of the comparison, in the order they run: pretraining, then per task fine-tuning and evaluation.
    Each run configuration is built and checked here, so a bad key fails before anything runs.

    Raises:
        ConfigError: a key of the overrides that a run config refuses, named with the cell.
    """
    out = Path(out)
    shared = _own(cfg.pretrain, f"{cfg.source}: [pretrain]")
    cells: list[Cell] = []
    for row in cfg.rows:
        extra = _own(cfg.objective_overrides.get(row.name, {}), f"{cfg.source}: objective_overrides.{row.name}")
        for seed in cfg.seeds:
            run = out / "pretrain" / row.slug / f"seed-{seed}"
            sections = {**_model(cfg, row.arch, extra), **_merge(
                {k: v for k, v in shared.items() if k != "model"},
                {k: v for k, v in extra.items() if k != "model"},
                {"objective": {"name": row.objective}, "data": {"path": cfg.shards},
                 "train": {"max_flops": cfg.max_flops, "seed": seed, "out_dir": str(run)}})}
            sections["model"] = {**shared.get("model", {}), **sections["model"]}
            cells.append(Cell("pretrain", row, seed, run, sections=sections))
    tokenizer = str(Path(cfg.shards) / "tokenizer.json")
    for task in cfg.tasks:
        own = _own(task.overrides, f"{cfg.source}: task.{task.name}.overrides")
        kind = load_config(task.config, own).objective.name
        for row in cfg.all_rows:
            na = _na(kind, row, cfg)
            for seed in cfg.seeds:
                run = out / "finetune" / task.name / row.slug / f"seed-{seed}"
                if row.objective == "none":  # the architecture's model at random, the shards' tokenizer
                    start = {**_model(cfg, row.arch), "finetune": {"init": "none", "tokenizer": tokenizer}}
                else:
                    start = {"finetune": {"init": str(out / "pretrain" / row.slug / f"seed-{seed}")}}
                sections = {**start, **_merge({k: v for k, v in start.items() if k != "preset"}, own, {
                    "data": {"train": task.data}, "train": {"seed": seed, "out_dir": str(run)}})}
                cells.append(Cell("finetune", row, seed, run, task, task.config, sections, na))
                cells.append(Cell("evaluate", row, seed, run, task, na=na))
    for cell in cells:
        if not cell.na and cell.kind != "evaluate":
            try:
                cell.config()
            except ConfigError as e:
                raise ConfigError(f"{cfg.source}: the run {cell.id}: {e}") from None
    return cells


def run_status(run_dir: str | Path) -> Status:
    """Whether a pretraining or fine-tuning run directory is ``new`` (no checkpoint), ``partial`` (stopped before
    its end: resume it) or ``done``: its newest checkpoint is at ``train.max_steps`` (the steps ``train.max_flops``
    affords, for a budgeted run), has spent the FLOP budget, or was stopped by ``finetune.patience``."""
    from lmlab.train import checkpoint as ckpt

    found = ckpt.list_checkpoints(run_dir)
    if not found:
        return "new"
    state = ckpt.read_json(found[-1] / ckpt.STATE)
    config = state.get("config", {})
    train = config.get("train", {})
    if state.get("step", 0) >= train.get("max_steps", float("inf")):
        return "done"
    if train.get("max_flops") and state.get("flops_seen", 0.0) >= train["max_flops"]:
        return "done"
    patience = config.get("finetune", {}).get("patience", 0)
    if patience and state.get("best", {}).get("stale", 0) >= patience:
        return "done"
    return "partial"


def cell_status(cell: Cell) -> Status:
    if cell.na:
        return "n/a"
    if cell.kind == "evaluate":
        return "done" if (cell.out_dir / SCORES).is_file() else "new"
    return run_status(cell.out_dir)


def _add_time(out: Path, cell: Cell, seconds: float) -> None:
    path = out / TIMINGS
    times = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    times[cell.id] = times.get(cell.id, 0.0) + seconds
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(times, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_cell(cell: Cell, status: Status) -> None:
    """Run one cell: a new run from the start (a directory without checkpoints is taken over), a partial one
    resumed. Raises KeyboardInterrupt when the run was interrupted (Ctrl-C, SIGTERM) and saved."""
    if cell.kind == "evaluate":
        from lmlab.eval.task import evaluate

        assert cell.task is not None
        evaluate(cell.out_dir, cell.task.data, "test", num_beams=cell.task.num_beams)
        return
    from lmlab.train import pretrain
    from lmlab.train.finetune import finetune

    train = pretrain if cell.kind == "pretrain" else finetune
    cfg = cell.config()
    if status == "partial":
        result = train(cfg, resume=cell.out_dir)
    else:  # nothing to keep: what a killed start left (metrics.jsonl, examples/) is replaced
        result = train(cfg, overwrite=cell.out_dir.exists())
    if result.interrupted:
        raise KeyboardInterrupt


def run_compare(cfg: CompareConfig, out: str | Path, log: Callable[[str], None] = print) -> dict[str, str]:
    """Run every cell of the comparison that is not done (resuming the partial ones), then write the report.
    Returns what happened to each cell by id: ``ran``, ``resumed``, ``skipped`` (done before) or ``n/a``."""
    from lmlab.compare.report import write_report

    out = Path(out)
    cells = plan(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    actions: dict[str, str] = {}
    for i, cell in enumerate(cells, 1):
        status = cell_status(cell)
        if status in ("done", "n/a"):
            actions[cell.id] = "skipped" if status == "done" else "n/a"
            continue
        actions[cell.id] = "resumed" if status == "partial" else "ran"
        log(f"[{i}/{len(cells)}] {'resume' if status == 'partial' else 'run'} {cell.id}")
        t0 = time.perf_counter()
        try:
            run_cell(cell, status)
        finally:
            _add_time(out, cell, time.perf_counter() - t0)
    report = write_report(cfg, out, cells)
    log(f"wrote {report}")
    return actions
