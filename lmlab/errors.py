"""Errors a user can cause. The CLI prints their message and exits with code 2."""

from __future__ import annotations

import os
from pathlib import Path


class LmlabError(Exception):
    """Base class for every mistake a user can make (a path, a config value, a corrupt file)."""


class ConfigError(LmlabError):
    """A config file or override names an unknown key, has the wrong type or an invalid value."""


class DataError(LmlabError):
    """A corpus or a token shard directory is missing, empty, corrupt or does not match."""


class CheckpointError(LmlabError):
    """A checkpoint directory is missing, incomplete or corrupt."""


class TokenizerError(LmlabError):
    """A tokenizer cannot be trained or loaded."""


class InteropError(CheckpointError):
    """A Hugging Face model directory cannot be imported (missing file, unknown family, a missing, mis-shaped or
    unexpected tensor), or an lmlab model has no Hugging Face equivalent to export to. A kind of
    :class:`CheckpointError`, so code that loads any checkpoint catches both."""


class DivergedError(LmlabError):
    """A training run stopped because its loss or gradient norm was not finite for ``train.max_bad_steps`` steps in
    a row; its last good checkpoint is kept."""


def make_output_dir(path: str | Path, name: str, unwritable: type[LmlabError]) -> Path:
    """Create the output directory ``path`` (with its parents) and check that a file can be written in it.

    ``name`` says where the path came from (``"train.out_dir"``, ``"--out"``) for the message. A file in its
    place is a :class:`ConfigError`; a directory that cannot be made or written (read-only, no permission, a full
    disk) is ``unwritable``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} {path} is a file, not a directory; choose another {name}")
    probe = path / f".lmlab-write-test-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise unwritable(f"cannot write to {name} {path}: {e.strerror or e}; choose a writable {name}") from None
    return path
