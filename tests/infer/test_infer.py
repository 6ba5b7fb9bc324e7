import pytest
import torch

from lmlab.config import model_preset
from lmlab.infer import InferenceError, fill_mask, sample
from lmlab.model import build_model


@pytest.fixture(scope="module")
def models(tokenizer):
    torch.manual_seed(0)
    encoder = build_model(model_preset("bert-tiny", vocab_size=tokenizer.vocab_size)).eval()
    decoder = build_model(model_preset("gpt2-tiny", vocab_size=tokenizer.vocab_size)).eval()
    return encoder, decoder


def test_fill_mask_ranks_the_softmax_at_each_mask(models, tokenizer):
    encoder, _ = models
    text = "the [MASK] fox jumps over the [MASK] dog"
    out = fill_mask(encoder, tokenizer, text, top_k=4)
    assert len(out) == 2 and all(len(c) == 4 for c in out)
    ids = torch.tensor([tokenizer.encode(text)])
    where = (ids[0] == tokenizer.mask_id).nonzero().squeeze(1)
    probs = encoder(ids).logits[0, where].softmax(-1)  # the full head, for reference
    for candidates, row in zip(out, probs, strict=True):
        top = row.topk(4)
        assert [p for _, p in candidates] == pytest.approx(top.values.tolist(), abs=1e-6)
        assert [t for t, _ in candidates] == [tokenizer.decode([i]) for i in top.indices.tolist()]


def test_greedy_sample_is_the_argmax_loop(models, tokenizer):
    _, decoder = models
    ids = tokenizer.encode("the quick")
    expected = list(ids)
    for _ in range(6):
        nxt = int(decoder(torch.tensor([expected])).logits[0, -1].argmax())
        if nxt == tokenizer.eos_id:
            break
        expected.append(nxt)
    assert sample(decoder, tokenizer, "the quick", max_new_tokens=6, temperature=0) == tokenizer.decode(expected)
    a = sample(decoder, tokenizer, "the quick", max_new_tokens=8, temperature=1.0, seed=3)
    assert a == sample(decoder, tokenizer, "the quick", max_new_tokens=8, temperature=1.0, seed=3)


def test_bad_inputs(models, tokenizer):
    encoder, decoder = models
    with pytest.raises(InferenceError, match="no mask token"):
        fill_mask(encoder, tokenizer, "no mask here")
    with pytest.raises(InferenceError, match="empty"):
        sample(decoder, tokenizer, "")
    with pytest.raises(InferenceError, match="max_new_tokens"):
        sample(decoder, tokenizer, "the", max_new_tokens=-1)
    with pytest.raises(InferenceError, match="context"):
        sample(decoder, tokenizer, "the", max_new_tokens=10_000)
    with pytest.raises(InferenceError, match="decoder"):
        sample(encoder, tokenizer, "the")
