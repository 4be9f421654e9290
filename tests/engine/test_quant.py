"""FP8 weights (`engine.quant`): the quantise / dequantise math against a float reference, the FP8 linear against a
float matmul, and a tiny model whose fast engine runs on FP8 weights reading close to its float one."""

import pytest
import torch

from tiny_models import make_decisive, random_frames, tiny_model
from videollm_online.engine import EngineConfig, StreamSession
from videollm_online.engine.backend import Feed
from videollm_online.engine.quant import FP8, FP8_MAX, Fp8Linear, dequantize_fp8, quantize_fp8
from videollm_online.engine.static import SlotBackend, StaticKV


def fresh(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    # rows of very different magnitudes, so a per-row scale matters
    return (
        torch.randn(*shape, generator=generator, dtype=torch.float64)
        * torch.logspace(-3, 2, shape[0], dtype=torch.float64)[:, None]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_row", [True, False])
def test_quantise_dequantise_is_within_e4m3_rounding(seed, per_row):
    x = fresh(64, 200, seed=seed)
    q, scale = quantize_fp8(x, per_row=per_row)
    assert q.dtype == FP8 and q.shape == x.shape and scale.dtype == torch.float32
    assert scale.shape == ((64, 1) if per_row else ())
    amax = x.abs().amax(dim=-1, keepdim=True) if per_row else x.abs().amax()
    torch.testing.assert_close(scale.double(), (amax / FP8_MAX).float().double())
    back = dequantize_fp8(q, scale).double()
    assert torch.isfinite(back).all()
    # e4m3 keeps 3 mantissa bits: a normal value is off by at most half a step, 2^-4 of its magnitude; below 2^-6
    # (subnormal) steps are 2^-9, so at most 2^-10 of the scale. The float32 division adds a few ulps.
    bound = torch.maximum(x.abs() * 2**-4, scale.double().expand_as(x) * 2**-10) * (1 + 1e-5) + 1e-30
    assert ((back - x).abs() <= bound).all()
    # the largest value of each row (per-row) or of the tensor lands on 448 exactly
    peaks = x.abs() == amax
    assert torch.equal(q.float().abs()[peaks], torch.full_like(q.float().abs()[peaks], FP8_MAX))
    # and the rounding is round-to-nearest: never further than the next representable value
    rel = ((back - x).abs() / x.abs().clamp(min=1e-300))[x.abs() / scale.double() >= 2**-6]
    assert rel.max() <= 2**-4 * (1 + 1e-5) and rel.mean() < 0.04


def test_zero_rows_and_signs():
    x = torch.tensor([[0.0, 0.0, 0.0], [-3.0, 1.5, 0.75], [1e-8, -2e-8, 4e-8]])
    q, scale = quantize_fp8(x)
    assert scale[0].item() == 1.0 and torch.equal(dequantize_fp8(q, scale)[0], torch.zeros(3))
    torch.testing.assert_close(dequantize_fp8(q, scale)[1], x[1])  # exactly representable after scaling
    assert torch.equal(torch.sign(dequantize_fp8(q, scale)), torch.sign(x))


@pytest.mark.parametrize("per_channel", [True, False])
def test_fp8_linear_is_close_to_the_float_matmul(per_channel):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(96, 128, generator=generator) * 0.05
    bias = torch.randn(96, generator=generator)
    x = torch.randn(2, 11, 128, generator=generator)
    layer = Fp8Linear(weight, bias, per_channel=per_channel)
    assert not layer.fast and layer.weight.dtype == FP8
    assert layer.nbytes <= weight.numel() * 1.1  # a byte a weight, and the scales
    out = layer(x)
    reference = x.double() @ weight.double().T
    error = ((out.double() - bias.double()) - reference).norm() / reference.norm()
    # both operands rounded to e4m3 (relative RMS error ~2.5 % each on Gaussian data): a few percent, no more
    assert 0.005 < error < 0.06
    assert out.shape == (2, 11, 96) and out.dtype == x.dtype


def test_tiny_model_on_fp8_weights_reads_close_to_float():
    model, template = tiny_model()
    make_decisive(model, template, seed=4)
    frames = random_frames(12, model, seed=4)
    ids = template.encode(template.system_text() + template.STREAM_PROMPT)
    readings = {}
    for weights in (None, "fp8"):
        static = StaticKV(model, template.ids.silence, max_tokens=1024, weights=weights)
        backend = SlotBackend(static, 0)
        results = backend.feed([Feed(ids, frames[0])])
        results += backend.feed([Feed([template.ids.interval], frame) for frame in frames[1:]])
        readings[weights] = torch.tensor([r.silence for r in results]), [r.token for r in results]
    assert isinstance(static.layers[0].qkv, Fp8Linear) and isinstance(static.lm_head, torch.Tensor)
    silence, tokens = readings["fp8"]
    silence_float, tokens_float = readings[None]
    assert (silence - silence_float).abs().max() < 0.05
    assert (silence != silence_float).any()  # the weights did change
    assert sum(a == b for a, b in zip(tokens, tokens_float)) >= len(tokens) - 2


def test_a_session_on_fp8_weights_runs_and_unknown_formats_are_refused():
    model, template = tiny_model()
    static = StaticKV(model, template.ids.silence, max_tokens=1024, weights="fp8")
    session = StreamSession(model, template, EngineConfig(threshold=0.0), backend=SlotBackend(static, 0))
    frames = random_frames(20, model, seed=5)
    assert session.push_frames([i / 2 for i in range(20)], frames, ahead=8) == []
    assert session.num_frames == 20
    with pytest.raises(Exception, match="unknown weight format"):
        StaticKV(model, template.ids.silence, max_tokens=64, weights="int3")


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9), reason="needs a GPU with FP8 matmuls"
)
def test_the_scaled_mm_path_computes_what_the_dequantised_path_does():
    generator = torch.Generator(device="cuda").manual_seed(6)
    weight = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16, generator=generator) * 0.02
    x = torch.randn(11, 512, device="cuda", dtype=torch.bfloat16, generator=generator)
    layer = Fp8Linear(weight)
    assert layer.fast
    out = layer(x).float()
    layer.fast = False
    reference = layer(x).float()
    assert ((out - reference).norm() / reference.norm()) < 1e-2  # the same products, bf16 output rounding apart
