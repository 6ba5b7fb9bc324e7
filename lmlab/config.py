"""Configuration: one dataclass per concern, validated at construction.

A run is described by a :class:`Config` holding a :class:`ModelConfig`, a
:class:`DataConfig`, an :class:`ObjectiveConfig` and a :class:`TrainConfig`.
Configs load from TOML files (``configs/*.toml``) and take command-line
overrides of the form ``--train.max_steps 200`` or ``--train.max_steps=200``.
Unknown keys are an error that lists the valid ones. Model presets are looked
up by exact name (``gpt2-tiny``, ``llama-small``, ...).

This module holds only serializable values and never imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from lmlab.errors import ConfigError

Arch = Literal["encoder", "decoder", "encoder-decoder"]
Norm = Literal["layernorm", "rmsnorm"]
Position = Literal["learned", "rotary", "relative", "none"]
Activation = Literal["gelu", "gelu_tanh", "relu", "swiglu", "geglu"]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class ModelConfig:
    """The Transformer's shape and options. ``vocab_size = 0`` means "take it from the tokenizer"."""

    arch: Arch = "decoder"
    vocab_size: int = 0
    d_model: int = 256
    n_layers: int = 4
    n_decoder_layers: int = 0  # encoder-decoder only; 0 means n_layers
    n_heads: int = 4
    n_kv_heads: int = 0  # grouped-query attention; 0 means n_heads
    d_head: int = 0  # 0 means d_model // n_heads
    d_ff: int = 1024
    max_seq_len: int = 512
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5
    prenorm: bool = True
    position: Position = "learned"
    rope_theta: float = 10000.0
    rel_buckets: int = 32  # relative position bias (T5)
    rel_max_distance: int = 128
    activation: Activation = "gelu_tanh"
    bias: bool = True
    tie_embeddings: bool = True
    type_vocab_size: int = 0  # BERT token-type embeddings; 0 means none
    embed_norm: bool = False  # a norm right after the embeddings (BERT, post-norm)
    mlm_transform: bool = False  # BERT's dense + activation + norm before the MLM output projection
    # Options that Hugging Face families need (lmlab.interop); the defaults change nothing.
    pos_offset: int = 0  # learned positions: the table row of position 0 (BART 2; RoBERTa pad id + 1)
    pos_pad_id: int = -1  # >= 0: learned positions count only tokens != this id; pads sit at row pos_offset - 1
    embed_scale: bool = False  # token embeddings times sqrt(d_model) (BART's scale_embedding)
    lm_head: bool = True  # False: no token head (BertModel; classifiers): the model gives hidden states only
    head_bias: bool = False  # a bias on the head's projection without mlm_transform (BART's final_logits_bias)
    head_rescale: bool = False  # hidden states times d_model**-0.5 before the head (T5 v1.0's tied head)
    pooler: bool = False  # BERT's pooler: dense + tanh on the first token ([CLS]); encoders only
    num_labels: int = 0  # > 0: a sequence classifier (encoders: on the first token; decoders: the last real one)
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _check(self.arch in typing.get_args(Arch), f"model.arch must be one of {typing.get_args(Arch)}")
        _check(self.norm in typing.get_args(Norm), f"model.norm must be one of {typing.get_args(Norm)}")
        _check(self.position in typing.get_args(Position),
               f"model.position must be one of {typing.get_args(Position)}")
        _check(self.activation in typing.get_args(Activation),
               f"model.activation must be one of {typing.get_args(Activation)}")
        for name in ("d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            _check(getattr(self, name) > 0, f"model.{name} must be positive, got {getattr(self, name)}")
        _check(self.vocab_size >= 0, "model.vocab_size must be >= 0 (0: take it from the tokenizer)")
        _check(self.n_kv_heads >= 0 and self.n_decoder_layers >= 0 and self.d_head >= 0,
               "model.n_kv_heads, model.n_decoder_layers and model.d_head must be >= 0")
        if self.d_head == 0:
            _check(self.d_model % self.n_heads == 0,
                   f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        _check(self.n_heads % self.kv_heads == 0,
               f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads ({self.kv_heads})")
        if self.position == "rotary":
            _check(self.head_dim % 2 == 0, f"rotary positions need an even head size, got {self.head_dim}")
        _check(0.0 <= self.dropout < 1.0, f"model.dropout must be in [0, 1), got {self.dropout}")
        _check(self.norm_eps > 0 and self.init_std > 0, "model.norm_eps and model.init_std must be positive")
        _check(self.pos_offset >= 0, f"model.pos_offset must be >= 0, got {self.pos_offset}")
        _check(self.pos_pad_id >= -1, f"model.pos_pad_id must be >= 0, or -1 for none; got {self.pos_pad_id}")
        if self.pos_offset > 0 or self.pos_pad_id >= 0:
            _check(self.position == "learned",
                   f"model.pos_offset and model.pos_pad_id need position = 'learned', not {self.position!r}")
        if self.pos_pad_id >= 0:
            _check(self.pos_offset >= 1, "model.pos_pad_id needs model.pos_offset >= 1 (padding sits at row "
                   "pos_offset - 1 of the position table)")
            _check(self.vocab_size == 0 or self.pos_pad_id < self.vocab_size,
                   f"model.pos_pad_id ({self.pos_pad_id}) must be a token id below vocab_size ({self.vocab_size})")
        _check(self.num_labels >= 0, f"model.num_labels must be >= 0, got {self.num_labels}")
        if self.pooler:
            _check(self.arch == "encoder", f"model.pooler is for encoders, not {self.arch}")
        if self.num_labels > 0:
            _check(self.arch != "encoder-decoder", "model.num_labels: sequence classification needs an encoder "
                   "(first token) or a decoder (last real token), not an encoder-decoder; set model.arch")
        if not self.lm_head:
            _check(not (self.mlm_transform or self.head_bias or self.head_rescale),
                   "model.lm_head is false: model.mlm_transform, model.head_bias and model.head_rescale "
                   "describe that head and must be false too")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_heads

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers or self.n_layers


@dataclass
class DataConfig:
    """Where the token shards are and how sequences are drawn from them."""

    path: str = ""  # a directory written by `lmlab prepare` (holds train/, val/ and tokenizer.json)
    seq_len: int = 256  # fine-tuning: the longest source (or classified text), in tokens; longer ones are cut
    decoder_seq_len: int = 0  # encoder-decoder objectives: target length; 0 means seq_len
    # Fine-tuning examples (lmlab.data.examples): a .jsonl/.tsv/.csv/.parquet file, or a directory holding
    # train.* (and valid.*, test.*) files such as `lmlab data get` writes.
    train: str = ""
    valid: str = ""  # a file of validation examples; empty: the directory's valid.* file, else valid_size of train
    valid_size: float = 0.05  # below 1: the share of train held out (by a hash of the source); else a count
    source_field: str = "source"
    target_field: str = "target"
    text_field: str = "text"  # also the text of a pretraining corpus's rows (`lmlab demo --corpus`)
    label_field: str = "label"
    prompt_field: str = "prompt"  # instruction tuning (sft): {"prompt", "completion"} or {"messages": [...]} rows
    completion_field: str = "completion"
    messages_field: str = "messages"
    chosen_field: str = "chosen"  # preference pairs (dpo): {"prompt", "chosen", "rejected"} rows
    rejected_field: str = "rejected"
    source_lang: str = ""  # Hugging Face's {"translation": {"de": ..., "en": ...}} rows: which side is which
    target_lang: str = ""

    def __post_init__(self) -> None:
        _check(self.seq_len > 1, f"data.seq_len must be > 1, got {self.seq_len}")
        _check(self.decoder_seq_len >= 0, "data.decoder_seq_len must be >= 0")
        _check(self.valid_size > 0, f"data.valid_size must be positive, got {self.valid_size}")
        _check(bool(self.source_lang) == bool(self.target_lang),
               "data.source_lang and data.target_lang go together (both set, or neither)")


LOSS_TYPES = ("sigmoid", "ipo", "hinge")  # dpo's objective.loss_type


@dataclass
class ObjectiveConfig:
    """Which training objective, and its knobs. The registry in ``lmlab.objectives`` checks the name."""

    name: str = "clm"
    # masked LM: the fraction of tokens chosen, and of those the fractions replaced by the
    # mask token and by a random token (the rest stay unchanged).
    mask_prob: float = 0.15
    mask_token_frac: float = 0.8
    random_token_frac: float = 0.1
    # masked LM: choose whole words (every piece of a chosen word) instead of single tokens.
    whole_word: bool = False
    # every objective: whether attention and targets stop at document boundaries inside a packed sequence.
    document_mask: bool = True
    # causal LM, prefix LM, FIM: > 0 computes the output projection and cross-entropy this many tokens at a time
    # (recomputed in backward), so the [tokens x vocab] logits never exist at once (large vocabularies)
    loss_chunk: int = 0
    # span corruption (T5): the fraction of tokens noised and the mean length of a noise span.
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    # BART: the fraction of tokens masked in Poisson(lambda)-long spans, and sentence permutation.
    bart_mask_ratio: float = 0.3
    bart_poisson_lambda: float = 3.0
    bart_permute_sentences: bool = True
    # fill-in-the-middle: the share of documents rearranged, and of those the share in SPM order.
    fim_rate: float = 0.5
    fim_spm_rate: float = 0.5
    # UL2: the weights of the R-, X- and S-denoiser families (a batch comes from one denoiser).
    ul2_r_weight: float = 0.4
    ul2_x_weight: float = 0.4
    ul2_s_weight: float = 0.2
    # ELECTRA: the generator's width as a fraction of the discriminator's, and the discriminator loss weight.
    electra_generator_fraction: float = 0.25
    electra_weight: float = 50.0
    # fine-tuning tasks (seq2seq, classify): text put before every source (T5's "translate German to English: "),
    # and label smoothing of the cross-entropy (0: none).
    source_prefix: str = ""
    label_smoothing: float = 0.0
    # instruction tuning (sft): score the prompt's tokens too (by default only the completion's or the assistant
    # turns' and EOS), and pack several examples into each row (attention and positions kept apart).
    train_on_prompt: bool = False
    packing: bool = False
    # preference optimisation (dpo): the strength of the pull toward the reference model, and the loss of the
    # reward margin z: "sigmoid" -log sigma(z) (DPO), "ipo" (IPO), "hinge" (SLiC); label_smoothing is cDPO's
    # share of preferences taken to be flipped (sigmoid only, at most 0.5)
    beta: float = 0.1
    loss_type: str = "sigmoid"

    def __post_init__(self) -> None:
        _check(bool(self.name), "objective.name must not be empty")
        _check(0.0 < self.mask_prob < 1.0, f"objective.mask_prob must be in (0, 1), got {self.mask_prob}")
        _check(self.mask_token_frac >= 0 and self.random_token_frac >= 0
               and self.mask_token_frac + self.random_token_frac <= 1.0,
               "objective.mask_token_frac + objective.random_token_frac must be within [0, 1]")
        _check(self.loss_chunk >= 0, f"objective.loss_chunk must be >= 0, got {self.loss_chunk}")
        _check(0.0 < self.noise_density < 1.0, f"objective.noise_density must be in (0, 1), got {self.noise_density}")
        _check(self.mean_noise_span_length >= 1.0,
               f"objective.mean_noise_span_length must be >= 1, got {self.mean_noise_span_length}")
        _check(0.0 < self.bart_mask_ratio < 1.0 and self.bart_poisson_lambda > 0,
               "objective.bart_mask_ratio must be in (0, 1) and objective.bart_poisson_lambda positive")
        _check(0.0 <= self.fim_rate <= 1.0 and 0.0 <= self.fim_spm_rate <= 1.0,
               "objective.fim_rate and objective.fim_spm_rate must be within [0, 1]")
        _check(0.0 <= self.label_smoothing < 1.0,
               f"objective.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(math.isfinite(self.beta) and self.beta > 0,
               f"objective.beta must be a positive number, got {self.beta}")
        _check(self.loss_type in LOSS_TYPES, f"objective.loss_type must be one of {', '.join(LOSS_TYPES)}, "
               f"got {self.loss_type!r}")
        if self.name == "dpo":  # label smoothing is cDPO's: a share of preferences taken to be flipped
            _check(self.label_smoothing <= 0.5,
                   f"objective.label_smoothing must be at most 0.5 for dpo (cDPO), got {self.label_smoothing}")
            _check(self.label_smoothing == 0 or self.loss_type == "sigmoid",
                   f"objective.label_smoothing (cDPO) applies to objective.loss_type sigmoid, not {self.loss_type!r}")
        weights = (self.ul2_r_weight, self.ul2_x_weight, self.ul2_s_weight)
        _check(min(weights) >= 0 and sum(weights) > 0,
               f"objective.ul2_r_weight, ul2_x_weight, ul2_s_weight must be >= 0 and not all 0, got {weights}")


PRECISIONS = ("fp32", "fp32-fast", "bf16", "fp16")


@dataclass
class TrainConfig:
    """The optimisation loop: AdamW, warm-up + cosine schedule, accumulation, clipping, evaluation, checkpoints."""

    out_dir: str = "runs/run"
    batch_size: int = 8  # sequences per micro-batch, per process
    grad_accum: int = 1
    max_steps: int = 1000
    # a compute budget: stop once the training FLOPs reach it (0: off); a new run sets max_steps, the schedule's
    # length, to the steps it affords (estimated from its own batches), which resuming keeps
    max_flops: float = 0.0
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping
    # a step whose loss or gradient norm is NaN or inf is skipped (no update); this many in a row stop the run
    max_bad_steps: int = 5
    eval_every: int = 200
    eval_batches: int = 20
    eval_at_start: bool = False  # also evaluate before the first step (a fresh run's step-0 record): the baseline
    save_every: int = 500
    keep_last: int = 2
    # also keep the model at the first step whose training FLOPs reach each of these counts, as
    # out_dir/flops-<count> (see lmlab.train.checkpoint.flops_dir), apart from the step-N checkpoints
    save_at_flops: tuple[float, ...] = ()
    log_every: int = 10
    seed: int = 1337
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    # "fp32"; "fp32-fast": fp32 matmuls through oneDNN on CPU / TF32 on CUDA (float32 matmul precision
    # "medium" for the run: about 1e-6 relative error on CPUs without AMX, bf16-level where the hardware
    # has it); "bf16": autocast to bfloat16 (CPU and CUDA); "fp16": autocast to float16 with loss scaling (CUDA)
    precision: str = "fp32"
    # recompute each block's activations in the backward pass: much less memory for about 1/3 more compute
    activation_checkpointing: bool = False
    # under torchrun: "ddp" (every rank holds the weights) or "fsdp" (fully_shard: weights and state sharded)
    parallel: str = "ddp"
    compile: bool = False  # torch.compile the training step (inductor; the first step's compile time is logged apart)
    peak_flops: float = 0.0  # FLOP/s for MFU; 0 means measure once with a matmul benchmark
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "eval_batches", "save_every",
                     "keep_last", "log_every", "max_bad_steps"):
            _check(getattr(self, name) > 0, f"train.{name} must be positive, got {getattr(self, name)}")
        _check(math.isfinite(self.lr) and self.lr > 0, f"train.lr must be a positive number, got {self.lr}")
        _check(0.0 <= self.min_lr_ratio <= 1.0, "train.min_lr_ratio must be within [0, 1]")
        _check(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        _check(math.isfinite(self.max_flops) and self.max_flops >= 0,
               f"train.max_flops must be a FLOP count >= 0 (0: no budget), got {self.max_flops}")
        _check(all(math.isfinite(f) and f > 0 for f in self.save_at_flops),
               f"train.save_at_flops must be positive FLOP counts, got {list(self.save_at_flops)}")
        _check(self.parallel in ("ddp", "fsdp"), f"train.parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        _check(self.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}, "
               f"got {self.precision!r}")
        _check(self.weight_decay >= 0 and self.grad_clip >= 0 and self.peak_flops >= 0,
               "train.weight_decay, train.grad_clip and train.peak_flops must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1 and train.beta2 must be within [0, 1)")


METRICS = ("loss", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum", "accuracy", "macro_f1")


LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")  # a block's projections ("all": every one)


@dataclass
class LoraConfig:
    """LoRA adapters (``[finetune.lora]``): the base weights stay frozen and each targeted projection ``W`` of every
    block (self- and cross-attention ``q``, ``k``, ``v``, ``o``; the MLP's ``gate``, ``up``, ``down``) learns
    ``W + (alpha / r) B A``, ``A`` (r, in), ``B`` (out, r), as PEFT does. ``r = 0``: no adapters."""

    r: int = 0
    alpha: float = 16.0
    dropout: float = 0.0  # on the adapters' input
    targets: tuple[str, ...] = ("q", "k", "v", "o")

    def __post_init__(self) -> None:
        _check(self.r >= 0, f"finetune.lora.r must be >= 0 (0: no adapters), got {self.r}")
        _check(math.isfinite(self.alpha) and self.alpha > 0, f"finetune.lora.alpha must be positive, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, f"finetune.lora.dropout must be in [0, 1), got {self.dropout}")
        if self.targets == ("all",):
            self.targets = LORA_TARGETS
        bad = [t for t in self.targets if t not in LORA_TARGETS]
        _check(bool(self.targets) and not bad and len(set(self.targets)) == len(self.targets),
               f"finetune.lora.targets must be distinct names among {', '.join(LORA_TARGETS)} (or \"all\"), got "
               f"{list(self.targets)}")


@dataclass
class FinetuneConfig:
    """Fine-tuning (``lmlab finetune``): where the weights start, and how the task is scored while training."""

    # an lmlab checkpoint or run directory, a Hugging Face model directory, or "none": random weights of the
    # [model] configuration with the tokenizer of finetune.tokenizer
    init: str = ""
    scratch: bool = False  # true: the configuration and tokenizer of init, with random weights (no pretraining)
    tokenizer: str = ""  # init = "none": the tokenizer (a directory or tokenizer.json)
    # the validation metric the best checkpoint (best/) is chosen by; "" chooses: bleu (seq2seq), accuracy
    # (classify). "loss" is the validation loss.
    metric: str = ""
    patience: int = 0  # stop after this many evaluations without a better metric; 0: never stop early
    eval_examples: int = 500  # validation examples decoded at each evaluation (0: all of them)
    num_beams: int = 1  # decoding at evaluation: greedy (1) or beam search
    max_new_tokens: int = 0  # the longest generated output; 0 means data.decoder_seq_len (or data.seq_len)
    lora: LoraConfig = field(default_factory=LoraConfig)  # [finetune.lora]: adapters instead of every weight

    def __post_init__(self) -> None:
        _check(self.metric in ("", *METRICS), f"finetune.metric must be one of {', '.join(METRICS)}, "
               f"got {self.metric!r}")
        _check(self.patience >= 0 and self.eval_examples >= 0 and self.max_new_tokens >= 0,
               "finetune.patience, finetune.eval_examples and finetune.max_new_tokens must be >= 0")
        _check(self.num_beams >= 1, f"finetune.num_beams must be >= 1, got {self.num_beams}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    preset: str = ""  # a model preset name; its values are the base under [model]

    def __post_init__(self) -> None:
        _check(self.data.seq_len <= self.model.max_seq_len or self.model.position in ("rotary", "none"),
               f"data.seq_len ({self.data.seq_len}) is above the model's maximum sequence length "
               f"model.max_seq_len ({self.model.max_seq_len})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- presets

_FAMILIES: dict[str, dict[str, Any]] = {
    # BERT: post-norm, LayerNorm eps 1e-12, learned positions, token types, GELU (erf), MLM transform head.
    "bert": dict(arch="encoder", norm="layernorm", norm_eps=1e-12, prenorm=False, position="learned",
                 activation="gelu", bias=True, tie_embeddings=True, type_vocab_size=2, embed_norm=True,
                 mlm_transform=True),
    # GPT-2: pre-norm, learned positions, tanh-GELU, biases, tied embeddings.
    "gpt2": dict(arch="decoder", norm="layernorm", norm_eps=1e-5, prenorm=True, position="learned",
                 activation="gelu_tanh", bias=True, tie_embeddings=True),
    # Llama: pre-norm RMSNorm, rotary positions, SwiGLU, no biases, untied head.
    "llama": dict(arch="decoder", norm="rmsnorm", norm_eps=1e-5, prenorm=True, position="rotary",
                  activation="swiglu", bias=False, tie_embeddings=False),
    # T5 (v1.1 style): pre-norm RMSNorm, relative position bias, gated GELU, no biases.
    "t5": dict(arch="encoder-decoder", norm="rmsnorm", norm_eps=1e-6, prenorm=True, position="relative",
               activation="geglu", bias=False, tie_embeddings=False),
}

_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq_len=256),
    "small": dict(d_model=384, n_layers=6, n_heads=6, d_ff=1536, max_seq_len=512),
    "base": dict(d_model=768, n_layers=12, n_heads=12, d_ff=3072, max_seq_len=1024),
}


def _preset(family: str, size: str) -> dict[str, Any]:
    values = {**_FAMILIES[family], **_SIZES[size]}
    if family == "llama":  # SwiGLU keeps parameters equal to a 4x GELU MLP with 2/3 of the width
        values["d_ff"] = int(values["d_ff"] * 2 / 3) // 32 * 32
        values["n_kv_heads"] = values["n_heads"] // 2 if values["n_heads"] % 2 == 0 else 0
    if family == "t5":
        values["d_ff"] = int(values["d_ff"] * 2 / 3) // 32 * 32
    return values


PRESETS: dict[str, dict[str, Any]] = {
    f"{family}-{size}": _preset(family, size) for family in _FAMILIES for size in _SIZES
}


def model_preset(name: str, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` of a preset, looked up by exact name, with ``overrides`` applied."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return _build(ModelConfig, {**PRESETS[name], **overrides}, "model")


# --------------------------------------------------------------------------- loading

_SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "objective": ObjectiveConfig,
                              "train": TrainConfig, "finetune": FinetuneConfig}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; strings from the command line are parsed."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key} has the wrong type: {value!r}")
    if origin is tuple:  # tuple[float, ...]: a list, or from the command line "1e12,2e12" ("" for none)
        (item, _), text = typing.get_args(tp), isinstance(value, str)
        if not isinstance(value, (list, tuple)) and not text:
            raise ConfigError(f"{key} must be a list, got {value!r}")
        items = [v for v in value.split(",") if v.strip()] if text else value
        return tuple(_coerce(v.strip() if text else v, item, key) for v in items)
    if dataclasses.is_dataclass(tp):  # a nested table, e.g. [finetune.lora]
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table of keys, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug in this module, not the user's


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls, globalns=globals())
    valid = [f.name for f in fields(cls)]
    values = dict(values)
    for key in [k for k in values if "." in k]:  # an override of a nested table: "lora.r" in [finetune]
        head, _, rest = key.partition(".")
        if head in valid and dataclasses.is_dataclass(hints[head]):
            values[head] = {**values.get(head, {}), rest: values.pop(key)}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
                          f"valid keys in [{section}]: {', '.join(valid)}")
    try:
        return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})
    except TypeError as e:  # pragma: no cover - fields() guards the names
        raise ConfigError(str(e)) from None


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested plain values (a parsed TOML file, or ``Config.to_dict()``)."""
    raw = dict(raw)
    preset = raw.pop("preset", "")
    if not isinstance(preset, str):
        raise ConfigError(f"preset must be a string, got {preset!r}")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(unknown)}; valid sections: preset, "
                          f"{', '.join(_SECTIONS)}")
    parts: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of keys, got {values!r}")
        if section == "model" and preset:
            if preset not in PRESETS:
                raise ConfigError(f"unknown model preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
            values = {**PRESETS[preset], **values}
        parts[section] = _build(cls, values, section)
    return Config(preset=preset, **parts)


def parse_overrides(args: list[str]) -> dict[str, dict[str, str]]:
    """Turn ``["--train.max_steps", "200", "--model.bias=false"]`` into ``{"train": {"max_steps": "200"}, ...}``."""
    out: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ConfigError(f"expected an override like --train.max_steps 200, got {arg!r}")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override {arg} has no value")
            key, value = arg[2:], args[i + 1]
            i += 2
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Load a TOML config file (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: the file is missing or not valid TOML, or a key is unknown or ill-typed.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p} is not a valid TOML file: {e}") from None
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        for section, values in extra.items():
            if section == "preset":
                raw["preset"] = values
                continue
            if section not in _SECTIONS:
                raise ConfigError(f"unknown section {section!r} in override; valid sections: {', '.join(_SECTIONS)}")
            raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


def with_updates(cfg: Any, **changes: Any) -> Any:
    """A copy of a config dataclass with fields changed (and validated again)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError("with_updates takes a config dataclass")
    return replace(cfg, **changes)
