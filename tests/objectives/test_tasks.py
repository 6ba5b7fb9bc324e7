"""The fine-tuning objectives: what is scored, and how an example becomes a row."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lmlab.config import load_config
from lmlab.data.examples import Examples
from lmlab.model import build_model
from lmlab.objectives import IGNORE, build_objective
from lmlab.tokenizer import Tokenizer


def _setup(task_tokenizer, preset: str, name: str = "seq2seq", **model):
    tok = Tokenizer.load(task_tokenizer)
    cfg = load_config(None, {"preset": preset, "objective": {"name": name}, "data": {"seq_len": "12",
                                                                                     "decoder_seq_len": "8"}})
    torch.manual_seed(0)
    m = build_model(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size, **model))
    objective = build_objective(cfg, tok)
    objective.attach(m)
    return tok, m, objective


def _examples(tok, pairs):
    return Examples([np.array(tok.encode(s)) for s, _ in pairs], [np.array(tok.encode(t)) for _, t in pairs])


@pytest.mark.parametrize("preset", ["t5-tiny", "gpt2-tiny"])
def test_seq2seq_scores_target_tokens_only(task_tokenizer, preset):
    tok, model, objective = _setup(task_tokenizer, preset)
    g = torch.Generator()
    pairs = [("1 2 3", "3 2 1"), ("4 5 6 7 8", "8 7 6 5 4")]
    batch = objective.make_batch(_examples(tok, pairs), g)
    # every target token and EOS scored once, padding and the source never
    assert int((batch.targets != IGNORE).sum()) == sum(len(tok.encode(t)) + 1 for _, t in pairs)
    scored = batch.targets[batch.targets != IGNORE].tolist()
    assert scored == tok.encode("3 2 1") + [tok.eos_id] + tok.encode("8 7 6 5 4") + [tok.eos_id]
    # another source changes no label; another target token changes the loss
    other = objective.make_batch(_examples(tok, [("9 9 9", "3 2 1"), ("0 0 0 0 0", "8 7 6 5 4")]), g)
    assert torch.equal(other.targets[other.targets != IGNORE], batch.targets[batch.targets != IGNORE])
    changed = objective.make_batch(_examples(tok, [("1 2 3", "3 2 9"), ("4 5 6 7 8", "8 7 6 5 4")]), g)
    assert objective.loss(model, changed)[0] != objective.loss(model, batch)[0]
    # the padding of a row changes nothing of its loss: alone or beside a longer row
    alone = objective.make_batch(_examples(tok, pairs[:1]), g)
    torch.testing.assert_close(objective.loss(model, alone)[0], _row_loss(objective, model, batch, 0))


def _row_loss(objective, model, batch, row):
    one = batch.rows(slice(row, row + 1))
    return objective.loss(model, one)[0]


def test_decoder_rows_are_source_separator_target_eos(task_tokenizer):
    tok, model, objective = _setup(task_tokenizer, "gpt2-tiny")
    batch = objective.make_batch(_examples(tok, [("1 2", "2 1")]), torch.Generator())
    row = tok.encode("1 2") + [tok.sep_id] + tok.encode("2 1") + [tok.eos_id]
    assert batch.input_ids[0].tolist() == row[:-1]
    assert batch.targets[0].tolist() == [IGNORE] * 2 + row[3:]
    assert objective.encode("1 2") == tok.encode("1 2") + [tok.sep_id]  # the prompt at inference


def test_encoder_decoder_rows_and_truncation(task_tokenizer):
    tok, model, objective = _setup(task_tokenizer, "t5-tiny")
    long = " ".join(["1"] * 30)
    batch = objective.make_batch(_examples(tok, [(long, long)]), torch.Generator())
    assert batch.input_ids.shape[1] == 12 and batch.input_ids[0, -1] == tok.eos_id  # data.seq_len, EOS kept
    assert batch.decoder_input_ids.shape[1] == 8 and batch.targets[0, -1] == tok.eos_id  # decoder_seq_len
    assert batch.decoder_input_ids[0, 0] == objective.start


def test_source_prefix_and_label_smoothing(task_tokenizer):
    tok = Tokenizer.load(task_tokenizer)
    cfg = load_config(None, {"preset": "t5-tiny", "objective": {"name": "seq2seq", "source_prefix": "0 0",
                                                                 "label_smoothing": "0.1"}})
    objective = build_objective(cfg, tok)
    model = build_model(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    objective.attach(model)
    assert objective.encode("1 2") == tok.encode("0 0") + tok.encode("1 2") + [tok.eos_id]
    batch = objective.make_batch(_examples(tok, [("1 2", "2 1")]), torch.Generator())
    hidden = model.hidden(**batch.model_inputs())
    logits = model.logits(hidden)[0].float()
    expected = torch.nn.functional.cross_entropy(logits, batch.targets[0], label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(objective.loss(model, batch)[0], expected)


@pytest.mark.parametrize("preset", ["bert-tiny", "gpt2-tiny"])
def test_classify_batch_and_loss(task_tokenizer, preset):
    tok, model, objective = _setup(task_tokenizer, preset, "classify", num_labels=3, lm_head=False,
                                   mlm_transform=False, pooler=preset.startswith("bert"))
    ex = Examples([np.array(tok.encode("apple banana")), np.array(tok.encode("car"))], labels=torch.tensor([0, 2]))
    batch = objective.make_batch(ex, torch.Generator())
    if preset.startswith("bert"):  # [CLS] text [SEP]
        assert batch.input_ids[1, :3].tolist() == [tok.cls_id, *tok.encode("car"), tok.sep_id][:3]
    else:  # text EOS: the last real token is what a decoder classifies
        assert batch.input_ids[1, :2].tolist() == [*tok.encode("car"), tok.eos_id]
    loss, n, metrics = objective.loss(model, batch)
    hidden = model.hidden(batch.input_ids, attention_mask=batch.attention_mask)
    logits = model.classify(hidden, attention_mask=batch.attention_mask)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, batch.targets, reduction="sum"))
    assert int(n) == 2
    # the padding of the shorter row changes nothing of its logits
    alone = objective.make_batch(Examples([np.array(tok.encode("car"))], labels=torch.tensor([2])), torch.Generator())
    one = model.classify(model.hidden(alone.input_ids, attention_mask=alone.attention_mask),
                         attention_mask=alone.attention_mask)
    torch.testing.assert_close(one[0], logits[1], atol=1e-5, rtol=0)


def test_task_objectives_refuse_other_architectures(task_tokenizer):
    from lmlab.errors import ConfigError
    from lmlab.objectives import check_objective

    with pytest.raises(ConfigError, match="cannot train a model with arch 'encoder-decoder'"):
        check_objective(load_config(None, {"preset": "t5-tiny", "objective": {"name": "classify"}}))
    with pytest.raises(ConfigError, match="cannot train a model with arch 'encoder'"):
        check_objective(load_config(None, {"preset": "bert-tiny", "objective": {"name": "seq2seq"}}))
