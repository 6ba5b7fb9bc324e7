"""UL2: mode tokens, the configured mixture, and each denoiser's inputs + targets give back the row."""

from __future__ import annotations

import torch

from lmlab.objectives import IGNORE, UL2

SENTINELS = list(range(900, 1000))
MODES = (10, 11, 12)
EOS, PAD = 1, 0


def _merge(inputs, targets):
    spans, current = {}, None
    for t in targets[:-1]:
        if t in SENTINELS:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    return [x for t in inputs[:-1] for x in (spans[t] if t in SENTINELS else [t])]


def _rows(obj, seed):
    n = obj.seq_len + obj.extra_tokens
    return torch.randint(20, 900, (8, n), generator=torch.Generator().manual_seed(seed))


def test_mixture_and_mode_tokens():
    obj = UL2(64, SENTINELS, MODES, EOS, PAD, PAD, weights=(0.5, 0.3, 0.2), document_mask=False)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for seed in range(150):
        tokens = _rows(obj, seed % 7)
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        for row in range(8):
            mode = batch.input_ids[row, 0].item()
            assert mode in MODES
            counts[MODES.index(mode)] += 1
            real = batch.attention_mask[row].bool()
            inputs = batch.input_ids[row][real].tolist()
            targets = [t for t in batch.targets[row].tolist() if t != IGNORE]  # padding is never a target
            if mode == MODES[2]:  # S: the prefix, then the suffix up to EOS, is the row
                assert inputs[1:] + targets[:targets.index(EOS)] == tokens[row, :64].tolist()
            else:  # R and X: span corruption of the first raw_len tokens
                merged = _merge(inputs[1:], targets)
                assert merged == tokens[row, :len(merged)].tolist()
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.5, 0.3, 0.2]), atol=0.05)


def test_each_example_of_a_batch_draws_its_own_denoiser():
    for decoder_only in (False, True):
        obj = UL2(64, SENTINELS, MODES, EOS, PAD, PAD, document_mask=True, decoder_only=decoder_only)
        g = torch.Generator().manual_seed(2)
        mixed = 0
        for seed in range(20):
            tokens = _rows(obj, seed)
            batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
            mixed += len(set(batch.input_ids[:, 0].tolist())) > 1
            if not decoder_only:
                assert batch.attention_mask.shape == batch.input_ids.shape
        assert mixed >= 15


def test_decoder_form_reads_the_inputs_as_a_prefix():
    obj = UL2(64, SENTINELS, MODES, EOS, PAD, PAD, document_mask=False, decoder_only=True)
    g = torch.Generator().manual_seed(1)
    for seed in range(60):
        tokens = _rows(obj, seed)
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        prefix = batch.prefix_lengths
        pos = torch.arange(batch.targets.shape[1])[None]
        assert (batch.targets[pos < (prefix - 1)[:, None]] == IGNORE).all()  # the prefix is read, not scored
        # after it, every target is scored up to the row's end; rows shorter than the batch's are right-padded
        scored = batch.targets != IGNORE
        length = (prefix - 1) + scored.sum(1)  # (B,) each row's real length
        assert (scored == ((pos >= (prefix - 1)[:, None]) & (pos < length[:, None]))).all()
        assert (batch.input_ids[pos > length[:, None]] == PAD).all()
