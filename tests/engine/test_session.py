"""The engine against the seed's loop (the oracle), and the session's protocol rules."""

import random

import pytest
import torch

from tiny_models import make_decisive, random_frames, tiny_model
from videollm_online.engine import EngineConfig, StreamSession, reference_stream


def run_session(session, frames, times, queries):
    for query_time, text in queries:
        session.push_query(query_time, text)
    events = []
    for video_time, frame in zip(times, frames):
        events += session.push_frame(video_time, frame)
    return events + session.finish()


def as_turns(events, template):
    return [(e.video_time, e.role, e.token_ids if e.role == "assistant" else template.encode(e.text)) for e in events]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_engine_equals_reference_over_200_frames(seed):
    model, template = tiny_model()
    make_decisive(model, template, seed=seed)
    rng = random.Random(seed)
    frames = random_frames(200, model, seed=seed)
    times = [i / 2 for i in range(200)]
    queries = [(round(rng.uniform(-1, 105), 2), f"question {i}?") for i in range(5)]
    queries.append((times[rng.randrange(200)], "exactly at a frame?"))
    config = EngineConfig(threshold=0.6, max_new_tokens=12)
    events = run_session(StreamSession(model, template, config), frames, times, queries)
    expected = reference_stream(model, template, frames, times, queries, threshold=0.6, max_new_tokens=12)
    assert as_turns(events, template) == expected
    roles = [e.role for e in events]
    silent_frames = 200 - sum(1 for e in events if e.role == "assistant") + len(queries)
    assert roles.count("user") == len(queries) and silent_frames > 20 and roles.count("assistant") > len(queries) + 5


def test_v1_engine_equals_reference():
    model, template = tiny_model(frame_token_pooled=0, frame_num_tokens=1, frame_token_interval=None)
    make_decisive(model, template, seed=5)
    frames = random_frames(60, model, seed=5)
    times = [i / 2 for i in range(60)]
    queries = [(7.3, "now?")]
    events = run_session(
        StreamSession(model, template, EngineConfig(threshold=0.5, max_new_tokens=8)), frames, times, queries
    )
    assert as_turns(events, template) == reference_stream(model, template, frames, times, queries, 0.5, 8)


def test_query_goes_after_the_last_frame_at_or_before_its_time(tiny):
    model, template = tiny
    session = StreamSession(model, template, EngineConfig(threshold=0.0, max_new_tokens=3))  # never self-responds
    session.push_query(1.2, "A?")
    session.push_query(1.5, "B?")
    frames = random_frames(5, model)
    responses = {}
    for index, frame in enumerate(frames):
        for event in session.push_frame(index * 0.5, frame):
            responses.setdefault(event.text, event.frame_index)
    assert responses["A?"] == 2  # asked at 1.2: after the frame at 1.0, before the frame at 1.5
    assert responses["B?"] == 3  # asked at 1.5: right after the frame at 1.5
    assert [e.role for e in session.events] == ["user", "assistant", "user", "assistant"]


def test_threshold_extremes_and_live_change(tiny):
    model, template = tiny
    frames = random_frames(6, model)
    session = StreamSession(model, template, EngineConfig(threshold=0.0, max_new_tokens=2))
    assert all(not session.push_frame(i * 0.5, f) for i, f in enumerate(frames[:3]))  # P >= 0: always silent
    session.threshold = 1.0  # takes effect at the next frame: P(silence) < 1 always, so it responds
    events = session.push_frame(1.5, frames[3])
    assert [e.role for e in events] == ["assistant"] and len(events[0].token_ids) <= 2


def test_reset_gives_the_same_run_again(tiny):
    model, template = tiny
    make_decisive(model, template, seed=1)
    frames = random_frames(30, model, seed=1)
    times = [i / 2 for i in range(30)]
    session = StreamSession(model, template, EngineConfig(threshold=0.6, max_new_tokens=5))
    first = as_turns(run_session(session, frames, times, [(3.0, "hi?")]), template)
    session.reset()
    assert session.num_tokens == 0 and session.events == []
    assert as_turns(run_session(session, frames, times, [(3.0, "hi?")]), template) == first


def test_frames_out_of_order_and_wrong_shape_raise(tiny):
    model, template = tiny
    session = StreamSession(model, template)
    session.push_frame(1.0, random_frames(1, model)[0])
    with pytest.raises(ValueError, match="time order"):
        session.push_frame(0.5, random_frames(1, model)[0])
    with pytest.raises(ValueError, match=r"shape \(10, 32\)"):
        session.push_frame(2.0, torch.zeros(3, 32))
    with pytest.raises(ValueError, match="threshold"):
        EngineConfig(threshold=2.0)


def test_session_with_a_lora_wrapped_model(tiny):
    from videollm_online.core.checkpoint import add_lora

    model, template = tiny
    add_lora(model, r=4, alpha=8, dropout=0.0)
    model.eval()
    session = StreamSession(model, template, EngineConfig(threshold=0.0, max_new_tokens=2))
    session.push_query(0.0, "hi?")
    events = session.push_frame(0.0, random_frames(1, model)[0])
    assert [e.role for e in events] == ["user", "assistant"]


def test_default_backend_warns_once_past_the_llms_context():
    from videollm_online.core.checkpoint import build_model
    from videollm_online.core.config import TINY_LLM, TINY_VISION, LiveConfig
    from videollm_online.engine.backend import ContextWarning

    config = LiveConfig.from_name(
        "tiny", llm_config={**TINY_LLM, "max_position_embeddings": 64}, vision_config=TINY_VISION
    )
    model, template = build_model(config)
    session = StreamSession(model, template, EngineConfig(threshold=0.0, max_new_tokens=2))  # never self-responds
    frames = random_frames(40, model)
    with pytest.warns(ContextWarning, match="64-token context") as caught:
        for i, frame in enumerate(frames):
            session.push_frame(i / 2, frame)
    assert len([w for w in caught if issubclass(w.category, ContextWarning)]) == 1
    assert session.num_tokens > 64
