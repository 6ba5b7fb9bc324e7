"""The metrics log (JSON lines), the lmlab commit a run starts from, and the loss-curve plot."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from lmlab.errors import CheckpointError

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]  # lmlab's checkout, when it runs from one


def _records(text: str) -> tuple[list[dict[str, Any]], int]:
    """The records of a metrics log, and how many lines were unreadable (a line a kill cut short)."""
    records, torn = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    return records, torn


class MetricsLog:
    """Appends one JSON object per line. On resume, drops records past the resumed step and lines a kill cut
    short."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            records, torn = _records(self.path.read_text(encoding="utf-8", errors="replace"))
            if torn:
                logger.warning("%s: dropped %d unreadable line(s) (cut short when the run was killed)", self.path,
                               torn)
            kept = [r for r in records if r.get("step", 0) <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)  # a kill now leaves the old log or the new one
        elif resume_step is None:
            self.path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a full or read-only disk
            raise CheckpointError(f"cannot write {self.path}: {e.strerror or e}") from None

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (none if it is missing), without lines a kill cut short."""
    path = Path(path)
    return _records(path.read_text(encoding="utf-8", errors="replace"))[0] if path.is_file() else []


@functools.cache
def source_commit(repo: Path = REPO) -> dict[str, Any]:
    """lmlab's git commit and whether its tracked files differ from it, ``{"lmlab_commit": sha, "lmlab_dirty":
    bool}``, for a run's start record, so that each run names the code it ran; ``{}`` when lmlab is not run from
    a git checkout, or git is missing, fails or takes over 5 s. Read once a process: the code that runs is what
    was imported."""
    if not (repo / ".git").exists():
        return {}
    git = ["git", "-C", str(repo)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                timeout=5).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, check=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"lmlab_commit": commit, "lmlab_dirty": bool(changed)}


def plot_losses(records: list[dict[str, Any]], path: str | Path, title: str = "", metric: str | None = None) -> None:
    """Train loss and validation loss against step, as a PNG; with ``metric`` (a fine-tuning run's validation
    metric, e.g. ``"val_bleu"``) that metric too, on its own axis on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
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
    try:
        fig.savefig(path)
    except OSError as e:  # a plot is not worth stopping a run for; a checkpoint that cannot be written is
        logger.warning("could not write %s: %s", path, e.strerror or e)
    finally:
        plt.close(fig)
