"""Errors a user can cause. The CLI prints their message and exits with code 2."""


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
