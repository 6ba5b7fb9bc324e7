"""ELECTRA replaced-token detection (Clark et al. 2020).

A small generator, trained with masked LM, fills the masked positions with tokens sampled from its own
predictions; the discriminator (the model being trained, and what the checkpoint holds) classifies every
token as original or replaced. Generator and discriminator share the token embeddings; the generator is
``electra_generator_fraction`` of the discriminator's width (its hidden size, heads and MLP), reading the
shared embeddings through a projection and predicting through them (tied output). The loss is

    generator MLM (mean over masked tokens) + electra_weight (default 50) x discriminator BCE (mean over tokens)

Chosen tokens (``mask_prob``, default 15%) all become ``[MASK]`` for the generator, as in ELECTRA.

The generator and the discriminator's binary head are this objective's own modules: the trainer optimizes
them with the model and checkpoints them in ``objective.safetensors``. Sampling uses uniform draws made in
``make_batch`` from the checkpointed generator, so runs resume exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import ConfigError
from lmlab.objectives.base import IGNORE, Batch, Objective, required_id, scored_share
from lmlab.objectives.mlm import MaskedLM

if TYPE_CHECKING:
    from lmlab.config import Config
    from lmlab.tokenizer import Tokenizer


class _ProjectedEmbedding(nn.Module):
    """The shared token embeddings (V, D) projected to the generator's width (D -> Dg)."""

    def __init__(self, shared: nn.Embedding, width: int) -> None:
        super().__init__()
        self.shared = shared
        self.proj = nn.Linear(shared.embedding_dim, width)

    def forward(self, ids: Tensor) -> Tensor:
        return self.proj(self.shared(ids))


class Electra(Objective, nn.Module):
    """Replaced-token detection with a masked-LM generator; the model is the discriminator (an encoder)."""

    name = "electra"
    archs = ("encoder",)
    perplexity = False  # the loss is MLM + 50 x BCE: exp of it means nothing (report gives the parts)

    def __init__(self, masking: MaskedLM, generator_fraction: float = 0.25, weight: float = 50.0) -> None:
        nn.Module.__init__(self)
        self.masking = masking
        self.generator_fraction, self.weight = generator_fraction, weight

    def attach(self, model: nn.Module) -> None:
        from lmlab.model.builder import _stack, init_weights
        from lmlab.model.transformer import Head, Transformer

        cfg = model.config
        width = max(cfg.n_heads, int(cfg.d_model * self.generator_fraction)) // cfg.n_heads * cfg.n_heads
        heads = max(1, int(round(cfg.n_heads * self.generator_fraction)))
        while width % heads:
            heads -= 1
        gen_cfg = dataclasses.replace(cfg, d_model=width, n_heads=heads, n_kv_heads=0, d_head=0,
                                      d_ff=max(1, int(cfg.d_ff * self.generator_fraction)))
        # Its output: dense to the embedding width, activation, norm, then the shared embeddings (tied).
        transform = nn.Sequential(nn.Linear(width, cfg.d_model), nn.GELU(), nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps))
        proj = nn.Linear(cfg.d_model, cfg.vocab_size)
        generator = Transformer(_ProjectedEmbedding(model.embed, width), Head(proj, transform),
                                encoder=_stack(gen_cfg, cfg.n_layers, causal=False, cross=False, token_types=True))
        shared = model.embed.weight.detach().clone()
        init_weights(generator, cfg.init_std)  # (it would re-draw the shared embeddings too: put them back)
        with torch.no_grad():
            model.embed.weight.copy_(shared)
        generator.head.proj.weight = model.embed.weight  # the output is tied to the shared embeddings
        generator.config = gen_cfg
        self.generator = generator
        self.discriminator_head = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(),
                                                nn.Linear(cfg.d_model, 1))
        for layer in (self.discriminator_head[0], self.discriminator_head[2]):
            nn.init.normal_(layer.weight, 0.0, cfg.init_std)
            nn.init.zeros_(layer.bias)

    def flops(self, model: nn.Module, batch: Batch) -> float:
        """The discriminator (an encoder without token head) everywhere and its binary head at the scored
        positions, plus the generator: the projection of the shared embeddings and its encoder everywhere, its
        token head at the masked positions."""
        from lmlab.model.transformer import linear_macs

        n, seq_len = batch.num_tokens(), batch.input_ids.shape[1]
        masked = int((batch.input_ids == self.masking.mask_id).sum()) / n
        generator = self.generator.flops_per_token(seq_len, head_fraction=masked)
        generator += 3 * 2 * linear_macs(self.generator.embed)
        head = 3 * 2 * linear_macs(self.discriminator_head) * scored_share(batch)
        return super().flops(model, batch) + n * (generator + head)

    def make_batch(self, tokens: Tensor, segment_ids: Tensor, generator: torch.Generator) -> Batch:
        batch = self.masking.make_batch(tokens, segment_ids, generator)  # chosen tokens all become [MASK]
        # Every ordinary token is a target of the discriminator (original or replaced); the generator's targets
        # are the originals under the masks.
        batch.targets = tokens.masked_fill(self.masking.is_special[tokens], IGNORE)
        batch.noise = torch.rand(tokens.shape, generator=generator)  # (B, T) for sampling the replacements
        return batch

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        inputs = batch.model_inputs()
        masked = batch.input_ids == self.masking.mask_id  # (B, T) the generator's positions
        scored = batch.targets != IGNORE  # (B, T) the discriminator's: every ordinary token
        originals = torch.where(scored, batch.targets, batch.input_ids)  # (B, T) the uncorrupted text
        gen_hidden = self.generator.hidden(**inputs, causal=False)  # (B, T, Dg)
        gen_logits = self.generator.logits(gen_hidden[masked]).float()  # (N, V) only where masked
        gen_loss = F.cross_entropy(gen_logits, originals[masked], reduction="sum")
        with torch.no_grad():  # sample replacements by inverse CDF with the batch's uniform draws
            cdf = gen_logits.softmax(-1).cumsum(-1)  # (N, V)
            u = batch.noise[masked].to(cdf.device)[:, None] * cdf[:, -1:]
            sampled = torch.searchsorted(cdf, u).squeeze(1).clamp(max=cdf.shape[1] - 1)
        corrupted = originals.clone()
        corrupted[masked] = sampled
        replaced = (corrupted != originals).float()  # (B, T) 1 where the generator changed the token
        hidden = model.hidden(**{**inputs, "input_ids": corrupted})  # (B, T, D)
        logit = self.discriminator_head(hidden[scored]).squeeze(-1).float()  # (M,)
        disc_loss = F.binary_cross_entropy_with_logits(logit, replaced[scored], reduction="sum")
        # The trainer divides by the global number of discriminator tokens; dividing the generator's sum by the
        # mask rate makes its term the mean over masked tokens in expectation, and keeps the whole loss a plain
        # sum over tokens, so accumulation and data parallelism stay exact.
        total = self.weight * disc_loss + gen_loss / self.masking.mask_prob
        correct = ((logit > 0).float() == replaced[scored]).sum()
        return total, scored.sum(), {"correct": correct, "generator_loss": gen_loss.detach(),
                                     "generator_targets": masked.sum(), "discriminator_loss": disc_loss.detach(),
                                     "replaced": replaced[scored].sum()}

    def report(self, sums: dict[str, float], num_targets: float) -> dict[str, float]:
        """The two models apart: the generator's masked-LM loss and perplexity (per masked token), the
        discriminator's loss and accuracy (per token), and the share of tokens the generator replaced. The
        combined loss is no language-model loss, so it has no perplexity (``perplexity = False``)."""
        n, masked = max(num_targets, 1.0), max(sums.get("generator_targets", 0.0), 1.0)
        generator = sums.get("generator_loss", 0.0) / masked
        return {"generator_mlm_loss": generator, "generator_ppl": math.exp(min(generator, 50.0)),
                "discriminator_loss": sums.get("discriminator_loss", 0.0) / n,
                "discriminator_accuracy": sums.get("correct", 0.0) / n, "replaced_share": sums.get("replaced", 0.0) / n}

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: Tokenizer) -> Electra:
        o = cfg.objective
        if cfg.model.lm_head:
            raise ConfigError("objective 'electra' trains a discriminator, which has no token head: set "
                              "model.lm_head = false (the generator's head belongs to the objective)")
        if not 0 < o.electra_generator_fraction <= 1:
            raise ConfigError(f"objective.electra_generator_fraction must be in (0, 1], got "
                              f"{o.electra_generator_fraction}")
        masking = MaskedLM(required_id(tokenizer, "mask"), list(tokenizer.special_ids), tokenizer.vocab_size,
                           o.mask_prob, 1.0, 0.0, None, o.document_mask)  # ELECTRA masks every chosen token
        return cls(masking, o.electra_generator_fraction, o.electra_weight)
