"""The comparison's figures: matplotlib (Agg) PNGs beside the report, drawn from a
:class:`~lmlab.compare.report.ReportData`: the main result, the downstream metric against pretraining FLOPs (with
``eval_at``), each objective's own pretraining loss curve, and what pretraining cost.

A row keeps its colour in every figure; the ``none`` rows (no pretraining) are grey and hatched.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lmlab.compare.report import ReportData

FIGURES = {"scores": "scores.png", "sweep": "scores-vs-flops.png", "curves": "pretraining-curves.png",
           "cost": "pretraining-cost.png"}
_NONE = "0.7"  # the none rows' grey


def draw(data: ReportData, out: str | Path) -> dict[str, str]:
    """Draw each figure there is data for into ``out``; returns the file name of each drawn, by key (see
    ``FIGURES``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = {}
    for key, figure in (("scores", _scores), ("sweep", _sweep), ("curves", _curves), ("cost", _cost)):
        fig = figure(data, plt)
        if fig is None:
            continue
        try:
            fig.savefig(Path(out) / FIGURES[key], dpi=100)
        finally:
            plt.close(fig)
        drawn[key] = FIGURES[key]
    return drawn


def _colours(data: ReportData) -> dict[str, Any]:
    pretrained = [r.name for r in data.cfg.rows]
    return {row: f"C{pretrained.index(row) % 10}" if row in pretrained else _NONE for row in data.rows}


def _main_columns(data: ReportData) -> list[tuple[str, str]]:
    return [(t.name, t.metrics[0]) for t in data.cfg.tasks]


def _scores(data: ReportData, plt: Any) -> Any:
    """Each task's main metric per row: a bar at the mean over seeds, the standard deviation as an error bar,
    the seeds as dots; n/a and not-yet-scored rows say so."""
    columns = _main_columns(data)
    if not any(data.table[r][c] is not None for r in data.rows for c in columns):
        return None
    colours = _colours(data)
    fig, axes = plt.subplots(1, len(columns), figsize=(2.2 + 4.0 * len(columns), 1.4 + 0.38 * len(data.rows)),
                             sharey=True, squeeze=False)
    for ax, (task, metric) in zip(axes[0], columns, strict=True):
        for i, row in enumerate(data.rows):
            stat = data.table[row][(task, metric)]
            if (row, task) in data.na or stat is None:
                ax.text(0, i, " n/a" if (row, task) in data.na else " not scored yet", va="center", color="0.4",
                        fontsize=8)
                continue
            none = row.startswith("none/")
            ax.barh(i, stat.mean, xerr=stat.std, color=colours[row], hatch="//" if none else None,
                    edgecolor="0.3", linewidth=0.6, capsize=3, height=0.7)
            seeds = data.scores.get(row, {}).get((task, metric), [])
            ax.plot(seeds, [i] * len(seeds), "k.", ms=4)
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.set_xlabel(f"{metric} (mean ± std over seeds)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(data.rows)), data.rows, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle("Downstream scores: each task's main metric (hatched: none rows, no pretraining)", fontsize=10)
    fig.tight_layout()
    return fig


def _sweep(data: ReportData, plt: Any) -> Any:
    """``eval_at``: each task's main metric against the pretraining FLOPs of the model fine-tuned, a line per
    pretrained row from its architecture's none row at 0 to the whole budget."""
    from lmlab.compare.report import sweep_points

    cfg = data.cfg
    if not cfg.eval_at:
        return None
    columns = _main_columns(data)
    colours = _colours(data)
    fig, axes = plt.subplots(1, len(columns), figsize=(1.0 + 5.0 * len(columns), 4.4), squeeze=False)
    drawn = False
    for ax, (task, metric) in zip(axes[0], columns, strict=True):
        for row in (r.name for r in cfg.rows):
            points = sweep_points(data, row, (task, metric)) if (row, task) not in data.na else []
            if not points:
                continue
            xs, stats = zip(*points, strict=True)
            ax.errorbar(xs, [s.mean for s in stats], yerr=[s.std for s in stats], marker="o", ms=4, capsize=3,
                        lw=1.2, color=colours[row], label=row)
            drawn = True
        for x in (0.0, *(f * cfg.max_flops for f in cfg.eval_at), cfg.max_flops):
            ax.axvline(x, color="0.85", lw=0.8, zorder=0)
        ax.set_title(f"{task}: {metric}", fontsize=10)
        ax.set_xlabel("pretraining FLOPs of the model fine-tuned (0: the none row)")
        ax.set_ylabel(f"{metric} (mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if not drawn:
        plt.close(fig)
        return None
    fig.tight_layout()
    return fig


def _series(records: list[dict[str, Any]]) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A run's training loss against FLOPs, ``(n, 2)``, and its validation losses at the FLOPs of their step."""
    train = np.array([(r["flops"], r["loss"]) for r in records if r.get("loss") is not None and "flops" in r],
                     dtype=float).reshape(-1, 2)
    steps = [r["step"] for r in records if r.get("loss") is not None and "flops" in r]
    val = [(float(np.interp(r["step"], steps, train[:, 0])), r["val_loss"]) for r in records
           if r.get("val_loss") is not None and steps]
    return train, val


def _curves(data: ReportData, plt: Any) -> Any:
    """Each objective's own training loss against FLOPs, a panel each (its own y axis): the mean over seeds on
    the FLOPs they share, shaded from the lowest to the highest seed; validation losses as points."""
    colours = _colours(data)
    runs = {row: [_series(records) for records in seeds.values()] for row, seeds in data.curves.items()}
    runs = {row: [s for s in series if len(s[0])] for row, series in runs.items()}
    rows = [row for row, series in runs.items() if series]
    if not rows:
        return None
    width = min(3, len(rows))
    height = math.ceil(len(rows) / width)
    fig, axes = plt.subplots(height, width, figsize=(max(4.3 * width, 7.0), 1.1 + 3.0 * height), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, rows, strict=False):
        series = runs[row]
        low, high = max(t[0, 0] for t, _ in series), min(t[-1, 0] for t, _ in series)
        longest = max((t for t, _ in series), key=len)[:, 0]
        grid = longest[(longest >= low) & (longest <= high)]
        if len(grid) == 0:
            grid = np.array([low])
        ys = np.stack([np.interp(grid, t[:, 0], t[:, 1]) for t, _ in series])  # (seeds, points)
        ax.fill_between(grid, ys.min(0), ys.max(0), color=colours[row], alpha=0.25, lw=0)
        ax.plot(grid, ys.mean(0), color=colours[row], lw=1.3, label=f"training, mean of {len(series)} seed(s)")
        val = [p for _, v in series for p in v]
        if val:
            ax.plot(*zip(*val, strict=True), "o", color="k", ms=3.5, label="validation, each seed")
        ax.set_title(row, fontsize=10)
        ax.set_xlabel("training FLOPs", fontsize=8)
        ax.set_ylabel("own loss (nats / target)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Each objective's own pretraining loss against FLOPs\nNOT comparable across objectives: each "
                 "scores a different prediction", fontsize=10)
    fig.tight_layout()
    return fig


def _cost(data: ReportData, plt: Any) -> Any:
    """Tokens/s and time per pretraining run, for each pretrained row (means over its seeds)."""
    rows = [row for row, cost in data.costs.items() if cost is not None]
    if not rows:
        return None
    colours = _colours(data)
    costs = [data.costs[row] for row in rows]
    y = np.arange(len(rows))
    fig, (speed, time) = plt.subplots(1, 2, figsize=(11, 2.0 + 0.38 * len(rows)), sharey=True)
    speed.barh(y, [c.tokens_per_s for c in costs], color=[colours[r] for r in rows], height=0.7)
    speed.set_xlabel("tokens/s (training steps only)")
    walls = [c.wall_s if c.wall_s is not None else 0.0 for c in costs]
    time.barh(y - 0.2, walls, height=0.4, color=[colours[r] for r in rows], label="wall time (the whole run)")
    time.barh(y + 0.2, [c.train_s for c in costs], height=0.4, color=[colours[r] for r in rows], alpha=0.45,
              label="training time (steps only)")
    for i, c in enumerate(costs):
        if c.wall_s is None:
            time.text(0, i - 0.2, " wall time not recorded", va="center", fontsize=7, color="0.4")
    time.set_xlabel("seconds per pretraining run")
    time.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    for ax in (speed, time):
        ax.grid(axis="x", alpha=0.3)
    speed.set_yticks(y, rows, fontsize=8)
    speed.invert_yaxis()
    fig.suptitle(f"What pretraining to {data.cfg.max_flops:.3g} FLOPs cost on this machine", fontsize=10)
    fig.tight_layout()
    return fig
