"""Weight-only int8: the rounding, the product against a float64 reference on both paths (PyTorch's kernel and
dequantize-then-GEMM), and a quantized model (a tied head shares its int8 matrix, a quarter of the bytes, logits
near float32's, greedy tokens from the cache equal to its own uncached loop)."""

from __future__ import annotations

import pytest
import torch

from lmlab.config import model_preset
from lmlab.infer import generate
from lmlab.model import build_model
from lmlab.model.layers import Linear
from lmlab.model.quant import FBGEMM, KERNEL_ROWS, Int8Embedding, int8_linear, quantize_int8, quantize_rows

V = 96


def test_rows_round_to_the_nearest_step_of_a_bf16_scale():
    w = torch.randn(40, 48, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 40)[:, None]
    w[3] = 0.0  # a zero row keeps a positive scale
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.bfloat16 and bool((scale > 0).all())
    assert int(q.abs().max()) <= 127 and bool((q.abs().amax(1)[torch.arange(40) != 3] >= 126).all())
    step = scale.double()[:, None]
    assert bool(((q.double() * step - w.double()).abs() <= step / 2 + 1e-12).all())


@pytest.mark.parametrize("rows, width", [(1, 64), (7, 64), (KERNEL_ROWS, 96), (KERNEL_ROWS + 1, 64), (3, 40)])
def test_the_product_matches_float64_on_both_paths(rows, width):
    """Few rows of a width the kernel takes (a multiple of 16) go through torch._weight_int8pack_mm; more rows,
    or another width, through one bf16 GEMM on the dequantized weight: both are the float64 product of the
    dequantized weight within bf16 rounding, bias added, leading dimensions kept."""
    g = torch.Generator().manual_seed(rows)
    q, scale = quantize_rows(torch.randn(72, width, generator=g))
    x, bias = torch.randn(1, rows, width, generator=g), torch.randn(72, generator=g)
    reference = x.double().to(torch.bfloat16).double() @ (q.double() * scale.double()[:, None]).T + bias.double()
    y = int8_linear(x, q, scale, bias)
    assert y.shape == (1, rows, 72) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), reference, rtol=2e-2, atol=2e-2 * float(reference.abs().max()))


@pytest.mark.skipif(not FBGEMM, reason="fbgemm's int8 GEMM is built for x86 CPUs only")
@pytest.mark.parametrize("rows", [1, 5, 100])
def test_the_dynamic_product_matches_float64(rows):
    """int8-dynamic's product (fbgemm, as torch.ao's dynamic quantization): the float64 product of the
    dequantized weight, within the rounding of activations to 7 bits with one scale, bias added."""
    g = torch.Generator().manual_seed(rows)
    layer = Linear(64, 72)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(72, 64, generator=g))
        layer.bias.copy_(torch.randn(72, generator=g))
    q, scale = quantize_rows(layer.weight)
    model = torch.nn.Module()
    model.embed, model.layer = torch.nn.Embedding(4, 64), layer
    quantize_int8(model, dynamic=True)
    assert layer.packed is not None and layer.weight.shape == (72, 64) and layer.weight.dtype == torch.int8
    x = torch.randn(rows, 64, generator=g)
    reference = x.double() @ (q.double() * scale.double()[:, None]).T + layer.bias.double()
    y = layer(x)
    step = float(x.abs().max()) / 63  # an activation's rounding: half a step of 7 bits over its range
    assert float((y.double() - reference).abs().max()) < 64 * step / 2 * float(scale.max()) * 127
    torch.testing.assert_close(y.double(), reference, rtol=0.05, atol=0.03 * float(reference.abs().max()))


@pytest.mark.parametrize("quantize", ["int8", "int8-dynamic"])
@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny", "t5-tiny", "bert-tiny"])
def test_a_quantized_model(name, quantize):
    """Every Linear weight and the token embedding become int8 (a tied head and embedding still one matrix),
    each about a quarter of its float32 bytes; the logits stay near float32's, and cached greedy decoding equals the
    quantized model's own uncached loop. int8-dynamic packs the Linear weights for fbgemm (but a tied head)."""
    if quantize == "int8-dynamic" and not FBGEMM:
        pytest.skip("fbgemm's int8 GEMM is built for x86 CPUs only")
    torch.manual_seed(0)
    full = build_model(model_preset(name, vocab_size=V)).eval()
    torch.manual_seed(0)
    quant = build_model(model_preset(name, vocab_size=V)).for_inference(quantize=quantize)
    assert isinstance(quant.embed, Int8Embedding)
    tied = full.head is not None and full.head.proj.weight is full.embed.weight
    if tied:
        assert quant.head.proj.weight is quant.embed.weight
    linears = [m for m in quant.modules() if isinstance(m, Linear)]
    assert linears and all(m.weight.dtype == torch.int8 for m in linears)
    packed = [m for m in linears if m.packed is not None]
    assert all(m.scale.shape == (m.out_features,) for m in linears if m.packed is None)
    assert len(packed) == (len(linears) - tied if quantize == "int8-dynamic" else 0)
    float_bytes = sum(p.numel() * 4 for p in set(full.parameters()))
    held = sum(t.numel() * t.element_size() for t in {*quant.parameters(), *quant.buffers()})
    int8 = sum(p.numel() for p in set(quant.parameters()) if p.dtype == torch.int8)
    assert int8 > 0.5 * float_bytes / 4 and held <= float_bytes - 0.74 * 4 * int8  # each at most 26% of its bytes
    ids = torch.randint(1, V - 1, (2, 9), generator=torch.Generator().manual_seed(1))
    extra = {"decoder_input_ids": ids} if full.config.arch == "encoder-decoder" else {}
    with torch.no_grad():
        a, b = full(ids, **extra).logits, quant(ids, **extra).logits
    assert float((a - b).abs().max()) < 0.03 * float(a.abs().max())  # (bf16 weights: 0.3-0.8%; int8 0.6-1.2%)
    if full.config.arch == "encoder":
        return
    kw = dict(max_new_tokens=8, decoder_start_token_id=0)
    out = generate(quant, ids, **kw)
    x = ids if full.config.arch == "decoder" else torch.zeros(2, 1, dtype=torch.long)
    for _ in range(8):  # the uncached reference, on the same quantized weights
        with torch.no_grad():
            logits = quant(x).logits if full.config.arch == "decoder" else quant(ids, decoder_input_ids=x).logits
        x = torch.cat([x, logits[:, -1].argmax(-1, keepdim=True)], 1)
    if quantize == "int8":
        assert torch.equal(out, x)
    else:  # one activation scale per call: a cached step (one position) rounds differently from the whole sequence
        new = out.shape[1] - 8
        assert torch.equal(out[:, :new + 1], x[:, :new + 1]) and float((out == x).float().mean()) >= 0.5


def test_quantized_weights_are_not_trained():
    from lmlab.model.quant import quantize_int8

    model = build_model(model_preset("gpt2-tiny", vocab_size=V))
    quantize_int8(model.eval())
    assert not any(p.requires_grad for p in model.parameters() if p.dtype == torch.int8)
    with pytest.raises(ValueError, match="quantize must be one of int8"):
        build_model(model_preset("gpt2-tiny", vocab_size=V)).for_inference(quantize="int4")


@pytest.mark.parametrize("source", ["lmlab", "hf"])
@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_a_checkpoint_loaded_quantized_is_the_model_quantized(tmp_path, tokenizer, name, source):
    """load_model(quantize="int8") builds the model on the meta device and gives it the file's tensors (a tied
    head tied again, the rotary frequencies recomputed; from a Hugging Face directory, its fused and transposed
    tensors too): its logits are exactly those of the model loaded as usual, then quantized."""
    from lmlab.interop import load_hf, save_hf
    from lmlab.train.checkpoint import load_model, load_weights, read_model_config, save_model_dir

    torch.manual_seed(0)
    model = build_model(model_preset(name, vocab_size=tokenizer.vocab_size))
    if source == "hf":
        save_hf(model, tokenizer, tmp_path / "hf")
        reference, _ = load_hf(tmp_path / "hf")
        path = tmp_path / "hf"
    else:
        save_model_dir(tmp_path, model, tokenizer)
        reference = build_model(read_model_config(tmp_path))
        load_weights(reference, tmp_path)
        path = tmp_path
    reference.for_inference(quantize="int8")
    quant, _ = load_model(path, for_inference=True, quantize="int8")
    if name == "gpt2-tiny":
        assert quant.head.proj.weight is quant.embed.weight
    ids = torch.randint(1, tokenizer.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(quant(ids).logits, reference(ids).logits)
