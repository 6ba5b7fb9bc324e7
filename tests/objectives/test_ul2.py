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
    for seed in range(600):
        tokens = _rows(obj, seed % 7)
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        mode = batch.input_ids[0, 0].item()
        assert (batch.input_ids[:, 0] == mode).all() and mode in MODES
        counts[MODES.index(mode)] += 1
        inputs, targets = batch.input_ids.tolist(), batch.targets.tolist()
        for row in range(8):
            if mode == MODES[2]:  # S: the prefix, then the suffix up to EOS, is the row
                prefix = [t for t, m in zip(inputs[row][1:], batch.attention_mask[row][1:].tolist(),
                                            strict=True) if m]
                suffix = targets[row][:targets[row].index(EOS)]
                assert prefix + suffix == tokens[row, :64].tolist()
            else:  # R and X: span corruption of the first raw_len tokens
                assert _merge(inputs[row][1:], targets[row]) == tokens[row, :len(_merge(inputs[row][1:],
                                                                                        targets[row]))].tolist()
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.5, 0.3, 0.2]), atol=0.05)


def test_decoder_form_reads_the_inputs_as_a_prefix():
    obj = UL2(64, SENTINELS, MODES, EOS, PAD, PAD, document_mask=False, decoder_only=True)
    g = torch.Generator().manual_seed(1)
    for seed in range(60):
        tokens = _rows(obj, seed)
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        prefix = batch.prefix_lengths
        assert (batch.input_ids[:, 0] == batch.input_ids[0, 0]).all()
        pos = torch.arange(batch.targets.shape[1])[None]
        assert (batch.targets[pos < (prefix - 1)[:, None]] == IGNORE).all()  # the prefix is read, not scored
        assert (batch.targets[pos >= (prefix - 1)[:, None]] != IGNORE).all()
