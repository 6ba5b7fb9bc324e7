"""``Objective.flops`` (the trainer's MFU) against every matmul PyTorch's own FLOP counter sees in a training step."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lmlab.config import load_config
from lmlab.data import Sampler, TokenDataset
from lmlab.model import build_model
from lmlab.objectives import build_objective, objective_tokenizer
from lmlab.tokenizer import Tokenizer
from lmlab.train.trainer import prepare_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(shards, preset, objective, model=None, **options):
    cfg = load_config(None, {"preset": preset, "model": model or {}, "data": {"path": str(shards), "seq_len": 32},
                             "objective": {"name": objective, **options}})
    tokenizer = Tokenizer.load(shards / "tokenizer.json")
    data = TokenDataset.open(shards, "train", tokenizer)
    tokenizer = objective_tokenizer(cfg, tokenizer)  # FIM and UL2 add their special tokens
    cfg = prepare_config(cfg, tokenizer)
    obj = build_objective(cfg, tokenizer)
    torch.manual_seed(0)
    net = build_model(cfg.model)
    obj.attach(net)
    return obj, net, Sampler(data, 32 + obj.extra_tokens, 4, torch.Generator().manual_seed(0))


def _counted(objective, model, batch) -> int:
    """Every matmul of the forward and backward pass, counted by ``FlopCounterMode``; attention through SDPA's
    math backend, whose products it sees (the fused CPU kernel is not counted)."""
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        loss, _, _ = objective.loss(model, batch)
        loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("preset, objective, options", [
    ("gpt2-tiny", "clm", {}),
    ("llama-tiny", "clm", {}),  # grouped-query attention, gated MLP, untied head
    ("bert-tiny", "mlm", {}),  # the head (transform + projection) at the masked positions only
    ("gpt2-tiny", "fim", {}),
    ("gpt2-tiny", "prefix_lm", {}),
    ("t5-tiny", "span", {}),  # cross-attention keys and values are projected at the encoder's positions
    ("llama-tiny", "span", {}),
    ("t5-tiny", "bart", {}),
    ("t5-tiny", "ul2", {}),  # encoder and decoder lengths change with the denoiser drawn
    ("gpt2-tiny", "ul2", {}),
    ("bert-tiny", "electra", {"model": {"lm_head": False, "mlm_transform": False}}),  # + generator, binary head
])
def test_flops_count_every_matmul_of_the_step(sentinel_shards, preset, objective, options):
    obj, model, sampler = _setup(sentinel_shards, preset, objective, **options)
    g = torch.Generator().manual_seed(0)
    shapes = set()
    for _ in range(6):
        batch = obj.make_batch(*sampler.sample(), g)
        shapes.add((batch.input_ids.shape, None if batch.decoder_input_ids is None else batch.decoder_input_ids.shape))
        assert obj.flops(model, batch) == pytest.approx(_counted(obj, model, batch), rel=1e-9)
    if objective == "ul2" and preset == "t5-tiny":
        assert len(shapes) > 1  # the check saw denoisers of different lengths
