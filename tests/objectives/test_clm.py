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
