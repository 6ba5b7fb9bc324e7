"""The reference pass of preference optimisation (dpo): the log-probs of every chosen and rejected answer under the
model fine-tuning starts from, computed once before training and stored beside the examples
(``examples/<split>/reference.npy``, :data:`lmlab.data.examples.REFERENCE`), so that no second model is held
while training.

The pass is resumable: each batch's rows are written into the memory-mapped file as soon as they are computed (NaN
marks the rows still to do), and ``examples/reference.json`` records a SHA-256 of the weights they come from. A
run killed during the pass and started again with the same command keeps its examples (same examples, same
tokenizer) and builds the same initial model, so it continues where the pass stopped; other weights start it over.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lmlab.data.examples import REFERENCE, ExampleDataset, read_manifest
from lmlab.errors import DataError
from lmlab.train.distributed import Dist
from lmlab.train.precision import autocast

INFO = "reference.json"  # under the examples directory: {"model": SHA-256 of the weights}


def weights_sha256(model: torch.nn.Module) -> str:
    """A SHA-256 of a model's weights (names and bytes, in name order): whether stored log-probs are its own."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _start(directory: Path, manifest: dict[str, Any], fingerprint: str) -> int:
    """Make every split's file ready for this model: kept when it holds this model's log-probs, else all NaN.
    Returns how many pairs were computed already."""
    info = directory / INFO
    try:
        kept = json.loads(info.read_text(encoding="utf-8")).get("model") == fingerprint
    except (OSError, ValueError):
        kept = False
    done = 0
    for split, counts in manifest["splits"].items():
        path = directory / split / REFERENCE
        if kept and path.is_file():
            done += int((~np.isnan(np.load(path, mmap_mode="r")).any(1)).sum())
            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fresh = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(counts["examples"], 2))
        fresh[:] = np.nan
        fresh.flush()
        del fresh
        os.replace(tmp, path)
    if not kept:  # (written last: a kill before it starts the pass over)
        info.write_text(json.dumps({"model": fingerprint}) + "\n", encoding="utf-8")
    return done


@torch.no_grad()
def reference_pass(model: torch.nn.Module, objective: Any, directory: str | Path, batch_size: int, d: Dist,
                   precision: str = "fp32", progress: bool = True) -> dict[str, int]:
    """Store ``objective.logps`` of ``model`` for every pair of every split of the example shards in
    ``directory`` that it has not stored yet; under ``torchrun`` each rank computes a share of the batches.

    Returns:
        ``{"pairs": all of them, "computed": now, "kept": from an earlier, interrupted pass}``.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    fingerprint = weights_sha256(model)
    kept = _start(directory, manifest, fingerprint) if d.is_main else 0
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    total = sum(s["examples"] for s in manifest["splits"].values())
    bar = tqdm(total=total, initial=kept, disable=not (progress and d.is_main), unit="pair", dynamic_ncols=True,
               desc="reference log-probs")
    if d.is_main and not progress and kept < total:
        print(f"reference log-probs of {total - kept} pairs" + (f" ({kept} kept from an interrupted pass)"
                                                                  if kept else ""), flush=True)
    was_training = model.training
    model.eval()
    for split in manifest["splits"]:
        ds = ExampleDataset(directory, split)
        stored = np.load(directory / split / REFERENCE, mmap_mode="r+")  # (N, 2)
        todo = np.flatnonzero(np.isnan(stored).any(1))
        todo = todo[np.argsort(-np.maximum(ds.source_lengths, ds.rejected_lengths)[todo], kind="stable")]
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        for index in batches[d.rank::d.world_size]:
            examples = ds.batch(index)
            examples.reference = None
            batch = objective.make_batch(examples, None).to(d.device)
            with autocast(precision, d.device):
                logps, _ = objective.logps(model, batch)  # (B, 2)
            stored[index] = logps.cpu().numpy()
            stored.flush()  # the rows are on disk before the next batch: a kill loses one batch at most
            bar.update(len(index) * d.world_size)
        del stored
    bar.close()
    model.train(was_training)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return {"pairs": total, "computed": total - kept, "kept": kept}


def check_reference(directory: str | Path) -> None:
    """Refuse example shards whose reference pass did not finish (a resumed dpo run's must have).

    Raises:
        DataError: a split without its reference log-probs, or with some missing.
    """
    directory = Path(directory)
    for split in read_manifest(directory)["splits"]:
        path = directory / split / REFERENCE
        if not path.is_file() or np.isnan(np.load(path, mmap_mode="r")).any():
            raise DataError(f"{path}: the reference log-probs of this run are missing or incomplete, so its "
                            "preference loss cannot be computed; start the run again without --resume")
