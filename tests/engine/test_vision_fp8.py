"""FP8 vision encoder (`engine.vision_fp8`): the fused row quantisation (Triton under its interpreter on CPU) against
the torch ops, the quantised numbers against a float reference, the FP8 layer against the tower's own layer, the
tower swap on SigLIP and CLIP, and the clear refusals (a convolutional tower, a CPU, an unknown activation)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first kernel is built; CUDA runs set 0

import pytest
import torch
import torch.nn as nn

from tiny_models import tiny_model
from videollm_online.engine import kernels
from videollm_online.engine.quant import FP8_MAX
from videollm_online.engine.vision_fp8 import (
    ACTIVATIONS,
    Fp8Encoder,
    Fp8Linear,
    encoder_owner,
    quantize_rows,
    quantize_rows_torch,
    quantize_vision_tower,
)
from videollm_online.utils.errors import UserError

interpreter = pytest.mark.skipif(
    not (kernels.interpreting() and kernels.triton_available()), reason="needs Triton's interpreter"
)


def rows(count: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # rows of very different magnitudes, and values across e4m3's subnormal range, so that both the per-row scale
    # and the rounding near powers of two (where the carry reaches the exponent) are exercised
    magnitudes = torch.logspace(-2, 2, count)[:, None]
    return torch.randn(count, width, generator=generator) * magnitudes * torch.rand(count, width, generator=generator)


def layer_norm(width: int, seed: int) -> nn.LayerNorm:
    generator = torch.Generator().manual_seed(seed)
    norm = nn.LayerNorm(width, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(0.5 + torch.rand(width, generator=generator))
        norm.bias.copy_(torch.randn(width, generator=generator))
    return norm


@interpreter
@pytest.mark.parametrize("width", [96, 128])
@pytest.mark.parametrize("fused_op", ["none", "norm", *ACTIVATIONS])
def test_the_kernel_quantises_as_the_torch_ops_do(fused_op, width):
    x = rows(37, width, seed=width)
    kwargs = {"norm": layer_norm(width, 1)} if fused_op == "norm" else {}
    if fused_op in ACTIVATIONS:
        kwargs["activation"] = fused_op
    q_ref, scale_ref = quantize_rows_torch(x, **kwargs)
    q, scale = quantize_rows(x, fused=True, **kwargs)
    assert q.dtype == q_ref.dtype == torch.float8_e4m3fn and q.shape == x.shape and scale.shape == (37, 1)
    torch.testing.assert_close(scale, scale_ref, rtol=1e-6, atol=0)
    # The same e4m3 codes: round to nearest even on both sides. The erf GELU may differ by one step where libm's
    # erf and torch's differ in the last bit at a tie.
    differ = q.view(torch.uint8) != q_ref.view(torch.uint8)
    assert differ.sum() <= (0 if fused_op != "gelu" else 4), differ.sum()


@pytest.mark.parametrize("fused_op", ["none", "norm", "gelu_pytorch_tanh"])
def test_quantised_rows_are_within_e4m3_rounding_of_the_float_result(fused_op):
    x = rows(24, 64, seed=3)
    if fused_op == "norm":
        norm = layer_norm(64, 2)
        expected = norm(x).double()
        q, scale = quantize_rows_torch(x, norm=norm)
    elif fused_op == "none":
        expected = x.double()
        q, scale = quantize_rows_torch(x)
    else:
        expected = torch.nn.functional.gelu(x.double(), approximate="tanh")
        q, scale = quantize_rows_torch(x, activation=fused_op)
    assert torch.equal(q.float().abs().amax(dim=1), torch.full((24,), FP8_MAX))  # each row's peak lands on 448
    back = q.double() * scale.double()
    bound = torch.maximum(expected.abs() * 2**-4, scale.double() * 2**-10) * (1 + 1e-4) + 1e-12
    assert ((back - expected).abs() <= bound).all()


def test_an_fp8_linear_computes_the_float_product_within_the_rounding():
    generator = torch.Generator().manual_seed(4)
    linear = nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=generator) * 0.1)
        linear.bias.copy_(torch.randn(48, generator=generator))
    x = torch.randn(20, 64, generator=generator)
    fp8 = Fp8Linear(linear.weight.detach(), linear.bias.detach(), torch.float32)
    out = fp8(*quantize_rows_torch(x))
    expected = linear(x)
    error = (out - expected).norm() / expected.norm()
    assert 1e-4 < error < 0.04, error  # quantised (not the float product), and close to it


@pytest.mark.parametrize("vision", ["siglip", "clip"])  # tanh GELU, quick GELU
def test_the_fp8_tower_encodes_frames_close_to_the_towers_own(vision):
    model, _ = tiny_model(vision=vision)
    resolution = model.config.frame_resolution
    pixels = torch.randn(3, 3, resolution, resolution, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        before = model.encode_frames(pixels)
        assert quantize_vision_tower(model, check_device=False) == 2
        owner = encoder_owner(model.frame_encoder.vision_model)
        assert isinstance(owner.encoder, Fp8Encoder)
        after = model.encode_frames(pixels)
        assert quantize_vision_tower(model, check_device=False) == 2  # a second call leaves it as it is
    assert after.shape == before.shape
    error = (after - before).norm() / before.norm()
    assert 1e-5 < error < 0.05, error
    cosine = torch.nn.functional.cosine_similarity(after.flatten(1), before.flatten(1))
    assert (cosine > 0.998).all(), cosine
    # the encoder's weights are e4m3 now: the float q/k/v, out, fc1 and fc2 weights are gone
    dtypes = {buffer.dtype for name, buffer in owner.encoder.named_buffers() if name.endswith("weight")}
    assert dtypes == {torch.float8_e4m3fn}
    assert not any(name.endswith(("q_proj.weight", "fc1.weight")) for name, _ in owner.encoder.named_parameters())


def test_a_convolutional_tower_is_refused_in_one_line():
    model, _ = tiny_model(vision="resnet")
    with pytest.raises(UserError, match="transformer vision towers .* this model's is 'resnet'"):
        quantize_vision_tower(model, check_device=False)


def test_a_device_without_fp8_tensor_cores_is_refused():
    model, _ = tiny_model()
    with pytest.raises(UserError, match="needs a GPU with FP8 tensor cores .* this is cpu"):
        quantize_vision_tower(model)
    assert not isinstance(encoder_owner(model.frame_encoder.vision_model).encoder, Fp8Encoder)


def test_an_activation_the_kernel_does_not_know_is_refused():
    model, _ = tiny_model()
    model.frame_encoder.vision_model.config.hidden_act = "relu"
    with pytest.raises(UserError, match="knows the activations .* uses 'relu'"):
        quantize_vision_tower(model, check_device=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_fp8_tower_on_cuda_matches_its_cpu_reference_and_replays_as_a_graph():
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 GEMMs need compute capability 8.9+")
    from videollm_online.core.checkpoint import build_model
    from videollm_online.core.config import LiveConfig
    from videollm_online.engine.vision import FrameEncoderRunner

    vision = {
        "model_type": "siglip_vision_model",
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
    }
    llm = {
        "model_type": "llama",
        "vocab_size": 512,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    config = LiveConfig(llm_config=llm, vision_config=vision, frame_resolution=64)
    model, _ = build_model(config, dtype=torch.bfloat16, device="cuda")
    model.eval()
    pixels = torch.randn(5, 3, 64, 64, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        before = model.encode_frames(pixels).float()
        quantize_vision_tower(model)
        after = model.encode_frames(pixels).float()
        runner = FrameEncoderRunner(model)
        for _ in range(2):  # capture, then replay
            graphed, done = runner.encode(pixels)
            torch.cuda.current_stream().wait_event(done)
        eager = model.embed_frames(after.to(torch.bfloat16)).float()
    assert (after - before).norm() / before.norm() < 0.05
    torch.testing.assert_close(graphed.float(), eager, rtol=2e-2, atol=2e-2)  # the same kernels, as a graph
