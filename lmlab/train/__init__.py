"""Training: the loop, AdamW and its schedule, checkpoints, logs and data-parallel set-up."""

from lmlab.train.checkpoint import load_model, resolve_checkpoint, save_model_dir
from lmlab.train.trainer import TrainResult, config_from_checkpoint, evaluate, pretrain

__all__ = ["TrainResult", "config_from_checkpoint", "evaluate", "load_model", "pretrain", "resolve_checkpoint",
           "save_model_dir"]
