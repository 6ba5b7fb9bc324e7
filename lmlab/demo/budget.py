"""The demo's time budget: each stage is sized in steps from what a few of its steps take on this machine.

A stage (one pretraining run, or a pretrained + from-scratch pair of fine-tuning runs) gets its share of what is
left of the budget when it starts, so a stage that ran long or short is made up for by the next ones. Before it
runs, a probe trains a few steps of the stage's own configuration (one evaluation included) and the stage's step
count is chosen from the measured costs; the chosen counts are printed, and passed back with ``--steps`` they
reproduce the run exactly, without probes.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from lmlab.errors import ConfigError
from lmlab.train.log import read_metrics

PROBE_STEPS = 4  # the first is a warm-up; the others are timed
EVALS = 4  # evaluations in a stage's run, the last at its end


@dataclass(frozen=True)
class Cost:
    """What a run of a stage costs on this machine, in seconds: once (building the model, reading data,
    saving), per training step, and per evaluation."""

    setup_s: float
    step_s: float
    eval_s: float

    def steps_within(self, seconds: float, runs: int = 1, evals: int = EVALS) -> int:
        """The most steps each of ``runs`` runs can take, each with ``evals`` evaluations, within ``seconds``
        (at least 1)."""
        per_run = seconds / runs - self.setup_s - evals * self.eval_s
        return max(1, math.floor(per_run / self.step_s))


class Budget:
    """``minutes`` of training shared by stages in proportion to their shares, on ``clock`` (seconds); the budget
    starts being spent when the first stage is allotted its time."""

    def __init__(self, minutes: float, shares: dict[str, float], clock: Callable[[], float] = time.perf_counter):
        if not minutes > 0:
            raise ConfigError(f"--minutes must be positive, got {minutes}")
        self.total_s, self.clock, self.start = minutes * 60.0, clock, None
        self.left = dict(shares)  # stages not started yet

    def allot(self, stage: str) -> float:
        """Seconds for ``stage``, started now: its share of what is left of the budget."""
        if self.start is None:
            self.start = self.clock()
        rest = sum(self.left.values())
        share = self.left.pop(stage)
        return max(0.0, self.total_s - (self.clock() - self.start)) * share / rest


def parse_steps(text: str | None, stages: list[str]) -> dict[str, int] | None:
    """``--steps``: one count for every stage (``300``) or counts by stage (``clm=300,mlm=250,...``); None when
    not given (the budget decides)."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return dict.fromkeys(stages, _positive(int(text)))
        pairs = dict(part.split("=", 1) for part in text.split(","))
        steps = {name.strip(): _positive(int(value)) for name, value in pairs.items()}
    except ValueError:
        raise ConfigError(f"--steps takes a count (300) or counts by stage ({','.join(s + '=N' for s in stages)}), "
                          f"got {text!r}") from None
    if sorted(steps) != sorted(stages):
        raise ConfigError(f"--steps needs a count for each of {', '.join(stages)}, got {text!r}")
    return steps


def _positive(n: int) -> int:
    if n < 1:
        raise ValueError
    return n


def format_steps(steps: dict[str, int]) -> str:
    """The ``--steps`` value that reproduces ``steps``."""
    return ",".join(f"{name}={n}" for name, n in steps.items())


def probe(train: Callable[[list[str]], object], out_dir: Path, clock: Callable[[], float] = time.perf_counter) -> Cost:
    """Measure a stage: ``train(overrides)`` runs its configuration with ``overrides`` added; the probe's run
    takes :data:`PROBE_STEPS` steps into ``out_dir`` (removed afterwards), logs each and evaluates once at the end.
    The step time is the median of the steps after the first (from ``metrics.jsonl``: a step's tokens over its
    tokens/s), the evaluation's its ``eval_s``, and what is left of the wall time is setup."""
    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = clock()
    try:
        train([f"--train.out_dir={out_dir}", f"--train.max_steps={PROBE_STEPS}", "--train.log_every=1",
               f"--train.eval_every={PROBE_STEPS}", f"--train.save_every={PROBE_STEPS}", "--train.warmup_steps=1",
               "--train.progress=false"])
        wall = clock() - t0
        rows = read_metrics(out_dir / "metrics.jsonl")
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return cost_of(rows, wall)


def cost_of(rows: list[dict], wall_s: float) -> Cost:
    """The :class:`Cost` of a probe from its ``metrics.jsonl`` rows and its wall time."""
    logged = [r for r in rows if r.get("tokens_per_s")]
    before = [0] + [r["tokens"] for r in logged[:-1]]  # tokens seen before each logged step
    times = [(r["tokens"] - b) / r["tokens_per_s"] for b, r in zip(before, logged, strict=True)]
    step_s = median(times[1:]) if len(times) > 1 else times[0]
    eval_s = sum(r.get("eval_s", 0.0) for r in rows)
    return Cost(setup_s=max(0.0, wall_s - sum(times) - eval_s), step_s=step_s, eval_s=eval_s)
