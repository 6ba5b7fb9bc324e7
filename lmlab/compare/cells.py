"""The cells of a comparison, each an ordinary run directory, and running them: skip the finished, resume the
interrupted, start the rest.

Pretraining: ``OUT/pretrain/<objective>-<arch>/seed-<s>``, stopped by ``train.max_flops``. Fine-tuning:
``OUT/finetune/<task>/<row>/seed-<s>`` from the pretraining run of the same row and seed (or, for the ``none``
row, from random weights of the architecture's model with the shards' tokenizer), then evaluated on the test
split (``eval-test/scores.json`` in the run). A combination the task cannot train (a summary from an encoder) is a
cell marked not applicable, with the reason. With ``eval_at``, pretraining also keeps its model at those fractions
of the budget (``train.save_at_flops``), and each is fine-tuned and evaluated in
``OUT/finetune/<task>/<row>@<fraction>/seed-<s>``, after every other cell.
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
# Keys of a run's config that leave what its cell computes as it was: where the run is and how it reports, the
# models it also keeps (eval_at's: missing_init says when one is missing), the machine and how it is used.
_HARMLESS = frozenset({"train.out_dir", "train.progress", "train.log_every", "train.save_every", "train.keep_last",
                       "train.save_at_flops", "train.peak_flops", "train.device", "train.parallel", "train.compile",
                       "train.activation_checkpointing", "train.max_bad_steps"})
# What fine-tuning for classify sets on the model itself: a classifier in place of the token head
_CLASSIFIER = ("model.lm_head", "model.mlm_transform", "model.head_bias", "model.head_rescale", "model.num_labels",
               "model.pooler")
_SET_BY_COMPARE = {"train": ("out_dir", "seed", "max_flops", "save_at_flops"), "data": ("path", "train"),
                   "objective": ("name",),
                   "finetune": ("init", "scratch", "tokenizer")}


@dataclass(frozen=True)
class Cell:
    """One run of the comparison. ``sections`` are the run config's overrides (``{"train": {...}, "preset":
    ...}``) on top of ``config_file`` (a task's fine-tuning config) or the defaults; ``na`` says why a cell cannot
    run (then it never does); ``at``, the fraction of the pretraining budget a fine-tuning cell starts from (None:
    the whole budget, or no pretraining)."""

    kind: Kind
    row: Row
    seed: int
    out_dir: Path
    task: TaskSpec | None = None
    config_file: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    na: str = ""
    at: float | None = None

    @property
    def slug(self) -> str:
        """The row's directory name, with ``@<fraction>`` for a cell from part of the budget: ``clm-decoder@0.25``."""
        return _slug(self.row, self.at)

    @property
    def id(self) -> str:
        """``pretrain/clm-decoder/seed-0``, ``finetune/sections/none-encoder/seed-1``, ``evaluate/...``,
        ``finetune/sections/clm-decoder@0.25/seed-0``."""
        task = f"{self.task.name}/" if self.task is not None else ""
        return f"{self.kind}/{task}{self.slug}/seed-{self.seed}"

    @property
    def init(self) -> str:
        """A fine-tuning cell's ``finetune.init`` ('' for the others)."""
        return self.sections.get("finetune", {}).get("init", "") if self.kind == "finetune" else ""

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


def _slug(row: Row, at: float | None) -> str:
    return row.slug + (f"@{at:g}" if at is not None else "")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # short where exact: 1e+13, 0.002
        return f"{value:g}" if float(f"{value:g}") == value else repr(value)
    if isinstance(value, tuple):  # train.save_at_flops: 2.5e+12,5e+12
        return ",".join(_text(v) for v in value)
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
                raise ConfigError(f"{where}: {section}.{key} is set by compare (out_dir, seed, budget and "
                                  "eval_at's save_at_flops per cell, the shards, the row's objective and init); "
                                  "leave it out")
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
    """Every cell of the comparison, in the order they run: pretraining, then per task fine-tuning and evaluation,
    then (with ``eval_at``) fine-tuning and evaluation from part of the budget.
    Each run configuration is built and checked here, so a bad key fails before anything runs.

    Raises:
        ConfigError: a key of the overrides that a run config refuses, named with the cell.
    """
    out = Path(out)
    shared = _own(cfg.pretrain, f"{cfg.source}: [pretrain]")
    cells: list[Cell] = []
    keep = {"save_at_flops": tuple(f * cfg.max_flops for f in cfg.eval_at)} if cfg.eval_at else {}
    for row in cfg.rows:
        extra = _own(cfg.objective_overrides.get(row.name, {}), f"{cfg.source}: objective_overrides.{row.name}")
        for seed in cfg.seeds:
            run = out / "pretrain" / row.slug / f"seed-{seed}"
            sections = {**_model(cfg, row.arch, extra), **_merge(
                {k: v for k, v in shared.items() if k != "model"},
                {k: v for k, v in extra.items() if k != "model"},
                {"objective": {"name": row.objective}, "data": {"path": cfg.shards},
                 "train": {"max_flops": cfg.max_flops, **keep, "seed": seed, "out_dir": str(run)}})}
            sections["model"] = {**shared.get("model", {}), **sections["model"]}
            cells.append(Cell("pretrain", row, seed, run, sections=sections))
    tokenizer = str(Path(cfg.shards) / "tokenizer.json")
    tasks = [(task, _own(task.overrides, f"{cfg.source}: task.{task.name}.overrides")) for task in cfg.tasks]
    kinds = {task.name: load_config(task.config, own).objective.name for task, own in tasks}

    def finetune(task: TaskSpec, own: Overrides, row: Row, seed: int, at: float | None = None) -> list[Cell]:
        """A fine-tuning cell and its evaluation: from the row's pretraining run (its model at ``at`` of the
        budget), or for a ``none`` row from the architecture's model at random with the shards' tokenizer."""
        run = out / "finetune" / task.name / _slug(row, at) / f"seed-{seed}"
        pretrained = out / "pretrain" / row.slug / f"seed-{seed}"
        if row.objective == "none":
            start = {**_model(cfg, row.arch), "finetune": {"init": "none", "tokenizer": tokenizer}}
        else:
            from lmlab.train.checkpoint import flops_dir

            init = pretrained / flops_dir(at * cfg.max_flops) if at is not None else pretrained
            start = {"finetune": {"init": str(init)}}
        sections = {**start, **_merge({k: v for k, v in start.items() if k != "preset"}, own, {
            "data": {"train": task.data}, "train": {"seed": seed, "out_dir": str(run)}})}
        na = _na(kinds[task.name], row, cfg)
        return [Cell("finetune", row, seed, run, task, task.config, sections, na, at),
                Cell("evaluate", row, seed, run, task, na=na, at=at)]

    for task, own in tasks:
        for row in cfg.all_rows:
            for seed in cfg.seeds:
                cells += finetune(task, own, row, seed)
    for task, own in tasks:
        for row in cfg.rows:
            for at in cfg.eval_at:
                for seed in cfg.seeds:
                    cells += finetune(task, own, row, seed, at)
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


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` as ``{"train.lr": 1e-3}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def changes(cell: Cell, saved: dict[str, Any]) -> list[str]:
    """What differs between the config ``saved`` in a cell's run (its checkpoint's) and the one the cell is built
    with now, as ``"train.max_flops: 1e+13 -> 2e+13"``; empty when the run is the cell's. Left out: the harmless
    keys, and those a run works out itself: ``train.max_steps`` under a FLOP budget (the steps it affords),
    ``model.vocab_size`` when 0 (the tokenizer's), a fine-tuning run's model (its init's, or for ``none`` the
    architecture's with a classifier for classify). A key the saved config lacks (added to lmlab since) is taken
    at its default. ``finetune.init`` is compared within the comparison's directory, which may have moved.

    Raises:
        ConfigError: the saved config cannot be read by this lmlab.
    """
    from lmlab.config import config_from_dict

    try:
        old = _flat(config_from_dict(saved).to_dict())
    except ConfigError as e:
        raise ConfigError(f"{cell.out_dir}: its saved configuration cannot be read: {e}") from None
    new = _flat(cell.config().to_dict())
    skip = set(_HARMLESS)
    if new["train.max_flops"]:
        skip.add("train.max_steps")
    if not new["model.vocab_size"]:
        skip.add("model.vocab_size")
    if cell.kind == "finetune":
        if new["finetune.init"] != "none":
            skip |= {k for k in new if k.startswith("model.")} | {"preset"}
            for flat in (old, new):  # OUT/pretrain/<row>/seed-<s> seen from OUT/finetune/<task>/<row>/seed-<s>
                out, init = Path(flat["train.out_dir"]).parents[3], Path(flat["finetune.init"])
                flat["finetune.init"] = str(init.relative_to(out)) if init.is_relative_to(out) else str(init)
        elif new["objective.name"] == "classify":
            skip |= set(_CLASSIFIER)
    return [f"{k}: {_text(old.get(k))} -> {_text(new.get(k))}" for k in sorted(old.keys() | new.keys())
            if k not in skip and old.get(k) != new.get(k)]


def check_cells(cells: list[Cell]) -> None:
    """Refuse to take a run for its cell when the cell's configuration has changed since it ran (a new budget, a
    task's overrides...): its results would be reported as the new configuration's. Reads each run's newest
    checkpoint; changes nothing.

    Raises:
        ConfigError: naming the first such run's directory and what changed (old -> new), and how many more.
    """
    from lmlab.train import checkpoint as ckpt

    changed: list[tuple[Cell, list[str]]] = []
    for cell in cells:
        if cell.kind == "evaluate" or cell.na or not (found := ckpt.list_checkpoints(cell.out_dir)):
            continue
        if diff := changes(cell, ckpt.read_json(found[-1] / ckpt.STATE).get("config", {})):
            changed.append((cell, diff))
    if not changed:
        return
    cell, diff = changed[0]
    more = f" ({len(changed) - 1} more cells differ too)" if len(changed) > 1 else ""
    tuned = cell.out_dir.parents[2] / "finetune" / "*"  # OUT/finetune/*: every task's runs from this one
    again = (f"it and the fine-tuning runs from it ({tuned / cell.slug / f'seed-{cell.seed}'} and "
             f"{tuned / f'{cell.slug}@*' / f'seed-{cell.seed}'})" if cell.kind == "pretrain" else "that run")
    raise ConfigError(f"{cell.out_dir} ({cell.id}) ran with another configuration than the cell has now: "
                      f"{'; '.join(diff)}{more}. Its results would be reported as the new configuration's: give a "
                      f"new --out for the new configuration, or delete {again} to run it again. Nothing was run.")


def missing_init(cell: Cell) -> str:
    """Why a fine-tuning cell from part of the budget (``eval_at``) cannot start yet, or '': its pretraining run
    has not kept the model it starts from (``flops-<count>/``)."""
    if cell.at is None or cell.kind != "finetune" or cell.na or Path(cell.init).is_dir():
        return ""
    pretrained = Path(cell.init).parent
    if run_status(pretrained) != "done":
        return f"its pretraining run {pretrained} is not done"
    return (f"its pretraining run {pretrained} is done but did not keep {Path(cell.init).name} (it ran before "
            f"eval_at was set, or ended short of those FLOPs): delete that run to pretrain it again")


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
    """Run every cell of the comparison that is not done (resuming the partial ones), then write the report;
    first, refuse runs made with another configuration than their cells have now (:func:`check_cells`).
    Returns what happened to each cell by id: ``ran``, ``resumed``, ``skipped`` (done before), ``n/a``, or
    ``blocked``: a cell from part of the budget whose pretraining run did not keep that model (logged with why;
    the report lists it as missing), and its evaluation."""
    from lmlab.compare.report import write_report

    out = Path(out)
    cells = plan(cfg, out)
    check_cells(cells)
    out.mkdir(parents=True, exist_ok=True)
    actions: dict[str, str] = {}
    blocked: set[Path] = set()
    for i, cell in enumerate(cells, 1):
        status = cell_status(cell)
        if status in ("done", "n/a"):
            actions[cell.id] = "skipped" if status == "done" else "n/a"
            continue
        if cell.out_dir in blocked or (status == "new" and (why := missing_init(cell))):
            actions[cell.id] = "blocked"
            if cell.out_dir not in blocked:
                log(f"[{i}/{len(cells)}] cannot run {cell.id}: {why}")
            blocked.add(cell.out_dir)
            continue
        actions[cell.id] = "resumed" if status == "partial" else "ran"
        log(f"[{i}/{len(cells)}] {'resume' if status == 'partial' else 'run'} {cell.id}")
        t0 = time.perf_counter()
        try:
            run_cell(cell, status)
        finally:
            _add_time(out, cell, time.perf_counter() - t0)
    report = write_report(cfg, out, cells)
    log(f"wrote {report}, {report.with_suffix('.html').name} and its figures")
    return actions
