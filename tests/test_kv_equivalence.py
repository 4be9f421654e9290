"""Tier 2: streaming frame by frame through the KV cache gives the logits of one full-sequence forward."""

import pytest
import torch

from tiny_models import make_decisive, random_frames, tiny_model
from videollm_online.engine import EngineConfig, StreamSession


@pytest.mark.parametrize("llm", ["llama", "qwen2"])
def test_stream_through_cache_equals_full_forward(llm):
    model, template = tiny_model(llm)
    make_decisive(model, template, seed=3)
    frames = random_frames(12, model, seed=1)
    session = StreamSession(model, template, EngineConfig(threshold=0.5, max_new_tokens=6))
    session.push_query(2.2, "What?")  # mid-stream query
    fed_ids, fed_logits, frame_positions = [], [], []

    # Record every position the session feeds, with the logits it computed there.
    original_feed = session.backend.feed

    def recording_feed(feeds):
        logits_before = len(fed_ids)
        ends = []
        for feed in feeds:
            fed_ids.extend(feed.ids)
            if feed.frame is not None:
                frame_positions.append(len(fed_ids))
                fed_ids.extend([template.ids.v_placeholder] * len(feed.frame))
            ends.append(len(fed_ids) - 1)
        results = original_feed(feeds)
        fed_logits.extend((end, result.logits) for end, result in zip(ends, results))
        assert len(fed_ids) > logits_before
        return results

    session.backend.feed = recording_feed
    events = []
    for index, frame in enumerate(frames):
        events += session.push_frame(index * 0.5, frame)
    roles = [event.role for event in events]
    assert "user" in roles and roles.count("assistant") >= 2, roles  # a query and a response of its own

    input_ids = torch.tensor([fed_ids])
    assert session.num_tokens == len(fed_ids)
    with torch.no_grad():
        full = model(input_ids, frame_embeds=frames).logits[0]
    for position, logits in fed_logits:
        torch.testing.assert_close(logits, full[position], atol=1e-5, rtol=1e-5)
    # the fed sequence is exactly the training text of the same conversation
    text = template.tokenizer.decode(fed_ids)
    assert "]\nUser: What?\nAssistant:" in text and "]\nAssistant:" in text
