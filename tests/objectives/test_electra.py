"""ELECTRA: a generator that shares the embeddings, replaced-token labels, exact resume of its own weights."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.config import load_config
from lmlab.errors import ConfigError
from lmlab.model import build_model
from lmlab.objectives import Electra, build_objective
from lmlab.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def setup(docs):
    tok = train_tokenizer(docs, kind="bpe", vocab_size=300)
    cfg = load_config(None, {"preset": "bert-tiny", "model": {"lm_head": False, "mlm_transform": False,
                                                              "vocab_size": tok.vocab_size},
                             "objective": {"name": "electra"}})
    torch.manual_seed(0)
    model = build_model(cfg.model)
    objective = build_objective(cfg, tok)
    before = model.embed.weight.detach().clone()
    objective.attach(model)
    assert torch.equal(model.embed.weight, before)  # attaching leaves the model's weights alone
    return tok, model, objective


def test_generator_shares_the_embeddings_and_is_smaller(setup):
    _, model, objective = setup
    gen = objective.generator
    assert gen.embed.shared is model.embed and gen.head.proj.weight is model.embed.weight
    assert gen.config.d_model == model.config.d_model // 4
    own = {id(p) for p in objective.parameters()} - {id(p) for p in model.parameters()}
    assert 0 < sum(p.numel() for p in objective.parameters() if id(p) in own) < model.num_params(False)


def test_labels_are_replacements_and_the_loss_trains_both(setup):
    tok, model, objective = setup
    tokens = torch.tensor([tok.encode("the quick brown fox jumps over the lazy dog")] * 8)
    batch = objective.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(0))
    assert batch.noise.shape == tokens.shape and "noise" not in batch.model_inputs()
    masked = batch.input_ids == tok.mask_id
    assert masked.any() and torch.equal(batch.input_ids[~masked], tokens[~masked])
    assert torch.equal(batch.targets, tokens)  # every (ordinary) token is a discriminator target
    loss, n, metrics = objective.loss(model, batch)
    assert n == tokens.numel() and 0 <= metrics["correct"] <= n
    loss.backward()
    assert objective.generator.embed.proj.weight.grad is not None
    assert model.embed.weight.grad is not None and objective.discriminator_head[0].weight.grad is not None


def test_refuses_a_model_with_a_token_head(setup):
    tok = setup[0]
    cfg = load_config(None, {"preset": "bert-tiny", "objective": {"name": "electra"}})
    with pytest.raises(ConfigError, match="lm_head"):
        Electra.from_config(cfg, tok)


def test_metrics_report_the_generator_and_the_discriminator_apart(setup):
    tok, model, objective = setup
    tokens = torch.tensor([tok.encode("the quick brown fox jumps over the lazy dog")] * 8)
    batch = objective.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss, n, metrics = objective.loss(model, batch)
    sums = {k: float(v) for k, v in metrics.items()}
    assert sums["generator_targets"] == (batch.input_ids == tok.mask_id).sum()
    # the combined loss is made of the two parts the metrics carry
    combined = objective.weight * sums["discriminator_loss"] + sums["generator_loss"] / objective.masking.mask_prob
    assert float(loss) == pytest.approx(combined, rel=1e-5)
    report = objective.report(sums, float(n))
    assert report["generator_mlm_loss"] == pytest.approx(sums["generator_loss"] / sums["generator_targets"])
    assert report["generator_ppl"] == pytest.approx(math.exp(report["generator_mlm_loss"]))
    assert report["discriminator_loss"] == pytest.approx(sums["discriminator_loss"] / float(n))
    assert 0 <= report["discriminator_accuracy"] <= 1 and 0 <= report["replaced_share"] <= 1
    assert objective.perplexity is False  # exp(combined loss) is not a perplexity: not reported
