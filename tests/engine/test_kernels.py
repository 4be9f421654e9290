"""The fast engine's fused Triton kernels against the plain PyTorch ops, on CPU through Triton's interpreter."""

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first kernel is built; a CUDA run may set it to 0
pytest.importorskip("triton")

from test_fast import as_turns, run, scenario  # noqa: E402

from tiny_models import make_decisive, tiny_model  # noqa: E402
from videollm_online.engine import EngineConfig, StreamSession, reference_stream  # noqa: E402
from videollm_online.engine.batch import BatchEngine  # noqa: E402
from videollm_online.engine.kernels import FusedOps, TorchOps, fused_available, visible_keys  # noqa: E402
from videollm_online.engine.static import SlotBackend, StaticKV  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() and os.environ["TRITON_INTERPRET"] != "1" else "cpu")
pytestmark = pytest.mark.skipif(not fused_available(DEVICE), reason="Triton cannot run here")


def ops_pair(hidden_act: str = "silu", rows: int = 1, attention_programs: int | None = None):
    act = torch.nn.SiLU() if hidden_act == "silu" else torch.nn.GELU()
    return TorchOps(1e-5, act), FusedOps(
        1e-5, act, hidden_act, rows_per_program=rows, attention_programs=attention_programs
    )


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("with_delta", [False, True])
@pytest.mark.parametrize("width", [48, 64])  # the kernel's block is a power of two: 48 leaves masked lanes
def test_add_rms_norm(dtype, tolerance, with_delta, width):
    plain, fused = ops_pair()
    x, delta, weight = randn(2, 3, width, dtype=dtype), randn(2, 3, width, dtype=dtype, seed=1), randn(width, seed=2)
    expected_x, expected = plain.add_rms_norm(x.clone(), delta if with_delta else None, weight.to(dtype))
    x_fused = x.clone()
    got_x, got = fused.add_rms_norm(x_fused, delta if with_delta else None, weight.to(dtype))
    assert got_x.data_ptr() == x_fused.data_ptr()  # the residual is updated in place
    torch.testing.assert_close(got_x, expected_x, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(got, expected, atol=tolerance * 4, rtol=tolerance * 4)
    assert not torch.equal(got, x)  # it normalised something


def test_rope_and_cache_write_q_k_and_v_where_the_torch_ops_do():
    plain, fused = ops_pair()
    batch, steps, heads, kv_heads, head_dim, slots, length = 2, 3, 4, 2, 8, 3, 40
    qkv = randn(batch, steps, (heads + 2 * kv_heads) * head_dim)
    angles = torch.arange(length + 1, dtype=torch.float32)[:, None] * torch.linspace(0.1, 1.0, head_dim)[None]
    cos, sin = angles.cos().to(DEVICE), angles.sin().to(DEVICE)
    positions = torch.tensor([[5, 6, 7], [30, 31, 32]], device=DEVICE)
    results = []
    for ops in (plain, fused):
        k_cache = torch.zeros(slots, kv_heads, length, head_dim, device=DEVICE)
        v_cache = torch.zeros_like(k_cache)
        q = ops.rope_and_cache(qkv, ops.rope_tables(cos, sin, positions), k_cache, v_cache, heads, kv_heads, 0.25)
        results.append((q, k_cache, v_cache))
    (q, k, v), (fq, fk, fv) = results
    assert fq.shape == q.shape == (batch, kv_heads, 2 * steps, head_dim)
    torch.testing.assert_close(fq, q)
    torch.testing.assert_close(fk, k)
    torch.testing.assert_close(fv, v)
    assert k[:, :, positions[0]].abs().sum() > 0 and k[2].abs().sum() == 0  # written at the positions, slot 2 untouched


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("span,rows", [(2100, 1), (2100, 16), (17000, 1)])  # one block a row; blocks, two passes
def test_masked_softmax_reads_the_mask_off_the_positions(dtype, tolerance, span, rows):
    plain, fused = ops_pair(rows=rows)
    batch, kv_heads, group, steps = 2, 2, 2, 3
    positions = torch.tensor([[1030, 1031, 1032], [0, 1, 2]], device=DEVICE)
    scores = randn(batch, kv_heads, group * steps, span, dtype=dtype) * 4
    hidden = ~visible_keys(positions, group, span)
    expected = plain.masked_softmax_(scores.clone(), hidden, positions)
    got = fused.masked_softmax_(scores.clone(), None, positions)
    torch.testing.assert_close(got.float(), expected.float(), atol=tolerance, rtol=0)
    assert got[1, 0, 0, 2:].abs().sum() == 0 and got[1, 0, 0, :2].float().sum().item() == pytest.approx(1, abs=1e-2)


def test_silu_mul_and_other_activations():
    plain, fused = ops_pair()
    gate_up = randn(2, 3, 2 * 1500)  # two of the kernel's blocks, the second partly masked
    torch.testing.assert_close(fused.act_mul(gate_up), plain.act_mul(gate_up))
    plain_gelu, fused_gelu = ops_pair("gelu")  # no fused kernel: the torch ops
    torch.testing.assert_close(fused_gelu.act_mul(gate_up), plain_gelu.act_mul(gate_up))


def test_fused_engine_equals_reference():
    model, template = tiny_model()
    model.to(DEVICE)
    make_decisive(model, template, seed=11)
    frames, times, queries = scenario(model, 11, num_frames=16, num_queries=1)
    frames = frames.to(DEVICE)
    config = EngineConfig(threshold=0.6, max_new_tokens=6)
    static = StaticKV(model, template.ids.silence, max_tokens=4096, fused_kernels=True, cuda_graphs=False)
    assert static.ops.fused
    events = run(StreamSession(model, template, config, backend=SlotBackend(static, 0)), frames, times, queries)
    expected = reference_stream(model, template, frames, times, queries, threshold=0.6, max_new_tokens=6)
    assert as_turns(events, template) == expected
    assert sum(e.role == "assistant" for e in events) > len(queries)


def test_fused_batch_of_sessions_equals_unfused():
    """Several sessions at different positions in one forward (the fused softmax's per-row mask), and the
    many-queries path (a multi-frame feed) through the same kernels."""
    model, template = tiny_model()
    model.to(DEVICE)
    make_decisive(model, template, seed=3)
    outcomes = []
    for fused in (False, True):
        engine = BatchEngine(model, template, max_sessions=4, max_tokens=1024, cuda_graphs=False, fused_kernels=fused)
        sessions = [engine.open(EngineConfig(threshold=0.5, max_new_tokens=4)) for _ in range(3)]
        frames = scenario(model, 3, num_frames=12)[0].to(DEVICE)
        for index in range(len(frames)):
            for number, session in enumerate(sessions):
                if index >= 3 * number:  # sessions start later and later: different lengths in one batch
                    engine.submit_frame(session, index / 2, frames[(index + number) % len(frames)])
            while engine.busy():
                engine.step()
        ahead = engine.open(EngineConfig(threshold=0.5, max_new_tokens=4))
        ahead_events = ahead.push_frames([i / 2 for i in range(8)], frames[:8], ahead=4)
        outcomes.append(([as_turns(s.events, template) for s in sessions], as_turns(ahead_events, template)))
    assert outcomes[1] == outcomes[0]
    assert any(turns for turns in outcomes[0][0])


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("head_dim,span", [(8, 100), (32, 200)])  # padded to tl.dot's 16; several key chunks
def test_decode_attention_splits_the_keys_and_combines_them(dtype, tolerance, head_dim, span):
    plain, fused = ops_pair(attention_programs=8)  # 2 chunks of the keys for each (session, kv head)
    batch, kv_heads, group, steps, slots = 2, 2, 2, 3, 3
    # Session 1 sees only its first keys: its later chunks see nothing and must weigh nothing in the combine.
    positions = torch.tensor([[span - 3, span - 2, span - 1], [0, 1, 2]], device=DEVICE)
    q = randn(batch, kv_heads, group * steps, head_dim, dtype=dtype)
    k_cache = randn(slots, kv_heads, span + 40, head_dim, dtype=dtype, seed=1)
    v_cache = randn(slots, kv_heads, span + 40, head_dim, dtype=dtype, seed=2)
    keys, values = k_cache[:batch, :, :span], v_cache[:batch, :, :span]  # views into the cache, as the engine has
    hidden = ~visible_keys(positions, group, span)
    # The truth in float32: in bf16 the torch ops round the scores to bf16, the kernel keeps them in float32.
    expected = plain.decode_attention(q.float(), keys.float(), values.float(), hidden, positions)
    got = fused.decode_attention(q, keys, values, None, positions)
    assert got.shape == expected.shape == q.shape and got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=tolerance)
    if dtype == torch.bfloat16:  # no worse than the torch ops in the same dtype
        plain_error = (plain.decode_attention(q, keys, values, hidden, positions).float() - expected).abs().max()
        assert (got.float() - expected).abs().max() <= plain_error * 1.1
    # the query of step 0 in session 1 sees key 0 alone: its output is that key's value
    torch.testing.assert_close(got[1, :, 0].float(), values[1, :, 0].float(), atol=tolerance, rtol=0)
