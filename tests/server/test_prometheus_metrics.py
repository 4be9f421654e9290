"""/metrics as Prometheus reads it: parsed by prometheus_client's own text parser, counters moving with a session."""

from __future__ import annotations

import urllib.request

from api_helpers import image_bytes, start_server
from prometheus_client.parser import text_string_to_metric_families

from videollm_online.apps.client import StreamClient
from videollm_online.apps.server import protocol as P
from videollm_online.apps.server.schema import SERVER_EVENT


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of every sample /metrics exposes."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_parse_and_count_a_session(tiny_decisive):
    with start_server(*tiny_decisive, max_pending_frames=64) as server:
        before = scrape(server.url)
        # Process and platform metrics are on the app's own registry.
        assert before[("process_resident_memory_bytes", ())] > 0
        assert ("python_info", ()) not in before and any(name == "python_info" for name, _ in before)
        assert before[("videollm_frames_processed_total", ())] == 0
        with StreamClient(server.ws_url, threshold=1.0, max_new_tokens=3) as client:
            for index in range(5):
                client.send_frame(index * 0.5, image_bytes(index))
            client.send_frame(2.6, b"not a picture")
            client.finish()
            events = list(client.events(timeout=60))
        assert events[-1]["type"] == P.SESSION_CLOSED
        after = scrape(server.url)
    for event in events:  # the events of this session (frames, an invalid one, turns) as their schema says
        SERVER_EVENT.validate_python(event)
    turns = sum(event["type"] == P.RESPONSE_DONE for event in events)
    assert turns >= 5
    assert after[("videollm_sessions_total", ())] == 1 and after[("videollm_sessions_active", ())] == 0
    assert after[("videollm_frames_received_total", ())] == 6
    assert after[("videollm_frames_processed_total", ())] == 5
    assert after[("videollm_frames_dropped_total", (("reason", "invalid"),))] == 1
    assert after[("videollm_errors_total", (("code", P.INVALID_FRAME),))] == 1
    assert after[("videollm_responses_total", ())] == turns
    assert after[("videollm_events_total", (("type", P.RESPONSE_DONE),))] == turns
    assert after[("videollm_events_total", (("type", P.FRAME_PROCESSED),))] == 5
    assert after[("videollm_response_latency_seconds_count", ())] == turns
    assert after[("videollm_frame_latency_seconds_count", ())] == 5
    assert after[("videollm_frame_latency_seconds_bucket", (("le", "+Inf"),))] == 5
    assert after[("videollm_frame_latency_seconds_sum", ())] > 0
    assert after[("process_cpu_seconds_total", ())] >= before[("process_cpu_seconds_total", ())]


def test_two_apps_have_their_own_registries(tiny_decisive):
    with start_server(*tiny_decisive) as first, start_server(*tiny_decisive) as second:
        with StreamClient(first.ws_url, threshold=0.0) as client:
            client.send_frame(0.0, image_bytes(0))
            client.finish()
            list(client.events(timeout=60))
        assert scrape(first.url)[("videollm_frames_processed_total", ())] == 1
        assert scrape(second.url)[("videollm_frames_processed_total", ())] == 0
