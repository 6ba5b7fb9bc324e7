"""The metrics log (JSON lines) and the loss-curve plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per line. On resume, drops records past the resumed step."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None:
            self.path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_losses(records: list[dict[str, Any]], path: str | Path, title: str = "", metric: str | None = None) -> None:
    """Train loss and validation loss against step, as a PNG; with ``metric`` (a fine-tuning run's validation
    metric, e.g. ``"val_bleu"``) that metric too, on its own axis on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", lw=1.2)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss", lw=1.5)
    for r in records:
        if "unigram_loss" in r:
            ax.axhline(r["unigram_loss"], ls="--", color="gray", label="unigram model")
            break
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / target token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    scores = [(r["step"], r[metric]) for r in records if metric and metric in r]
    if scores:
        right = ax.twinx()
        right.plot(*zip(*scores, strict=True), "s-", color="tab:green", label=metric, lw=1.5)
        right.set_ylabel(metric)
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
