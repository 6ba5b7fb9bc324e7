"""Instruction tuning (sft): which tokens are scored, the chat rows, and packing that keeps examples apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmlab.chat_template import CHATML_TOKENS, DEFAULT_CHAT_TEMPLATE
from lmlab.config import load_config
from lmlab.data.examples import Examples, pack
from lmlab.errors import ConfigError
from lmlab.model import build_model
from lmlab.objectives import IGNORE, build_objective, objective_tokenizer
from lmlab.tokenizer import Tokenizer

CHAT = [{"role": "system", "content": "1"}, {"role": "user", "content": "1 2 3"},
        {"role": "assistant", "content": "3 2 1"}, {"role": "user", "content": "4 5"},
        {"role": "assistant", "content": "5 4"}]


def _cfg(**objective):
    return load_config(None, {"preset": "gpt2-tiny", "objective": {"name": "sft", **objective},
                              "data": {"seq_len": "64"}})


def _setup(task_tokenizer, pad_is_eos=False, **objective):
    cfg = _cfg(**objective)
    tok = objective_tokenizer(cfg, Tokenizer.load(task_tokenizer))
    if pad_is_eos:  # as GPT-2's tokenizers are often set up: tokenizer.pad_token = tokenizer.eos_token
        tok = Tokenizer(tok.tok, {**tok.roles, "pad": tok.roles["eos"]}, tok.additional_special_tokens,
                        tok.chat_template)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg.model, vocab_size=tok.vocab_size))
    objective = build_objective(cfg, tok)
    objective.attach(model)
    return tok, model, objective


def _examples(objective, items, packs=None):
    rows = [objective.row(x, y) for x, y in items]
    return Examples([np.array(r) for r, _ in rows], scored=[np.array(s, dtype=bool) for _, s in rows],
                    packs=None if packs is None else np.array(packs))


def _scored(batch, row):
    t = batch.targets[row]
    return t[t != IGNORE].tolist()


def test_objective_tokenizer_adds_chatml_only_without_a_template(task_tokenizer):
    base = Tokenizer.load(task_tokenizer)
    tok = objective_tokenizer(_cfg(), base)
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE and base.chat_template is None
    assert [tok.token_to_id(t) for t in CHATML_TOKENS] == [base.vocab_size, base.vocab_size + 1]
    own = Tokenizer(base.tok, base.roles, (), "{{ messages[0]['content'] }}")
    assert objective_tokenizer(_cfg(), own) is own  # its own template: nothing added
    with pytest.raises(ConfigError, match="chat template"):
        build_objective(_cfg(), base)  # built from Python on a tokenizer without one


def test_sft_is_for_decoders(task_tokenizer):
    cfg = load_config(None, {"preset": "bert-tiny", "objective": {"name": "sft"}})
    with pytest.raises(ConfigError, match="cannot train a model with arch 'encoder'"):
        objective_tokenizer(cfg, Tokenizer.load(task_tokenizer))


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_prompt_completion_scores_completion_and_eos(task_tokenizer, pad_is_eos):
    tok, model, objective = _setup(task_tokenizer, pad_is_eos)
    assert (objective.pad == objective.eos) == pad_is_eos
    batch = objective.make_batch(_examples(objective, [("1 2 3", "3 2 1"), ("4 5 6 7 8 9", "9 8")]), None)
    # row 0 is padded (with EOS's id when pad is EOS); its EOS is scored, its padding never
    assert _scored(batch, 0) == tok.encode("3 2 1") + [tok.eos_id]
    assert _scored(batch, 1) == tok.encode("9 8") + [tok.eos_id]
    assert batch.attention_mask[0].sum() < batch.attention_mask.shape[1]
    assert batch.input_ids[0].tolist()[:5] == tok.encode("1 2 3") + [tok.sep_id, tok.encode("3")[0]]
    # another prompt changes no label; another completion token changes the loss
    other = objective.make_batch(_examples(objective, [("9 9 9", "3 2 1"), ("0 0 0 0 0 0", "9 8")]), None)
    assert [_scored(other, i) for i in (0, 1)] == [_scored(batch, i) for i in (0, 1)]
    changed = objective.make_batch(_examples(objective, [("1 2 3", "3 2 7"), ("4 5 6 7 8 9", "9 8")]), None)
    assert objective.loss(model, changed)[0] != objective.loss(model, batch)[0]


def test_train_on_prompt_scores_the_prompt_too(task_tokenizer):
    tok, _, objective = _setup(task_tokenizer, train_on_prompt="true")
    batch = objective.make_batch(_examples(objective, [("1 2 3", "3 2 1"), ("4 5 6 7 8 9", "9 8")]), None)
    row = tok.encode("1 2 3") + [tok.sep_id] + tok.encode("3 2 1") + [tok.eos_id]
    assert _scored(batch, 0) == row[1:]  # every token but the first, which nothing predicts; padding never


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_conversation_scores_assistant_turns_and_eos(task_tokenizer, pad_is_eos):
    tok, _, objective = _setup(task_tokenizer, pad_is_eos)
    batch = objective.make_batch(_examples(objective, [(CHAT, "5 4"), (CHAT[1:3], "3 2 1")]), None)
    start, end = (tok.token_to_id(t) for t in CHATML_TOKENS)
    newline = tok.encode("\n")  # nothing with this tokenizer: it splits on whitespace
    turn = lambda text: tok.encode(text) + [end] + newline
    assert _scored(batch, 0) == turn("3 2 1") + turn("5 4") + [tok.eos_id]
    assert _scored(batch, 1) == turn("3 2 1") + [tok.eos_id]
    # the row is the template's text, tokenized whole
    text = objective.tokenizer.tok.decode(batch.input_ids[1][batch.attention_mask[1] == 1].tolist(),
                                          skip_special_tokens=False)
    assert text.startswith("<|im_start|>") and batch.input_ids[1, 0] == start
    # the prompt a model answers: the conversation before its last assistant turn, with the generation prompt
    prompt = objective.encode(CHAT)
    row, _ = objective.row(CHAT, "5 4")
    assert row[:len(prompt)] == prompt and row[len(prompt):] == turn("5 4") and prompt.count(start) == 5


def test_loss_and_token_accuracy_are_over_the_scored_tokens(task_tokenizer):
    """The loss is the cross-entropy summed over the scored tokens (float64 reference on the full logits), and the
    logged accuracy the share of them the model's argmax predicts."""
    tok, model, objective = _setup(task_tokenizer)
    batch = objective.make_batch(_examples(objective, [("1 2 3", "3 2 1"), ("4 5 6 7 8 9", "9 8")]), None)
    scored = batch.targets != IGNORE
    with torch.no_grad():
        logits = model(batch.input_ids, attention_mask=batch.attention_mask).logits.double()
        where = scored.nonzero()[::2].T  # every other scored token made what the model predicts there
        batch.targets[tuple(where)] = logits[tuple(where)].argmax(-1)
        loss, count, metrics = objective.loss(model, batch)
    expected = F.cross_entropy(logits[scored], batch.targets[scored], reduction="sum")
    assert int(count) == int(scored.sum()) == len(tok.encode("3 2 1 9 8")) + 2
    torch.testing.assert_close(loss.double(), expected, atol=1e-4, rtol=1e-5)
    right = (logits[scored].argmax(-1) == batch.targets[scored]).sum()
    assert right >= where.shape[1]
    report = objective.report({"correct": float(metrics["correct"])}, float(count))
    assert int(metrics["correct"]) == int(right) and report["accuracy"] == int(right) / int(count)


def test_rows_longer_than_seq_len_are_cut_at_the_end(task_tokenizer):
    tok, _, objective = _setup(task_tokenizer)
    objective.max_len = 6
    batch = objective.make_batch(_examples(objective, [("1 2", "3 4 5 6 7")]), None)
    assert batch.input_ids.shape[1] == 5 and _scored(batch, 0) == tok.encode("3 4 5")


def _example_losses(model, batch):
    """(summed cross-entropy, logits at the scored positions) of each example of a batch, packed or not."""
    logits = model(**batch.model_inputs()).logits.double()  # (R, L, V)
    out = []
    segments = batch.segment_ids if batch.segment_ids is not None else torch.zeros_like(batch.input_ids)
    for r in range(batch.input_ids.shape[0]):
        for s in segments[r].unique().tolist():
            where = (segments[r] == s) & (batch.targets[r] != IGNORE)
            if where.any():
                out.append((F.cross_entropy(logits[r][where], batch.targets[r][where], reduction="sum"),
                            logits[r][where]))
    return out


ITEMS = [("1 2 3", "3 2 1"), (CHAT, "5 4"), ("4 5", "5 4"), (CHAT[1:3], "3 2 1"), ("6 7 8 9", "9 8 7 6")]


def test_packing_keeps_examples_apart(task_tokenizer):
    """Changing one packed example changes no other example's logits; each example's loss equals its loss alone."""
    tok, model, objective = _setup(task_tokenizer, packing="true")
    model.eval()
    packs = [0, 0, 1, 1, 0]
    batch = objective.make_batch(_examples(objective, ITEMS, packs), None)
    assert batch.input_ids.shape[0] == 2 and batch.segment_ids is not None and batch.attention_mask is None
    assert batch.segment_ids[0].unique().tolist() == [0, 1, 2]
    assert batch.segment_ids[1, -1] == len(ITEMS) and batch.targets[1, -1] == IGNORE  # padding: a segment apart
    packed = _example_losses(model, batch)
    alone = [_example_losses(model, objective.make_batch(_examples(objective, [item]), None))[0] for item in ITEMS]
    order = [0, 1, 4, 2, 3]  # the examples in the order the packed rows hold them
    for (loss, logits), k in zip(packed, order, strict=True):
        torch.testing.assert_close(loss, alone[k][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits, alone[k][1], rtol=1e-5, atol=1e-5)
    # perturbation: another first example (other tokens, another length) changes nothing of the others
    changed = [("9 9 9 9 9 9 9", "1 1"), *ITEMS[1:]]
    after = _example_losses(model, objective.make_batch(_examples(objective, changed, packs), None))
    assert not torch.allclose(after[0][0], packed[0][0])
    for (loss, logits), (loss2, logits2) in zip(packed[1:], after[1:], strict=True):
        torch.testing.assert_close(logits2, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss2, loss, rtol=1e-5, atol=1e-5)
    # the objective's loss of the packed batch is the sum of the examples' own
    total = sum(loss for loss, _ in alone)
    torch.testing.assert_close(objective.loss(model, batch)[0].double(), total, rtol=1e-4, atol=1e-4)


def test_pack_best_fit_decreasing():
    lengths = np.array([5, 9, 3, 7, 1, 4, 10])
    rows = pack(lengths, 10)
    assert sorted(np.concatenate(rows).tolist()) == list(range(7))  # every example once, none split
    assert all(lengths[r].sum() <= 10 for r in rows) and len(rows) == 4  # 39 tokens: 4 rows of 10 at least
