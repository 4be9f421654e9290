"""Quantised weights (`engine.quant`): the quantise / dequantise math against a float reference, the weight-only
Triton kernel (under Triton's interpreter on CPU) and its float fallback against float matmuls, and a tiny model
whose fast engine runs on FP8 / int8 weights reading close to its float one."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first kernel is built (at collection); CUDA runs set 0

import pytest
import torch

from tiny_models import make_decisive, random_frames, tiny_model
from videollm_online.engine import EngineConfig, StreamSession, kernels
from videollm_online.engine.backend import Feed
from videollm_online.engine.quant import (
    CONFIGS,
    FP8,
    FP8_MAX,
    INTERPRETER_CONFIG,
    QuantLinear,
    config_dict,
    dequantize,
    quantize_fp8,
    quantize_int8,
    split_counters,
    weight_only_matmul,
)
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
    back = dequantize(q, scale).double()
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
    assert scale[0].item() == 1.0 and torch.equal(dequantize(q, scale)[0], torch.zeros(3))
    torch.testing.assert_close(dequantize(q, scale)[1], x[1])  # exactly representable after scaling
    assert torch.equal(torch.sign(dequantize(q, scale)), torch.sign(x))


def test_int8_rounds_to_nearest_with_127_at_each_rows_peak():
    x = fresh(64, 200, seed=7)
    q, scale = quantize_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (64, 1)
    assert torch.equal(q.abs().amax(dim=-1), torch.full((64,), 127, dtype=torch.int8))
    assert q.min() >= -127  # symmetric: -128 never appears
    back = dequantize(q, scale).double()
    assert ((back - x).abs() <= scale.double() * 0.5 * (1 + 1e-5) + 1e-30).all()  # half a step at most


@pytest.mark.parametrize("weights", ["fp8", "int8"])
def test_the_float_fallback_is_close_to_the_float_matmul(weights):
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(96, 128, generator=generator) * 0.05
    bias = torch.randn(96, generator=generator)
    x = torch.randn(2, 11, 128, generator=generator)
    layer = QuantLinear(weight, bias, weights, use_kernel=False)
    assert layer.weight.dtype == (FP8 if weights == "fp8" else torch.int8)
    assert layer.nbytes <= weight.numel() * 1.1  # a byte a weight, and the scales
    out = layer(x)
    reference = x.double() @ weight.double().T
    error = ((out.double() - bias.double()) - reference).norm() / reference.norm()
    # weight-only: e4m3 rounding (~2.5 % RMS on Gaussian data), int8 finer (a step of max/127)
    assert (0.005 < error < 0.04) if weights == "fp8" else (0.001 < error < 0.015)
    assert out.shape == (2, 11, 96) and out.dtype == x.dtype


def _interpreted(function, *args, **kwargs):
    """Run a kernel call under Triton's interpreter (set at this module's import, before any kernel is built)."""
    if not kernels.interpreting():
        pytest.skip("TRITON_INTERPRET=0 here (a CUDA run): the interpreter tests are for CPU")
    return function(*args, **kwargs)


# M, N, K: M not a multiple of the row block; N and K not multiples of the tiles (wrapped rows, masked K tail)
SHAPES = [(1, 16, 32), (11, 48, 80), (17, 40, 96), (3, 24, 200)]
TILES = [
    {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SWAP": 0},
    {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64, "SWAP": 1},
    {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SWAP": 0, "SPLIT_K": 2},
    {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SWAP": 1, "SPLIT_K": 4},
]


@pytest.mark.skipif(not kernels.triton_available(), reason="needs Triton")
@pytest.mark.parametrize("weights", ["fp8", "int8"])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_kernel_computes_the_dequantised_product(weights, with_bias, dtype):
    generator = torch.Generator().manual_seed(8)
    for (rows, n, k), tiles in zip(SHAPES * 2, TILES * 2):
        weight = torch.randn(n, k, generator=generator) * 0.05
        bias = torch.randn(n, generator=generator).to(dtype) if with_bias else None
        x = torch.randn(rows, k, generator=generator).to(dtype)
        q, scale = (quantize_fp8 if weights == "fp8" else quantize_int8)(weight)
        out = _interpreted(weight_only_matmul, x, q, scale.reshape(-1), bias, config=tiles)
        assert out.shape == (rows, n) and out.dtype == dtype
        exact = x.double() @ dequantize(q, scale).double().T + (0 if bias is None else bias.double())
        error = (out.double() - exact).norm() / exact.norm()
        assert error < (1e-6 if dtype == torch.float32 else 6e-3), (rows, n, k, tiles)  # bf16: the output rounding


@pytest.mark.skipif(not kernels.triton_available(), reason="needs Triton")
@pytest.mark.parametrize("rows, n, k", [(11, 48, 200), (1, 40, 96), (32, 24, 64)])
def test_split_k_adds_the_partial_sums_in_order_and_leaves_the_counters_at_zero(rows, n, k):
    generator = torch.Generator().manual_seed(10)
    weight, bias = torch.randn(n, k, generator=generator) * 0.05, torch.randn(n, generator=generator)
    x = torch.randn(rows, k, generator=generator)
    q, scale = quantize_fp8(weight)
    counters = split_counters(n, "cpu")
    whole = _interpreted(weight_only_matmul, x, q, scale.reshape(-1), bias, config=INTERPRETER_CONFIG)
    for split in (2, 3, 8):  # 8 splits of 200 / 32 = 7 K tiles: one split with nothing to add
        config = {**INTERPRETER_CONFIG, "SPLIT_K": split}
        first = _interpreted(weight_only_matmul, x, q, scale.reshape(-1), bias, config=config, counters=counters)
        assert torch.equal(counters, torch.zeros_like(counters))  # ready for the next call
        again = _interpreted(weight_only_matmul, x, q, scale.reshape(-1), bias, config=config, counters=counters)
        assert torch.equal(first, again)  # the same order of additions each call
        torch.testing.assert_close(first, whole, atol=1e-5, rtol=1e-5)  # float32 sums, in another order
    with pytest.raises(ValueError, match="SPLIT_K"):
        weight_only_matmul(torch.randn(33, k), q, scale.reshape(-1), config={**INTERPRETER_CONFIG, "SPLIT_K": 2})


@pytest.mark.skipif(not kernels.triton_available(), reason="needs Triton")
def test_the_quantised_linear_uses_the_kernel_under_the_interpreter_and_agrees_with_the_fallback():
    generator = torch.Generator().manual_seed(9)
    weight, bias = torch.randn(40, 72, generator=generator) * 0.05, torch.randn(40, generator=generator)
    x = torch.randn(2, 5, 72, generator=generator)
    kernel = _interpreted(QuantLinear, weight, bias, "int8")
    assert kernel.use_kernel
    out = _interpreted(kernel, x)
    fallback = QuantLinear(weight, bias, "int8", use_kernel=False)(x)
    torch.testing.assert_close(out, fallback, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weights", ["fp8", "int8"])
def test_tiny_model_on_quantised_weights_reads_close_to_float(weights):
    model, template = tiny_model()
    make_decisive(model, template, seed=4)
    frames = random_frames(12, model, seed=4)
    ids = template.encode(template.system_text() + template.STREAM_PROMPT)
    readings = {}
    for kind in (None, weights):
        static = StaticKV(model, template.ids.silence, max_tokens=1024, weights=kind)
        backend = SlotBackend(static, 0)
        results = backend.feed([Feed(ids, frames[0])])
        results += backend.feed([Feed([template.ids.interval], frame) for frame in frames[1:]])
        readings[kind] = torch.tensor([r.silence for r in results]), [r.token for r in results]
    assert isinstance(static.layers[0].qkv, QuantLinear) and isinstance(static.lm_head, torch.Tensor)
    assert static.layers[0].qkv.format == weights
    silence, tokens = readings[weights]
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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("weights", ["fp8", "int8"])
def test_the_cuda_kernel_computes_what_the_dequantised_path_does(weights):
    if weights == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability 8.9")
    generator = torch.Generator(device="cuda").manual_seed(6)
    for rows, n, k in [(11, 256, 512), (176, 320, 1000), (1, 100, 4096)]:
        weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=generator) * 0.02
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16, generator=generator)
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16, generator=generator)
        layer = QuantLinear(weight, bias, weights)
        assert layer.use_kernel
        out = layer(x).float()
        layer.use_kernel = False
        reference = layer(x).float()
        assert ((out - reference).norm() / reference.norm()) < 1e-2  # the same products, bf16 output rounding apart


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("weights", ["fp8", "int8"])
def test_every_candidate_tile_config_computes_the_product_on_cuda(weights):
    """Each config the autotuner may pick, at a row count of its bucket, not only the one it picked for a shape: on a
    small shape and on Llama-3-8B's gate_up (where an H200 once gave a wrong int8 product at 176 rows)."""
    if weights == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability 8.9")
    generator = torch.Generator(device="cuda").manual_seed(12)
    for n, k in [(640, 1536), (28672, 4096)]:
        weight = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=generator) * 0.02
        q, scale = (quantize_fp8 if weights == "fp8" else quantize_int8)(weight)
        scale = scale.reshape(-1)
        dequantised = dequantize(q, scale[:, None]).double()
        for bucket, configs in CONFIGS.items():
            rows = {16: 11, 32: 27, 64: 50, 128: 176}[bucket]
            x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16, generator=generator)
            exact = x.double() @ dequantised.T
            for candidate in configs:
                out = weight_only_matmul(x, q, scale, config=config_dict(candidate))
                error = ((out.double() - exact).norm() / exact.norm()).item()
                assert error < 1e-2, (n, k, candidate, error)  # the output's bf16 rounding
