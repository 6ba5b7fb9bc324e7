"""Fixtures of the inference tests."""

from __future__ import annotations

import pytest
import torch

from lmlab.config import model_preset
from lmlab.model import build_model


@pytest.fixture(scope="module")
def models(tokenizer):
    """Tiny random models of the three kinds, in eval mode, sized to the shared tokenizer."""
    torch.manual_seed(0)
    V = tokenizer.vocab_size
    return {"encoder": build_model(model_preset("bert-tiny", vocab_size=V)).eval(),
            "decoder": build_model(model_preset("gpt2-tiny", vocab_size=V)).eval(),
            "seq2seq": build_model(model_preset("t5-tiny", vocab_size=V)).eval()}
