import torch

from lmlab.objectives import IGNORE, CausalLM


def test_shift_and_document_targets():
    tokens = torch.tensor([[10, 11, 2, 20, 21, 22, 2, 30]])
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2]])
    batch = CausalLM(document_mask=True).make_batch(tokens, segments, torch.Generator())
    assert torch.equal(batch.input_ids, tokens[:, :-1])
    # the first token of each following document is not predicted from the previous document
    assert batch.targets.tolist() == [[11, 2, IGNORE, 21, 22, 2, IGNORE]]
    assert torch.equal(batch.segment_ids, segments[:, :-1])
    plain = CausalLM(document_mask=False).make_batch(tokens, segments, torch.Generator())
    assert torch.equal(plain.targets, tokens[:, 1:]) and plain.segment_ids is None


def test_chunked_loss_equals_the_full_logits():
    """The [tokens x vocab] logits in chunks of 7, recomputed in backward: the same loss and gradients."""
    from lmlab.config import model_preset
    from lmlab.model import build_model

    torch.manual_seed(0)
    model = build_model(model_preset("gpt2-tiny", vocab_size=300))
    tokens = torch.randint(0, 300, (3, 21))
    segments = (torch.arange(21) > 12).long().expand(3, -1)
    results = []
    for chunk in (0, 7):
        objective = CausalLM(loss_chunk=chunk)
        batch = objective.make_batch(tokens, segments, torch.Generator())
        model.zero_grad()
        loss, n, _ = objective.loss(model, batch)
        loss.backward()
        results.append((loss.detach(), n, [p.grad.clone() for p in model.parameters()]))
    (full, n_full, g_full), (chunked, n_chunked, g_chunked) = results
    assert n_full == n_chunked == 3 * 19  # one document boundary per row is not scored
    torch.testing.assert_close(chunked, full, rtol=1e-6, atol=1e-4)
    for a, b in zip(g_full, g_chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
