"""T5 (``lmlab/interop/t5.py``): v1.0 (ReLU, tied head rescaled by d_model**-0.5) and v1.1 (gated GELU,
untied head), relative attention bias, padded encoder inputs with decoder inputs."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import V, build, check_parity, ids, right_padding

from lmlab.config import model_preset
from lmlab.interop import save_hf
from lmlab.model import build_model

transformers = pytest.importorskip("transformers")


def t5(version: str):
    ff = {"1.0": "relu", "1.1": "gated-gelu"}[version]
    cfg = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3,
                                num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=20,
                                dropout_rate=0.0, feed_forward_proj=ff, tie_word_embeddings=version == "1.0",
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    hf = build(transformers.T5ForConditionalGeneration, cfg)
    if version == "1.1":  # transformers 5 builds every T5 tied; a v1.1 checkpoint has its own lm_head.weight
        hf.lm_head.weight = torch.nn.Parameter(torch.randn(V, 32, generator=torch.Generator().manual_seed(1)))
    return hf


def inputs():
    src, mask = right_padding(ids(3, 30, seed=1), [30, 17, 6])  # long enough to reach the log buckets
    tgt, tgt_mask = right_padding(ids(3, 9, seed=2), [9, 9, 4])
    return src, mask, tgt, tgt_mask


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_t5_parity(tmp_path, version):
    src, mask, tgt, tgt_mask = inputs()
    run = lambda m: m(src, attention_mask=mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
    model, _, back = check_parity(t5(version), transformers.AutoModelForSeq2SeqLM, tmp_path, run, run,
                                  where=tgt_mask.bool())
    c = model.config
    v10 = version == "1.0"
    assert (c.activation, c.tie_embeddings, c.head_rescale) == ("relu" if v10 else "geglu", v10, v10)
    assert c.decoder_layers == 3 and c.rel_buckets == 8 and c.rel_max_distance == 20
    assert back.config.scale_decoder_outputs is v10


def test_lmlab_t5_presets_export(tmp_path):
    """Every head layout: untied (v1.1), tied with rescale (v1.0) and tied without rescale."""
    src, mask, tgt, _ = inputs()
    for i, (tie, rescale, act) in enumerate([(False, False, "geglu"), (True, True, "relu"), (True, False, "swiglu")]):
        torch.manual_seed(i)
        cfg = model_preset("t5-tiny", vocab_size=V, tie_embeddings=tie, head_rescale=rescale, activation=act)
        model = build_model(cfg).eval()
        back = transformers.AutoModelForSeq2SeqLM.from_pretrained(save_hf(model, None, tmp_path / str(i))).eval()
        with torch.no_grad():
            torch.testing.assert_close(back(src, attention_mask=mask, decoder_input_ids=tgt).logits,
                                       model(src, attention_mask=mask, decoder_input_ids=tgt).logits,
                                       atol=1e-4, rtol=0)
