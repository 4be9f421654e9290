"""The streaming API against a real uvicorn server on loopback: sessions, queries, bad frames, limits, auth, SSE."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from api_helpers import image_bytes, run, start_server

from videollm_online.apps.client import ApiError, AsyncStreamClient, StreamClient, follow
from videollm_online.apps.server import protocol as P


def http_get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def collect(client: AsyncStreamClient) -> list[dict]:
    return [event async for event in client.events()]


def check_stream(events: list[dict]) -> None:
    """Invariants of every session's events: consecutive seq, one session.closed at the end, every response
    opened before its deltas and done, and its deltas adding up to its text."""
    assert [event["seq"] for event in events] == list(range(events[0]["seq"], events[0]["seq"] + len(events)))
    assert events[-1]["type"] == P.SESSION_CLOSED
    assert sum(event["type"] == P.SESSION_CLOSED for event in events) == 1
    texts: dict[str, str] = {}
    for event in events:
        if event["type"] == P.RESPONSE_CREATED:
            assert event["response_id"] not in texts
            texts[event["response_id"]] = ""
        elif event["type"] == P.RESPONSE_DELTA:
            texts[event["response_id"]] += event["delta"]
        elif event["type"] == P.RESPONSE_DONE:
            assert texts.pop(event["response_id"]).strip() == event["text"]
    assert not texts, f"responses never done: {texts}"


def test_full_session(server):
    async def session():
        async with AsyncStreamClient(server.ws_url, threshold=1.0, max_new_tokens=4) as client:
            assert client.session["frame_resolution"] == 32 and client.session["threshold"] == 1.0
            for index in range(6):
                await client.send_frame(index * 0.5, image_bytes(index, "JPEG" if index % 2 else "PNG"))
            await client.finish()
            return client.session, await collect(client), client.lost

    session, events, lost = run(session())
    check_stream(events)
    assert lost == 0
    processed = [event for event in events if event["type"] == P.FRAME_PROCESSED]
    assert [event["video_time"] for event in processed] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [event["frame_index"] for event in processed] == list(range(6))
    # Threshold 1: P(silence) < 1 after every frame, so the model takes a turn after each one, at its time.
    done = [event for event in events if event["type"] == P.RESPONSE_DONE]
    assert [event["video_time"] for event in done] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert all(event["latency_s"] >= 0 for event in done)
    assert events[-1]["reason"] == "finished"

    status, body = http_get(f"{server.url}/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, metrics = http_get(f"{server.url}/metrics")
    assert status == 200
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert values["videollm_frames_processed_total"] >= 6
    assert values["videollm_responses_total"] >= 6
    assert values["videollm_response_latency_seconds_count"] >= 6
    assert values['videollm_events_total{type="response.done"}'] >= 6


def test_query_mid_stream_is_answered_with_the_next_frame(server):
    async def session():
        async with AsyncStreamClient(server.ws_url, threshold=0.0, max_new_tokens=4) as client:  # never by itself
            for index in range(3):
                await client.send_frame(index * 0.5, image_bytes(index))
            await client.ask("What is happening?", 1.2)
            for index in range(3, 5):
                await client.send_frame(index * 0.5, image_bytes(index))
            await client.finish()
            return await collect(client)

    events = run(session())
    check_stream(events)
    kinds = [event["type"] for event in events]
    item = events[kinds.index(P.ITEM_CREATED)]
    assert item["item"] == {"role": "user", "content": "What is happening?", "video_time": 1.2}
    done = [event for event in events if event["type"] == P.RESPONSE_DONE]
    assert len(done) == 1  # threshold 0: only the question gets an answer
    assert done[0]["video_time"] == pytest.approx(1.2) and done[0]["frame_time"] == 1.5
    # The answer comes before the frame at 1.5 is reported watched, after the one at 1.0.
    processed = [i for i, event in enumerate(events) if event["type"] == P.FRAME_PROCESSED]
    answer = events.index(done[0])
    assert events[processed[2]]["video_time"] == 1.0 and processed[2] < answer < processed[3]


def test_a_query_after_the_last_frame_is_answered_at_finish(server):
    with StreamClient(server.ws_url, threshold=0.0, max_new_tokens=3) as client:
        client.send_frame(0.0, image_bytes(0))
        client.ask("Anything else?", 5.0)
        client.finish()
        events = list(client.events(timeout=60))
    check_stream(events)
    done = [event for event in events if event["type"] == P.RESPONSE_DONE]
    assert len(done) == 1 and done[0]["video_time"] == 5.0 and done[0]["frame_time"] is None


def test_garbage_frames_get_error_events_and_the_session_goes_on(server):
    async def session():
        async with AsyncStreamClient(server.ws_url, threshold=0.0) as client:
            await client.send_frame(0.0, image_bytes(0))
            await client.send_frame(0.5, b"\x89PNG but not really an image")
            await client.send_raw(b"\x00\x00\x00\x05{oops" + image_bytes(1))  # a header that is not JSON
            await client.send_raw(b"\x00\x01")  # too short for a header
            await client.send_raw("not json")
            await client.send_raw(json.dumps({"type": "no.such.type"}))
            await client.send_frame(1.0, image_bytes(2))
            await client.send_frame(0.2, image_bytes(3))  # back in time
            await client.finish()
            return await collect(client)

    events = run(session())
    check_stream(events)
    errors = [event["error"] for event in events if event["type"] == P.ERROR]
    assert [error["code"] for error in errors] == [
        P.INVALID_FRAME,
        P.INVALID_FRAME,
        P.INVALID_MESSAGE,
        P.INVALID_MESSAGE,
        P.INVALID_FRAME,
        P.INVALID_FRAME,
    ]
    messages = " | ".join(error["message"] for error in errors)
    for expected in ("not JSON", "4-byte", "not a readable JPEG or PNG", "unknown message type", "video-time order"):
        assert expected in messages
    processed = [event["video_time"] for event in events if event["type"] == P.FRAME_PROCESSED]
    assert processed == [0.0, 1.0]
    assert events[-1]["reason"] == "finished"


def test_oversize_frames_and_rate_limits(tiny_decisive):
    async def session(server):
        async with AsyncStreamClient(server.ws_url, threshold=0.0) as client:
            assert client.session["limits"]["max_frame_bytes"] == 20_000
            await client.send_frame(0.0, image_bytes(0, "PNG", size=(160, 120)))  # ~58 kB of noise
            await client.send_frame(0.5, image_bytes(1))
            for index in range(2, 8):  # six more within a second: the limit is five a second
                await client.send_frame(index * 0.5, image_bytes(index))
            await client.finish()
            return await collect(client)

    with start_server(*tiny_decisive, max_frame_bytes=20_000, max_frame_rate=5) as server:
        events = run(session(server))
    check_stream(events)
    errors = [event["error"] for event in events if event["type"] == P.ERROR]
    assert errors[0]["code"] == P.FRAME_TOO_LARGE and errors[0]["limit"] == 20_000
    assert "20000 bytes" in errors[0]["message"]
    # Seven more frames in a few milliseconds: five pass the rate limit (five a second), the rest are refused.
    limited = [error for error in errors[1:] if error["code"] == P.RATE_LIMITED]
    assert len(limited) == len(errors) - 1 >= 1 and limited[0]["limit"] == 5
    processed = [event["video_time"] for event in events if event["type"] == P.FRAME_PROCESSED]
    assert len(processed) + len(limited) == 7 and processed[:5] == [0.5, 1.0, 1.5, 2.0, 2.5]


def test_disconnect_mid_stream_releases_the_session(server):
    def active() -> int:
        return json.loads(http_get(f"{server.url}/health")[1])["sessions_active"]

    async def leave_early():
        client = AsyncStreamClient(server.ws_url, threshold=1.0, max_new_tokens=64)
        await client.connect()
        for index in range(10):
            await client.send_frame(index * 0.5, image_bytes(index))
        await client.receive()  # something is under way
        await client.close()  # no finish: the client just goes

    before = active()
    run(leave_early())
    deadline = time.monotonic() + 60
    while active() > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert active() == before
    # The server goes on serving.
    with StreamClient(server.ws_url, threshold=0.0) as client:
        client.send_frame(0.0, image_bytes(0))
        client.finish()
        assert [event["type"] for event in client.events(timeout=60)][-1] == P.SESSION_CLOSED


def test_idle_sessions_are_closed(tiny_decisive):
    async def session(server):
        async with AsyncStreamClient(server.ws_url) as client:
            return await collect(client)  # says nothing

    with start_server(*tiny_decisive, idle_timeout=0.5) as server:
        events = run(session(server))
    assert [event["type"] for event in events] == [P.ERROR, P.SESSION_CLOSED]
    assert events[0]["error"]["code"] == P.IDLE_TIMEOUT and events[1]["reason"] == "idle_timeout"


def test_a_session_still_working_is_not_idle(bundled):
    """The idle timeout counts a quiet client, not a slow model: after `session.finish` the client says nothing
    while the model works through its frames for longer than the timeout."""
    model, template, name = bundled

    async def session(server):
        async with AsyncStreamClient(server.ws_url, threshold=1.0, max_new_tokens=48) as client:
            for index in range(4):
                await client.send_frame(index * 0.5, image_bytes(index, "JPEG", size=(96, 96)))
            await client.finish()
            return await collect(client)

    with start_server(model, template, name, idle_timeout=0.2) as server:
        events = run(session(server), timeout=300)
    check_stream(events)
    assert not [event for event in events if event["type"] == P.ERROR]
    assert events[-1]["reason"] == "finished"
    assert sum(event["type"] == P.FRAME_PROCESSED for event in events) == 4


def test_session_limit(tiny_decisive):
    async def two(server):
        async with AsyncStreamClient(server.ws_url):
            with pytest.raises(ApiError, match="limit of 1 sessions"):
                await AsyncStreamClient(server.ws_url).connect()

    with start_server(*tiny_decisive, max_sessions=1) as server:
        run(two(server))


def test_bad_session_parameters_are_refused(server):
    with pytest.raises(ApiError, match="threshold must be in"):
        run(AsyncStreamClient(server.ws_url, threshold=2.0).connect())


def test_auth_on(tiny_decisive):
    token = "s3cret-token"
    with start_server(*tiny_decisive, token=token) as server:
        assert http_get(f"{server.url}/health")[0] == 200  # health stays open
        assert http_get(f"{server.url}/metrics")[0] == 401
        assert http_get(f"{server.url}/metrics", token="wrong")[0] == 401
        assert http_get(f"{server.url}/metrics", token=token)[0] == 200
        assert http_get(f"{server.url}/v1/sessions")[0] == 401
        assert http_get(f"{server.url}/v1/sessions/x/events")[0] == 401
        with pytest.raises(ApiError, match="refused"):
            run(AsyncStreamClient(server.ws_url).connect())
        with pytest.raises(ApiError, match="refused"):
            run(AsyncStreamClient(server.ws_url, token="wrong").connect())

        async def session(url: str, **options):
            async with AsyncStreamClient(url, **options) as client:
                await client.finish()
                return [event["type"] for event in await collect(client)]

        assert run(session(server.ws_url, token=token)) == [P.SESSION_CLOSED]

        # Browsers cannot set headers on a WebSocket: the token may come as a query parameter.
        async def raw(url: str) -> dict:
            from websockets.asyncio.client import connect

            async with connect(url) as socket:
                return json.loads(await socket.recv())

        assert run(raw(f"{server.ws_url}/v1/realtime?token={token}"))["type"] == P.SESSION_CREATED


def test_auth_off(server):
    assert http_get(f"{server.url}/metrics")[0] == 200
    assert http_get(f"{server.url}/v1/sessions")[0] == 200


def test_sse_follower_sees_the_same_events(server):
    async def session():
        async with AsyncStreamClient(server.ws_url, threshold=1.0, max_new_tokens=3) as client:
            followed: list[dict] = []
            following = asyncio.Event()

            async def watch():
                async for event in follow(server.url, client.session_id, secret=client.secret, since=-1):
                    followed.append(event)
                    following.set()

            watcher = asyncio.create_task(watch())
            await asyncio.wait_for(following.wait(), 30)  # the follower is in before the stream starts
            for index in range(4):
                await client.send_frame(index * 0.5, image_bytes(index))
            await client.ask("And now?", 1.6)
            await client.send_frame(2.0, image_bytes(4))
            await client.finish()
            own = await collect(client)
            await asyncio.wait_for(watcher, 30)
            return own, followed

    own, followed = run(session())
    check_stream(followed)
    assert followed[0]["type"] == P.SESSION_CREATED  # replayed from the session's log (since=-1)
    assert [(e["seq"], e["type"]) for e in followed[1:]] == [(e["seq"], e["type"]) for e in own]
    status, body = http_get(f"{server.url}/v1/sessions/nope/events")
    assert status == 404 and "no open session" in body


def test_bundled_model_answers_over_the_api(bundled, tmp_path):
    """The bundled model, end to end: a synthetic video streamed by the client, a question asked mid-stream, the
    answer streamed as deltas."""
    from videollm_online.apps.client import stream_video
    from videollm_online.data.world import WorldConfig, write_world

    write_world(tmp_path, 1, seed=2, config=WorldConfig(fps=4, min_duration=8, max_duration=8), progress=False)
    model, template, name = bundled
    events: list[dict] = []
    with start_server(model, template, name, max_pending_frames=64) as server:
        turns = run(
            stream_video(
                server.ws_url,
                str(tmp_path / "videos" / "000000.mp4"),
                realtime=False,
                max_new_tokens=24,
                queries=[(2.0, "How many objects are there?")],
                on_event=events.append,
            ),
            timeout=300,
        )
    check_stream(events)
    answers = [turn for turn in turns if turn["video_time"] == 2.0]
    assert answers and answers[0]["text"], turns
    deltas = [event for event in events if event["type"] == P.RESPONSE_DELTA]
    assert len(deltas) > 1  # streamed token by token


def test_the_example_streams_a_file_and_prints_the_turns(server, make_clip):
    import subprocess
    import sys
    from pathlib import Path

    clip = make_clip("clip.mp4", frames=30, fps=10)  # 3 s
    example = Path(__file__).resolve().parents[2] / "examples" / "stream_to_server.py"
    result = subprocess.run(
        [
            sys.executable,
            str(example),
            str(clip),
            "--url",
            server.ws_url,
            "--threshold",
            "1",
            "--ask",
            "1.2:What is this?",
            "--fast",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "[1.2s] User: What is this?" in result.stdout
    assert result.stdout.count("Assistant:") >= 2 and "[0.0s]" in result.stdout
    missing = subprocess.run(
        [sys.executable, str(example), "/no/such.mp4", "--url", server.ws_url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
