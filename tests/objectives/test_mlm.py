import torch

from lmlab.objectives import IGNORE, MaskedLM

SPECIAL = [0, 1, 2, 3, 4]
MASK = 4
V = 1000


def _tokens(b=64, t=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(5, V, (b, t), generator=g)
    tokens[:, ::17] = 3  # separators (special) scattered through the rows
    return tokens


def test_masking_rates_match_config():
    obj = MaskedLM(MASK, SPECIAL, V, mask_prob=0.15, mask_token_frac=0.8, random_token_frac=0.1)
    g = torch.Generator().manual_seed(1)
    chosen = masked = randomised = kept = eligible = 0
    for i in range(40):
        tokens = _tokens(seed=i)
        batch = obj.make_batch(tokens, torch.zeros_like(tokens), g)
        sel = batch.targets != IGNORE
        assert torch.equal(batch.targets[sel], tokens[sel])  # targets are the originals
        eligible += (tokens != 3).sum().item()
        chosen += sel.sum().item()
        masked += (sel & (batch.input_ids == MASK)).sum().item()
        kept += (sel & (batch.input_ids == tokens)).sum().item()
        randomised += (sel & (batch.input_ids != MASK) & (batch.input_ids != tokens)).sum().item()
        assert torch.equal(batch.input_ids[~sel], tokens[~sel])  # unchosen tokens untouched
    assert abs(chosen / eligible - 0.15) < 0.0015
    assert abs(masked / chosen - 0.8) < 0.01
    # a random replacement equal to the original counts as kept: expected 0.1 * (1 - 1/995)
    assert abs(randomised / chosen - 0.1) < 0.01
    assert abs(kept / chosen - 0.1) < 0.01


def test_special_tokens_never_chosen_and_random_never_special():
    obj = MaskedLM(MASK, SPECIAL, V, mask_prob=0.5, mask_token_frac=0.0, random_token_frac=1.0)
    tokens = _tokens()
    batch = obj.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(0))
    assert (batch.targets[tokens == 3] == IGNORE).all()
    chosen = batch.targets != IGNORE
    assert (batch.input_ids[chosen] >= 5).all()


def test_same_generator_state_same_batch():
    obj = MaskedLM(MASK, SPECIAL, V)
    tokens = _tokens()
    a = obj.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(3))
    b = obj.make_batch(tokens, torch.zeros_like(tokens), torch.Generator().manual_seed(3))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.targets, b.targets)


def test_report_gives_the_accuracy_and_the_loss_is_a_perplexity():
    from lmlab.objectives import CausalLM, MaskedLM

    mlm = MaskedLM(4, [0, 1, 2, 3, 4], 50)
    assert mlm.perplexity and mlm.report({"correct": 30.0}, 120.0) == {"accuracy": 0.25}
    assert CausalLM().report({}, 10.0) == {}
