"""The configuration of ``lmlab compare``: which objectives, models, budget, tasks and seeds.

A TOML file, read with ``tomllib`` and checked here, before anything runs: an unknown key, a missing one or a
value of the wrong kind is a :class:`~lmlab.errors.ConfigError` naming it. Every run the comparison makes is
then built as an ordinary run :class:`~lmlab.config.Config` (see :mod:`lmlab.compare.cells`), so the keys of
each section (``train.*``, ``model.*``...) are checked by :mod:`lmlab.config` as for ``lmlab pretrain``.

::

    shards = "data/compare/shards"          # from `lmlab prepare`; its tokenizer is every run's
    objectives = ["clm/decoder", "mlm/encoder", "span/encoder-decoder"]
    seeds = [0, 1, 2]
    max_flops = 2e13                        # train.max_flops of each pretraining run
    none_row = true                         # fine-tune each architecture from random weights too
    eval_at = [0.25, 0.5]                   # optional: also fine-tune from these fractions of max_flops

    [pretrain]                              # every pretraining run: [section] tables of a run config
    train = { batch_size = 16, lr = 1e-3 }
    data = { seq_len = 128 }

    [arch.decoder]                          # one model per architecture: a preset and [model] overrides
    preset = "gpt2-small"
    model = { d_model = 256, n_layers = 4 }

    [objective_overrides."electra/encoder"] # more overrides for one objective's pretraining runs
    model = { lm_head = false, mlm_transform = false }

    [task.sections]                         # a downstream task: a fine-tuning config, its data, overrides
    config = "configs/classify-sections.toml"  # found in the working directory, beside this file or in its parent
    data = "data/debian-sections"
    metrics = ["accuracy", "macro_f1"]      # the main metric, then the secondary one
    overrides = { train = { max_steps = 300 } }

``eval_at`` (absent or empty by default: nothing more runs) lists fractions of ``max_flops``, each in (0, 1). Each
pretraining run then also keeps its model at the first step whose FLOPs reach each fraction of the budget
(``train.save_at_flops``: ``flops-<count>/`` in the run), and every task is also fine-tuned from those models, in
cells of their own (``OUT/finetune/<task>/<row>@<fraction>/seed-<s>``), for the report's downstream metric
against pretraining FLOPs: the ``none`` row at 0, these fractions, and the full budget.
"""

from __future__ import annotations

import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmlab.config import METRICS, Arch
from lmlab.errors import ConfigError

ARCHS: tuple[str, ...] = typing.get_args(Arch)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a task's name: a directory name
Overrides = dict[str, dict[str, Any]]  # {"train": {"lr": 1e-3}, ...}: sections of a run config


@dataclass(frozen=True)
class ArchSpec:
    """The model every objective on one architecture trains: a preset and ``[model]`` overrides."""

    arch: str
    preset: str
    model: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """A row of the comparison: an objective on an architecture, or ``none`` (no pretraining) on one."""

    objective: str  # an objective's name, or "none"
    arch: str

    @property
    def name(self) -> str:  # "clm/decoder"
        return f"{self.objective}/{self.arch}"

    @property
    def slug(self) -> str:  # "clm-decoder": the row's directory name
        return f"{self.objective}-{self.arch}"


@dataclass(frozen=True)
class TaskSpec:
    """A downstream task: a fine-tuning config file, a directory of train/valid/test examples, overrides of the
    fine-tuning runs, the metrics reported (main first) and the beams of the test decoding."""

    name: str
    config: str
    data: str
    metrics: tuple[str, ...]
    overrides: Overrides = field(default_factory=dict)
    num_beams: int = 1


@dataclass(frozen=True)
class CompareConfig:
    """A checked comparison config; ``source`` is the file it was read from (for messages and the report)."""

    shards: str
    rows: tuple[Row, ...]  # the pretrained rows, in the order of ``objectives``
    archs: dict[str, ArchSpec]
    max_flops: float
    seeds: tuple[int, ...]
    tasks: tuple[TaskSpec, ...]
    pretrain: Overrides = field(default_factory=dict)
    objective_overrides: dict[str, Overrides] = field(default_factory=dict)
    none_row: bool = True
    eval_at: tuple[float, ...] = ()  # fractions of max_flops whose models are fine-tuned too, ascending
    source: str = ""
    text: str = ""  # the file as written

    @property
    def all_rows(self) -> tuple[Row, ...]:
        """The pretrained rows, then a ``none`` row per architecture they use (when ``none_row``)."""
        nones = tuple(Row("none", a) for a in dict.fromkeys(r.arch for r in self.rows)) if self.none_row else ()
        return self.rows + nones


_TOP = ("shards", "objectives", "seeds", "max_flops", "none_row", "eval_at", "pretrain", "arch", "objective_overrides",
        "task")
_TASK_KEYS = ("config", "data", "metrics", "overrides", "num_beams")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"must be a table, got {value!r}")
    return value


def _overrides(value: Any, where: str) -> Overrides:
    """``{section: {key: value}}``: the sections of a run config (the keys are checked when runs are built)."""
    table = _table(value, where)
    for section, values in table.items():
        _table(values, f"{where}.{section}")
        for k, v in values.items():
            if isinstance(v, (dict, list)):
                raise _fail(f"{where}.{section}.{k}", f"must be a single value, got {v!r}")
    return {s: dict(v) for s, v in table.items()}


def _string(table: dict[str, Any], key: str, where: str) -> str:
    if key not in table:
        raise _fail(where, f"{key} is missing")
    value = table[key]
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}.{key}", f"must be a non-empty string, got {value!r}")
    return value


def _unknown(table: dict[str, Any], valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")


def _row(text: Any, where: str) -> Row:
    from lmlab.objectives import OBJECTIVES, TASKS

    if not isinstance(text, str) or text.count("/") != 1:
        raise _fail(where, f"must be \"objective/architecture\" (e.g. \"clm/decoder\"), got {text!r}")
    name, arch = text.split("/")
    pretraining = sorted(set(OBJECTIVES) - set(TASKS))
    if name not in pretraining:
        raise _fail(where, f"unknown pretraining objective {name!r} in {text!r}; valid: {', '.join(pretraining)}")
    if arch not in ARCHS:
        raise _fail(where, f"unknown architecture {arch!r} in {text!r}; valid: {', '.join(ARCHS)}")
    if arch not in OBJECTIVES[name].archs:
        raise _fail(where, f"{name} cannot train an {arch} (it trains: {', '.join(OBJECTIVES[name].archs)})")
    return Row(name, arch)


def _config_path(config: str, root: Path | None, where: str) -> Path:
    """A task's config file: as given (absolute, or relative to the working directory), else relative to the
    compare config's directory ``root``, else to that directory's parent, so a shipped config that names another
    from the repository's root (``configs/classify-sections.toml``) is found from any working directory.

    Raises:
        ConfigError: found nowhere, naming each place looked.
    """
    path = Path(config)
    tried = [path] if path.is_absolute() or root is None else [path, root / path, root.parent / path]
    for p in tried:
        if p.is_file():
            return p
    looked = dict.fromkeys(str(p.absolute()) for p in tried)
    raise _fail(f"{where}.config", f"{config} does not exist; looked for {', '.join(looked)}")


def _task(name: str, value: Any, root: Path | None) -> TaskSpec:
    from lmlab.config import load_config
    from lmlab.objectives import TASKS

    where = f"task.{name}"
    if not _NAME.match(name):
        raise _fail(where, "a task's name is a directory name: letters, digits, '-', '_' and '.'")
    table = _table(value, where)
    _unknown(table, _TASK_KEYS, where)
    config = _string(table, "config", where)
    data = _string(table, "data", where)
    path = _config_path(config, root, where)
    overrides = _overrides(table.get("overrides", {}), f"{where}.overrides")
    try:
        kind = load_config(path, overrides).objective.name
    except ConfigError as e:
        raise _fail(where, str(e)) from None
    if kind not in TASKS:
        raise _fail(f"{where}.config", f"{config} trains {kind!r}, not a fine-tuning task ({', '.join(TASKS)})")
    default = ("accuracy", "macro_f1") if kind == "classify" else ("rouge1", "rougeL")
    metrics = table.get("metrics", list(default))
    if not isinstance(metrics, list) or not metrics or any(m not in METRICS or m == "loss" for m in metrics):
        raise _fail(f"{where}.metrics", f"must be a non-empty list of {', '.join(m for m in METRICS if m != 'loss')}"
                    f", got {metrics!r}")
    beams = table.get("num_beams", 1)
    if not isinstance(beams, int) or isinstance(beams, bool) or beams < 1:
        raise _fail(f"{where}.num_beams", f"must be an integer >= 1, got {beams!r}")
    return TaskSpec(name, str(path), data, tuple(metrics), overrides, beams)


def parse_compare_config(raw: dict[str, Any], source: str = "<dict>", root: Path | None = None) -> CompareConfig:
    """Check a parsed comparison config; ``root``, the directory of the file it was read from, is where (and in
    its parent) a task's config is looked for when the working directory has no such file.

    Raises:
        ConfigError: naming the key that is missing, unknown or wrong.
    """
    _unknown(raw, _TOP, source)
    shards = _string(raw, "shards", source)
    objectives = raw.get("objectives")
    if not isinstance(objectives, list) or not objectives:
        raise _fail(f"{source}: objectives", f"must be a non-empty list of \"objective/architecture\", got "
                    f"{objectives!r}")
    rows = tuple(_row(o, f"{source}: objectives[{i}]") for i, o in enumerate(objectives))
    if len(set(rows)) != len(rows):
        raise _fail(f"{source}: objectives", "names a row twice")
    seeds = raw.get("seeds")
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds)):
        raise _fail(f"{source}: seeds", f"must be a non-empty list of distinct integers >= 0, got {seeds!r}")
    budget = raw.get("max_flops")
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0:
        raise _fail(f"{source}: max_flops", f"must be a positive FLOP count (train.max_flops of each pretraining "
                    f"run), got {budget!r}")
    none_row = raw.get("none_row", True)
    if not isinstance(none_row, bool):
        raise _fail(f"{source}: none_row", f"must be true or false, got {none_row!r}")
    eval_at = raw.get("eval_at", [])
    if (not isinstance(eval_at, list) or any(not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f < 1
                                              for f in eval_at)
            or len({f"{f:g}" for f in eval_at}) != len(eval_at)):
        raise _fail(f"{source}: eval_at", f"must be a list of distinct fractions of max_flops, each above 0 and "
                    f"below 1 (the full budget is always scored), got {eval_at!r}")
    archs: dict[str, ArchSpec] = {}
    arch_tables = _table(raw.get("arch", {}), f"{source}: arch")
    for arch, value in arch_tables.items():
        where = f"{source}: arch.{arch}"
        if arch not in ARCHS:
            raise _fail(where, f"unknown architecture; valid: {', '.join(ARCHS)}")
        table = _table(value, where)
        _unknown(table, ("preset", "model"), where)
        model = _table(table.get("model", {}), f"{where}.model")
        archs[arch] = ArchSpec(arch, _string(table, "preset", where), dict(model))
    for row in rows:
        if row.arch not in archs:
            raise _fail(f"{source}: arch", f"{row.name} needs a model: add [arch.{row.arch}] with a preset")
    extra = _table(raw.get("objective_overrides", {}), f"{source}: objective_overrides")
    for key in extra:
        if key not in {r.name for r in rows}:
            raise _fail(f"{source}: objective_overrides.{key}", "names no row of objectives")
    tasks = _table(raw.get("task", {}), f"{source}: task")
    if not tasks:
        raise _fail(source, "no [task.NAME]: name at least one downstream task")
    return CompareConfig(
        shards=shards, rows=rows, archs=archs, max_flops=float(budget), seeds=tuple(seeds),
        tasks=tuple(_task(n, v, root) for n, v in tasks.items()),
        pretrain=_overrides(raw.get("pretrain", {}), f"{source}: pretrain"),
        objective_overrides={k: _overrides(v, f"{source}: objective_overrides.{k}") for k, v in extra.items()},
        none_row=none_row, eval_at=tuple(sorted(float(f) for f in eval_at)), source=source)


def load_compare_config(path: str | Path) -> CompareConfig:
    """Read and check a comparison config file (TOML).

    Raises:
        ConfigError: a missing or unreadable file, or a key that is missing, unknown or wrong (named).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"compare config {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not a valid TOML file: {e}") from None
    cfg = parse_compare_config(raw, str(p), p.parent)
    return CompareConfig(**{**cfg.__dict__, "text": text})
