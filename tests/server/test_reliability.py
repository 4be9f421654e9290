"""The server under bad and hostile clients, against a real uvicorn server on loopback: no message can wedge it
(every failure ends in an `error` event and, where the session cannot go on, a close that frees its slot), sessions
belong to the client that opened them, and no event carries a number that is not JSON."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from api_helpers import image_bytes, run, start_server

from videollm_online.apps.server import protocol as P

MAX_SESSIONS = 3


def strict_json(text: str) -> dict:
    """Parse an event as strict JSON: `Infinity` / `NaN` are not JSON, and a client in another language chokes."""

    def refuse(constant: str):
        raise AssertionError(f"the server sent a non-JSON number {constant}: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def http_json(url: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def active(server) -> int:
    return http_json(f"{server.url}/health")[1]["sessions_active"]


def wait_for_sessions(server, count: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while active(server) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return active(server)


def frame_with_header(header: bytes, image: bytes | None = None) -> bytes:
    """A binary frame message with any header text (the client's `pack_frame` only writes valid ones)."""
    return struct.pack(">I", len(header)) + header + (image if image is not None else image_bytes(0))


DEPTH = 200_000
# Each of these, sent once, leaked its session for good before: three of them wedged a 3-session server.
BAD_MESSAGES = {
    "frame video_time Infinity": frame_with_header(b'{"video_time": Infinity}'),
    "frame video_time 1e308": frame_with_header(b'{"video_time": 1e308}'),
    "frame video_time NaN": frame_with_header(b'{"video_time": NaN}'),
    "frame video_time -Infinity": frame_with_header(b'{"video_time": -Infinity}'),
    "session.update with a number for session": json.dumps({"type": "session.update", "session": 5}),
    "session.update with a list for session": json.dumps({"type": "session.update", "session": [1, 2]}),
    "session.update fps 1e308": json.dumps({"type": "session.update", "fps": 1e308}),
    "nested JSON 200000 deep": "[" * DEPTH + "]" * DEPTH,
    "nested objects 200000 deep": '{"a":' * DEPTH + "1" + "}" * DEPTH,
    "nested frame header": frame_with_header(b"[" * 2000 + b"]" * 2000),
    "query video_time Infinity": '{"type": "conversation.item.create", "text": "hi", "video_time": Infinity}',
    "query video_time 1e308": '{"type": "conversation.item.create", "text": "hi", "video_time": 1e308}',
    "query text a number": json.dumps({"type": "conversation.item.create", "text": 5}),
    "query video_time a string": json.dumps({"type": "conversation.item.create", "text": "hi", "video_time": "1"}),
    "type a list": json.dumps({"type": ["session.finish"]}),
}


async def _one_bad_message(url: str, message: bytes | str, leave_at_once: bool) -> list[dict]:
    """Open a session, send a good frame, the bad message, and (unless leaving at once) another good frame and a
    finish; returns the events received, each checked as strict JSON."""
    from websockets.asyncio.client import connect

    events: list[dict] = []
    async with connect(f"{url}/v1/realtime?threshold=0", max_size=None) as socket:
        events.append(strict_json(await socket.recv()))
        assert events[0]["type"] == P.SESSION_CREATED
        await socket.send(P.pack_frame(0.0, image_bytes(0)))
        await socket.send(message)
        if leave_at_once:
            return events
        await socket.send(P.pack_frame(0.5, image_bytes(1)))
        await socket.send(json.dumps({"type": P.FINISH}))
        async for raw in socket:
            events.append(strict_json(raw))
            if events[-1]["type"] == P.SESSION_CLOSED:
                break
    return events


@pytest.fixture(scope="module")
def small_server(tiny_decisive):
    with start_server(*tiny_decisive, max_sessions=MAX_SESSIONS, max_pending_frames=64) as running:
        yield running


@pytest.mark.parametrize("leave_at_once", [False, True], ids=["stays", "leaves"])
def test_no_message_wedges_the_server(small_server, leave_at_once):
    """Each bad message gets an `error` event (or, for a client that leaves at once, at least does no harm); after
    all of them, every session slot is free again and `max_sessions` fresh sessions each watch a frame."""
    outcomes = {}
    for name, message in BAD_MESSAGES.items():
        events = run(_one_bad_message(small_server.ws_url, message, leave_at_once), timeout=120)
        outcomes[name] = events
        if not leave_at_once:
            assert events[-1]["type"] == P.SESSION_CLOSED, name
            errors = [event["error"] for event in events if event["type"] == P.ERROR]
            assert errors, f"{name}: no error event: {[event['type'] for event in events]}"
            assert all(error["code"] in (P.INVALID_MESSAGE, P.INVALID_FRAME) for error in errors), (name, errors)
            seqs = [event["seq"] for event in events]
            assert seqs == list(range(len(seqs))), name
            # The session went on: the good frame after the bad message was watched, and it finished normally.
            watched = [event["video_time"] for event in events if event["type"] == P.FRAME_PROCESSED]
            assert watched == [0.0, 0.5], (name, watched)
            assert events[-1]["reason"] == "finished", name
    assert wait_for_sessions(small_server, 0) == 0
    run(_fill_every_slot(small_server.ws_url), timeout=120)


async def _fill_every_slot(url: str) -> None:
    from videollm_online.apps.client import AsyncStreamClient

    clients = [AsyncStreamClient(url, threshold=0.0) for _ in range(MAX_SESSIONS)]
    for client in clients:
        await client.connect()
    for index, client in enumerate(clients):
        await client.send_frame(0.0, image_bytes(index))
        await client.finish()
    for client in clients:
        kinds = [event["type"] async for event in client.events()]
        assert P.FRAME_PROCESSED in kinds and kinds[-1] == P.SESSION_CLOSED
        await client.close()


def test_non_finite_numbers_are_refused_not_echoed(small_server):
    events = run(_one_bad_message(small_server.ws_url, BAD_MESSAGES["query video_time Infinity"], False))
    errors = [event["error"] for event in events if event["type"] == P.ERROR]
    assert errors and errors[0]["code"] == P.INVALID_MESSAGE and "video_time" in errors[0]["message"]
    assert not [event for event in events if event["type"] == P.ITEM_CREATED]
    events = run(_one_bad_message(small_server.ws_url, BAD_MESSAGES["frame video_time 1e308"], False))
    errors = [event["error"] for event in events if event["type"] == P.ERROR]
    assert errors[0]["code"] == P.INVALID_FRAME and "video_time" in errors[0]["message"]


def test_a_failure_inside_a_session_closes_it_and_frees_its_slot(tiny_decisive):
    """A failure the server did not foresee (here: the model itself raising on a frame) ends that session with a
    `server_error` event and `session.closed`, and frees its slot; the server goes on serving."""
    model, template = tiny_decisive

    async def one(url: str) -> list[dict]:
        from videollm_online.apps.client import AsyncStreamClient

        async with AsyncStreamClient(url, threshold=0.0) as client:
            await client.send_frame(0.0, image_bytes(0))
            return [event async for event in client.events()]

    original = model.frames_to_embeds

    def broken(*args, **kwargs):
        raise OverflowError("a failure nobody foresaw")

    with start_server(model, template, max_sessions=1) as server:
        model.frames_to_embeds = broken
        try:
            events = run(one(server.ws_url))
        finally:
            model.frames_to_embeds = original
        assert [event["type"] for event in events][-2:] == [P.ERROR, P.SESSION_CLOSED]
        assert events[-2]["error"]["code"] == P.SERVER_ERROR and events[-1]["reason"] == "server_error"
        assert wait_for_sessions(server, 0) == 0
        run(_fill_one(server.ws_url))


async def _fill_one(url: str) -> None:
    from videollm_online.apps.client import AsyncStreamClient

    async with AsyncStreamClient(url, threshold=0.0) as client:
        await client.send_frame(0.0, image_bytes(0))
        await client.finish()
        kinds = [event["type"] async for event in client.events()]
    assert P.FRAME_PROCESSED in kinds and kinds[-1] == P.SESSION_CLOSED


def test_many_sessions_leaving_abruptly_free_their_slots(small_server):
    """Clients that drop the connection mid-stream (no finish), all at once, several times the limit."""

    async def drop(url: str) -> None:
        from videollm_online.apps.client import AsyncStreamClient

        client = AsyncStreamClient(url, threshold=1.0)
        await client.connect()
        for index in range(4):
            await client.send_frame(index * 0.5, image_bytes(index))
        await client.close()

    async def all_at_once() -> None:
        await asyncio.gather(*(drop(small_server.ws_url) for _ in range(MAX_SESSIONS)))

    for _ in range(3):
        run(all_at_once())
        assert wait_for_sessions(small_server, 0) == 0
    run(_fill_every_slot(small_server.ws_url), timeout=120)


def test_sessions_belong_to_the_client_that_opened_them(tiny_decisive):
    """Client B, with the server's shared token, cannot list, follow or read client A's session without A's
    secret (from A's `session.created`); with it, it can."""
    from videollm_online.apps.client import ApiError, AsyncStreamClient, follow

    token = "shared-token"
    auth = {"Authorization": f"Bearer {token}"}

    async def scenario(server) -> None:
        async with (
            AsyncStreamClient(server.ws_url, token=token, threshold=0.0) as a,
            AsyncStreamClient(server.ws_url, token=token, threshold=0.0) as b,
        ):
            assert a.secret and b.secret and a.secret != b.secret
            await a.ask("a private question", 0.0)
            await a.send_frame(0.0, image_bytes(0))
            # B lists: only its own session; with no secret at all, nothing.
            listed = await asyncio.to_thread(
                http_json, f"{server.url}/v1/sessions", {**auth, "X-Session-Secret": b.secret}
            )
            assert [s["id"] for s in listed[1]["sessions"]] == [b.session_id]
            assert (await asyncio.to_thread(http_json, f"{server.url}/v1/sessions", auth))[1] == {"sessions": []}
            assert "secret" not in listed[1]["sessions"][0]  # the list never hands out secrets
            # B cannot follow A: no secret, B's own secret, a made-up one; A's id alone opens nothing.
            for secret in (None, b.secret, "x" * 32):
                with pytest.raises(ApiError, match="HTTP 404"):
                    async for _ in follow(server.url, a.session_id, token=token, secret=secret, since=-1):
                        pass
            status, body = await asyncio.to_thread(
                http_json, f"{server.url}/v1/sessions/{a.session_id}/events?since=-1&secret={b.secret}", auth
            )
            assert status == 404 and "secret" in body["error"]["message"]
            # With A's secret (header, or ?secret= as a browser's EventSource sends it), B reads A's events.
            followed: list[dict] = []
            following = asyncio.Event()

            async def watch() -> None:
                async for event in follow(server.url, a.session_id, token=token, secret=a.secret, since=-1):
                    followed.append(event)
                    following.set()

            watcher = asyncio.create_task(watch())
            await asyncio.wait_for(following.wait(), 30)
            await a.finish()
            await asyncio.wait_for(watcher, 60)
            contents = [e["item"]["content"] for e in followed if e["type"] == P.ITEM_CREATED]
            assert contents == ["a private question"] and followed[-1]["type"] == P.SESSION_CLOSED
            both = await asyncio.to_thread(
                http_json, f"{server.url}/v1/sessions?secret={b.secret}&secret={a.secret}", auth
            )
            assert b.session_id in [s["id"] for s in both[1]["sessions"]]
            # The secret does not replace the server's token.
            assert (await asyncio.to_thread(http_json, f"{server.url}/v1/sessions?secret={b.secret}"))[0] == 401

    with start_server(*tiny_decisive, token=token) as server:
        run(scenario(server))


def test_a_question_flood_is_limited_and_the_other_session_keeps_going(tiny_decisive):
    """Session A asks 30 questions at once: the ones over the limits get `rate_limited` errors naming the limit,
    none is lost silently; session B, streaming at the same time, gets every frame watched and no error."""
    from videollm_online.apps.client import AsyncStreamClient

    async def scenario(server) -> tuple[list[dict], list[dict]]:
        async with (
            AsyncStreamClient(server.ws_url, threshold=0.0, max_new_tokens=32) as a,
            AsyncStreamClient(server.ws_url, threshold=0.0) as b,
        ):
            assert a.session["limits"]["max_pending_queries"] == 3
            await a.send_frame(0.0, image_bytes(0))
            for index in range(30):
                await a.ask(f"question {index}?", 0.0)
            for index in range(6):
                await b.send_frame(index * 0.5, image_bytes(index))
                await a.send_frame(0.5 + index * 0.5, image_bytes(index))
            await a.finish()
            await b.finish()
            return [e async for e in a.events()], [e async for e in b.events()]

    with start_server(*tiny_decisive, max_pending_frames=64, max_query_rate=5, max_pending_queries=3) as server:
        flood, other = run(scenario(server))
    limited = [e["error"] for e in flood if e["type"] == P.ERROR]
    assert limited and all(error["code"] == P.RATE_LIMITED for error in limited)
    assert {error["limit_name"] for error in limited} <= {"max_query_rate", "max_pending_queries"}
    assert all(error["limit_name"] in error["message"] for error in limited)
    taken = [e for e in flood if e["type"] == P.ITEM_CREATED]
    assert 1 <= len(taken) <= 5 and len(taken) + len(limited) == 30  # every question: taken or refused, said so
    assert sum(e["type"] == P.RESPONSE_DONE for e in flood) == len(taken)  # and each taken one answered
    assert not [e for e in other if e["type"] == P.ERROR]
    assert [e["video_time"] for e in other if e["type"] == P.FRAME_PROCESSED] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_the_worker_is_shared_fairly_between_sessions():
    """The worker's queue: a session whose calls took long waits while another's call goes first, even when the
    first has many calls queued before it; each session's calls keep their order."""
    from videollm_online.apps.server.worker import FairQueue

    class Owner:
        pass

    queue, flood, other = FairQueue(), Owner(), Owner()
    for index in range(5):
        queue.put(flood, f"flood {index}")
    owner, item = queue.get()
    assert (owner, item) == (flood, "flood 0")
    queue.charge(flood, 4.0)  # a long call: a frame and several answers
    queue.put(other, "other 0")
    assert queue.get() == (other, "other 0")  # before the flood's backlog
    queue.charge(other, 0.3)
    queue.put(other, "other 1")
    assert queue.get() == (other, "other 1")
    queue.charge(other, 0.3)
    assert queue.get() == (flood, "flood 1")  # nothing else waits: the flood goes on, in its order
    # A session that waited on nothing for a long while starts level with the others, not ahead by its idle time.
    queue.charge(flood, 100.0)
    late = Owner()
    queue.put(late, "late 0")
    assert queue.get() == (late, "late 0")
    queue.charge(late, 0.5)
    queue.put(late, "late 1")
    queue.put(other, "other 2")  # other last ran at 0.6 s of worker time, late has used 0.5 s: both start level
    assert [queue.get()[1] for _ in range(2)] == ["other 2", "late 1"]
    assert queue.close() == ["flood 2", "flood 3", "flood 4"]
    assert queue.get() is None


def test_warm_up_then_serve(tiny_decisive):
    """`serve` watches one silent frame before the first client; a session opened afterwards starts from its own
    first frame."""
    from videollm_online.apps.server.worker import SerialWorker

    worker = SerialWorker(*tiny_decisive)
    try:
        assert worker.warm_up() > 0
        session = worker.open()
        events = session.submit_frame(0.0, np.zeros((32, 32, 3), np.uint8)).result(timeout=60)
        assert session.num_frames == 1 and isinstance(events, list)
    finally:
        worker.shutdown()


def test_questions_reach_the_model_one_at_a_time(tiny_decisive):
    """Three questions asked at once are answered one per frame (each frame's call does one answer's work, so a
    session's questions cannot hold the model for long in one go); the rest wait, in order, and none is lost."""
    from videollm_online.apps.client import AsyncStreamClient

    async def session() -> list[dict]:
        async with AsyncStreamClient(server.ws_url, threshold=0.0, max_new_tokens=4) as client:
            await client.send_frame(0.0, image_bytes(0))
            for index in range(3):
                await client.ask(f"question {index}?", 0.0)
            for index in range(1, 5):
                await client.send_frame(index * 0.5, image_bytes(index))
            await client.finish()
            return [event async for event in client.events()]

    with start_server(*tiny_decisive, max_pending_frames=64, max_query_rate=10) as server:
        events = run(session())
    items = [e["item"]["content"] for e in events if e["type"] == P.ITEM_CREATED]
    assert items == ["question 0?", "question 1?", "question 2?"]
    done = [e for e in events if e["type"] == P.RESPONSE_DONE]
    assert [e["frame_time"] for e in done] == [0.5, 1.0, 1.5]  # one answer before each of the next frames
    assert events[-1]["reason"] == "finished"
