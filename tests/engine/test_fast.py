"""The fast engine (static cache, batching, multi-frame guesses, bounded memory) against the reference loop."""

import random

import pytest
import torch

from tiny_models import make_decisive, random_frames, tiny_model
from videollm_online.engine import EngineConfig, StreamSession, reference_stream
from videollm_online.engine.batch import BatchEngine
from videollm_online.engine.quant import QuantRows
from videollm_online.engine.static import ContextFullError, MemoryPolicy, SlotBackend, StaticKV
from videollm_online.utils.errors import UserError


def as_turns(events, template):
    return [(e.video_time, e.role, e.token_ids if e.role == "assistant" else template.encode(e.text)) for e in events]


def scenario(model, seed, num_frames=120, num_queries=4):
    rng = random.Random(seed)
    frames = random_frames(num_frames, model, seed=seed)
    times = [i / 2 for i in range(num_frames)]
    queries = [(round(rng.uniform(-1, num_frames / 2 + 2), 2), f"question {i}?") for i in range(num_queries)]
    queries.append((times[rng.randrange(num_frames)], "exactly at a frame?"))
    return frames, times, queries


def fast_session(model, template, config, **options):
    static = StaticKV(model, template.ids.silence, **options)
    return StreamSession(model, template, config, backend=SlotBackend(static, 0))


def run(session, frames, times, queries, ahead=None):
    for query_time, text in queries:
        session.push_query(query_time, text)
    if ahead:
        events = session.push_frames(times, frames, ahead=ahead)
    else:
        events = [e for t, f in zip(times, frames) for e in session.push_frame(t, f)]
    return events + session.finish()


@pytest.mark.parametrize("llm,seed", [("llama", 0), ("llama", 1), ("qwen2", 2), ("mistral", 3)])
def test_static_cache_session_equals_reference(llm, seed):
    model, template = tiny_model(llm)
    make_decisive(model, template, seed=seed)
    frames, times, queries = scenario(model, seed)
    config = EngineConfig(threshold=0.6, max_new_tokens=10)
    events = run(fast_session(model, template, config, max_tokens=4096), frames, times, queries)
    expected = reference_stream(model, template, frames, times, queries, threshold=0.6, max_new_tokens=10)
    assert as_turns(events, template) == expected
    assert sum(e.role == "assistant" for e in events) > len(queries) + 3  # it talks on its own, too


def test_static_cache_v1_and_lora_merged():
    from videollm_online.core.checkpoint import add_lora

    model, template = tiny_model(frame_token_pooled=0, frame_num_tokens=1, frame_token_interval=None)
    make_decisive(model, template, seed=5)
    add_lora(model, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # a LoRA that changes the outputs (B starts at zero)
        for name, parameter in model.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.eval()
    frames, times, queries = scenario(model, 5, num_frames=60)
    config = EngineConfig(threshold=0.5, max_new_tokens=8)
    events = run(fast_session(model, template, config, max_tokens=2048), frames, times, queries)
    assert as_turns(events, template) == reference_stream(model, template, frames, times, queries, 0.5, 8)


def _weight_bytes(tensors) -> int:
    """Bytes of the distinct storages behind some tensors (a storage counted once, however many views)."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def _engine_weights(static):
    return [w for layer in static.layers for w in (layer.qkv, layer.o, layer.gate_up, layer.down)]


def test_the_engine_reads_the_models_own_weights_instead_of_a_copy():
    model, template = tiny_model()
    make_decisive(model, template, seed=3)
    ids = torch.tensor([template.encode(template.system_text() + template.STREAM_PROMPT)])
    with torch.no_grad():
        logits = model.base_llm(input_ids=ids).logits
    held = _weight_bytes(model.parameters())
    static = StaticKV(model, template.ids.silence, max_tokens=256)
    attention = model.base_llm.get_decoder().layers[0].self_attn
    assert attention.q_proj.weight.untyped_storage().data_ptr() == static.layers[0].qkv.untyped_storage().data_ptr()
    assert _weight_bytes([*model.parameters(), *_engine_weights(static)]) == held  # nothing held twice
    with torch.no_grad():  # the model itself still computes what it did
        assert torch.equal(model.base_llm(input_ids=ids).logits, logits)
    second = StaticKV(model, template.ids.silence, max_tokens=256)  # a second engine on the same model
    assert _weight_bytes([*model.parameters(), *_engine_weights(static), *_engine_weights(second)]) == held


def test_one_byte_weights_replace_the_models_own_and_are_held_once():
    """`weights="int8"` quantises the model's decoder linears in place: the float weights are freed, the model's own
    forward computes with the one-byte ones, and a second engine reuses them."""
    model, template = tiny_model()
    make_decisive(model, template, seed=3)
    ids = torch.tensor([template.encode(template.system_text() + template.STREAM_PROMPT)])
    with torch.no_grad():
        logits = model.base_llm(input_ids=ids).logits
    linears = [p for n, p in model.named_parameters() if n.startswith("llm.") and n.endswith("_proj.weight")]
    float_bytes = _weight_bytes(linears)
    held = _weight_bytes(model.parameters())
    quantised = StaticKV(model, template.ids.silence, max_tokens=256, weights="int8")
    attention = model.base_llm.get_decoder().layers[0].self_attn
    assert isinstance(attention.q_proj, QuantRows) and attention.q_proj.source.format == "int8"
    assert not any(n.startswith("llm.") and n.endswith("_proj.weight") for n, _ in model.named_parameters())
    engine = _engine_weights(quantised)
    one_byte = _weight_bytes([w.weight for w in engine])
    assert one_byte == float_bytes // 4  # float32 -> int8, every linear once (the model's and the engine's shared)
    assert _weight_bytes(model.parameters()) == held - float_bytes
    assert attention.q_proj._rows.weight.untyped_storage().data_ptr() == engine[0].weight.untyped_storage().data_ptr()
    with torch.no_grad():  # the model's own forward on the int8 weights: close to the float one, not equal
        quantised_logits = model.base_llm(input_ids=ids).logits
    assert not torch.equal(quantised_logits, logits)
    assert (quantised_logits - logits).norm() / logits.norm() < 0.05
    second = StaticKV(model, template.ids.silence, max_tokens=256, weights="int8")
    assert _weight_bytes([w.weight for w in _engine_weights(second)]) == one_byte
    assert {w.weight.untyped_storage().data_ptr() for w in _engine_weights(second)} <= {
        w.weight.untyped_storage().data_ptr() for w in engine
    }
    for other in (None, "fp8"):  # the float weights are gone, and another format would need them
        with pytest.raises(UserError, match="linear weights are int8 already .* --weights int8"):
            StaticKV(model, template.ids.silence, max_tokens=256, weights=other)


def test_an_unmerged_lora_keeps_the_models_weights_apart():
    from videollm_online.core.checkpoint import add_lora

    model, template = tiny_model()
    add_lora(model, r=4, alpha=8, dropout=0.0)
    with torch.no_grad():
        for name, parameter in model.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.eval()
    q_proj = model.base_llm.get_decoder().layers[0].self_attn.q_proj
    base = q_proj.base_layer.weight.detach().clone()
    static = StaticKV(model, template.ids.silence, max_tokens=256)
    assert torch.equal(q_proj.base_layer.weight, base)  # the base weight untouched: the engine's has the LoRA in
    assert not torch.equal(static.layers[0].qkv[: base.shape[0]], base)


@pytest.mark.parametrize("backend", ["hf", "static"])
@pytest.mark.parametrize("ahead", [4, 16])
def test_multi_frame_guesses_give_the_frame_by_frame_events(backend, ahead):
    model, template = tiny_model()
    make_decisive(model, template, seed=7)
    frames, times, queries = scenario(model, 7, num_frames=150)
    config = EngineConfig(threshold=0.35, max_new_tokens=6)

    def session():
        if backend == "hf":
            return StreamSession(model, template, config)
        return fast_session(model, template, config, max_tokens=8192, max_step_tokens=512)

    one_by_one = run(session(), frames, times, queries)
    guessed = run(session(), frames, times, queries, ahead=ahead)
    assert as_turns(guessed, template) == as_turns(one_by_one, template)
    assert sum(e.role == "assistant" for e in one_by_one) > 10


def test_batched_sessions_join_leave_and_equal_their_solo_runs():
    model, template = tiny_model()
    make_decisive(model, template, seed=11)
    engine = BatchEngine(model, template, max_sessions=4, max_tokens=4096)
    plans = []  # (start step, frames, times, queries, threshold)
    for index in range(6):
        frames, times, queries = scenario(model, 20 + index, num_frames=30 + 7 * index, num_queries=2)
        plans.append((index * 9, frames, times, queries, [0.3, 0.5, 0.7][index % 3]))
    expected = [reference_stream(model, template, f, t, q, threshold=th, max_new_tokens=5) for _, f, t, q, th in plans]
    got: dict[int, list] = {}
    live: dict[int, StreamSession] = {}
    step = 0
    pending = list(range(len(plans)))
    while pending or engine.busy() or live:
        for index in list(pending):  # join when its start step comes and a slot is free
            start, frames, times, queries, threshold = plans[index]
            if step >= start and len(live) < 4:
                session = engine.open(EngineConfig(threshold=threshold, max_new_tokens=5))
                live[index] = session
                got[index] = []
                for query_time, text in queries:
                    engine.submit_query(session, query_time, text)
                for t, f in zip(times, frames):
                    engine.submit_frame(session, t, f)
                engine.submit_finish(session)
                pending.remove(index)
        for session, events in engine.step():
            index = next(i for i, s in live.items() if s is session)
            got[index] += events
        for index, session in list(live.items()):  # leave when done
            if not engine.busy(session):
                engine.close(session)
                del live[index]
        step += 1
        assert step < 10_000
    for index in range(len(plans)):
        assert as_turns(got[index], template) == expected[index], index


def test_memory_policy_keeps_sink_and_recent_tokens_with_rerotated_keys():
    model, template = tiny_model()
    static = StaticKV(
        model, template.ids.silence, max_sessions=2, max_tokens=400, policy=MemoryPolicy(evict_fraction=0.25)
    )
    session = StreamSession(model, template, EngineConfig(threshold=0.0), backend=SlotBackend(static, 0))
    fed: list[tuple[list[int], torch.Tensor | None]] = []
    original = static.feed

    def recording(rows):
        for feed in rows.get(0, []):
            fed.append((feed.ids, feed.frame))
        return original(rows)

    static.feed = recording
    frames = random_frames(60, model, seed=3)
    for index, frame in enumerate(frames):
        session.push_frame(index * 0.5, frame)
        assert session.num_tokens <= 400
    assert static.evictions[0] > 0
    sink = static.sinks[0]
    # The tokens kept: the sink, then the most recent ones. Feed exactly those afresh into slot 1.
    tokens = [("id", i) for ids, frame in fed for i in ids] + []
    tokens = []
    for ids, frame in fed:
        tokens += [("id", i) for i in ids]
        if frame is not None:
            tokens += [("frame", row) for row in frame]
    kept = tokens[:sink] + tokens[sink + static.evictions[0] :]
    assert len(kept) == session.num_tokens
    from videollm_online.engine.backend import Feed

    for kind, value in kept:
        static.feed({1: [Feed([value]) if kind == "id" else Feed([], value[None])]})
    # Layer 0 keys and values depend only on the token and its position: they must match exactly where they sit.
    length = session.num_tokens
    torch.testing.assert_close(static.k_cache[0, 0, :, :length], static.k_cache[0, 1, :, :length], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(static.v_cache[0, 0, :, :length], static.v_cache[0, 1, :, :length])


def test_without_a_policy_a_full_cache_is_a_clear_error():
    model, template = tiny_model()
    session = fast_session(model, template, EngineConfig(threshold=0.0), max_tokens=100)
    frames = random_frames(20, model)
    with pytest.raises(ContextFullError, match="outgrew the cache"):
        for index, frame in enumerate(frames):
            session.push_frame(index * 0.5, frame)


def test_long_prompts_are_fed_in_pieces():
    model, template = tiny_model()
    make_decisive(model, template, seed=2)
    frames, times, _ = scenario(model, 2, num_frames=20)
    queries = [(3.0, "why " * 100 + "?")]
    config = EngineConfig(threshold=0.6, max_new_tokens=5)
    events = run(fast_session(model, template, config, max_tokens=4096, max_step_tokens=64), frames, times, queries)
    assert as_turns(events, template) == reference_stream(model, template, frames, times, queries, 0.6, 5)


def test_a_session_that_outgrows_its_cache_fails_alone():
    model, template = tiny_model()
    make_decisive(model, template, seed=4)
    engine = BatchEngine(model, template, max_sessions=2, max_tokens=640)  # the system prompt alone is ~180
    long, short = engine.open(EngineConfig(threshold=0.0)), engine.open(EngineConfig(threshold=0.5, max_new_tokens=4))
    frames, times, _ = scenario(model, 4, num_frames=60)
    for t, f in zip(times, frames):
        engine.submit_frame(long, t, f)
    for t, f in zip(times[:12], frames[:12]):
        engine.submit_frame(short, t, f)
    engine.submit_finish(short)
    done = engine.run_until_idle()
    assert isinstance(engine.failures.get(long), ContextFullError) and short not in engine.failures
    short_events = [e for session, events in done if session is short for e in events]
    expected = reference_stream(model, template, frames[:12], times[:12], [], threshold=0.5, max_new_tokens=4)
    assert as_turns(short_events, template) == expected
    assert long.num_frames < 60 and not engine.busy()


def test_linears_restored_puts_the_float_linears_back_after_a_quantised_engine():
    """What the benchmarks comparing formats on one model rely on: after the block, bf16 (here float32) again."""
    from videollm_online.engine.quant import linears_restored

    model, template = tiny_model()
    ids = torch.tensor([template.encode(template.system_text() + template.STREAM_PROMPT)])
    with torch.no_grad():
        logits = model.base_llm(input_ids=ids).logits
    with linears_restored(model.base_llm):
        StaticKV(model, template.ids.silence, max_tokens=256, weights="fp8")
        assert isinstance(model.base_llm.get_decoder().layers[1].mlp.down_proj, QuantRows)
    assert type(model.base_llm.get_decoder().layers[1].mlp.down_proj) is torch.nn.Linear
    with torch.no_grad():
        assert torch.equal(model.base_llm(input_ids=ids).logits, logits)
    StaticKV(model, template.ids.silence, max_tokens=256, weights="int8")  # any format again
