"""WebSocket fuzzing against a real server on loopback: random and mutated messages from a seeded generator, on
several sessions at once. Every message is either used or answered with a client-error event (never a
`server_error`: that would be a bug), every event is strict JSON with consecutive `seq`, and afterwards every slot is
free and a fresh, well-behaved session is served in full."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct

import pytest
from api_helpers import image_bytes, run, start_server
from test_reliability import strict_json, wait_for_sessions

from videollm_online.apps.server import protocol as P

SEED = 29
SESSIONS = 6
MESSAGES_PER_SESSION = 80
CLIENT_ERRORS = {P.INVALID_MESSAGE, P.INVALID_FRAME, P.FRAME_TOO_LARGE, P.RATE_LIMITED}
ODD_NUMBERS = [
    "Infinity",
    "-Infinity",
    "NaN",
    "1e308",
    "-1e308",
    "1e-320",
    "-0.0",
    "0",
    "-1",
    "2.5",
    "123456789012345678901234567890",
    "1e400",
    "true",
    "null",
    '"1.5"',
    "[]",
    "{}",
]


def random_json(rng: random.Random, depth: int = 0) -> str:
    """A random JSON-ish value as text (it may hold `Infinity`, `NaN`, huge numbers: what Python's json reads)."""
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(ODD_NUMBERS)
    if kind == 1:
        return json.dumps(
            "".join(
                chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF)]))
                for _ in range(rng.randrange(0, 40))
            )
        )
    if kind == 2:
        return json.dumps(rng.choice([P.QUERY, P.SESSION_UPDATE, P.FINISH, P.FRAME, "", "x" * 5000]))
    if kind == 3:
        return str(rng.uniform(-1e6, 1e6))
    if kind == 4:
        return "[" + ",".join(random_json(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    keys = ["type", "text", "video_time", "session", "threshold", "max_new_tokens", "fps", "item", "x"]
    return (
        "{"
        + ",".join(f"{json.dumps(rng.choice(keys))}:{random_json(rng, depth + 1)}" for _ in range(rng.randrange(5)))
        + "}"
    )


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Flip, cut, repeat or insert bytes."""
    data = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        choice = rng.randrange(4)
        if not data:
            data += bytes([rng.randrange(256)])
        elif choice == 0:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice == 1:
            del data[rng.randrange(len(data)) :]
        elif choice == 2:
            start = rng.randrange(len(data))
            data[start:start] = data[start : start + rng.randrange(1, 64)] * rng.randrange(1, 4)
        else:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
    return bytes(data)


def frame(header: str, image: bytes) -> bytes:
    raw = header.encode()
    return struct.pack(">I", len(raw)) + raw + image


def random_message(rng: random.Random, step: int) -> tuple[str, bytes | str]:
    """(what it is, the message). Some are valid, so the session has real work going on while it is attacked."""
    image = image_bytes(step % 7, rng.choice(["PNG", "JPEG"]))
    kind = rng.randrange(12)
    if kind == 0:
        return "valid frame", P.pack_frame(step * 0.25, image)
    if kind == 1:
        return "mutated frame", mutate(rng, P.pack_frame(step * 0.25, image))
    if kind == 2:
        return "odd frame header", frame('{"video_time": ' + random_json(rng) + "}", image)
    if kind == 3:
        return "random frame header", frame(random_json(rng), image)
    if kind == 4:
        return "random bytes", rng.randbytes(rng.randrange(0, 3000))
    if kind == 5:
        return "random JSON", random_json(rng)
    if kind == 6:
        fields = {"text": random_json(rng), "video_time": rng.choice(ODD_NUMBERS + [str(step * 0.25)])}
        return "odd query", "{" + f'"type": "{P.QUERY}", ' + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    if kind == 7:
        field = rng.choice(["threshold", "max_new_tokens", "fps", "session"])
        return "odd update", "{" + f'"type": "{P.SESSION_UPDATE}", "{field}": {random_json(rng)}' + "}"
    if kind == 8:
        valid = json.dumps({"type": P.QUERY, "text": "What is it?", "video_time": step * 0.25})
        return "mutated query", mutate(rng, valid.encode()).decode("utf-8", errors="replace")
    if kind == 9:
        depth = rng.choice([50, 2_000, 50_000])  # open brackets only: at most 250 kB, under the WebSocket limit
        return "deep nesting", rng.choice(["[", '{"a":']) * depth
    if kind == 10:  # a PNG whose header claims a huge picture: refused before decoding
        png = bytearray(image_bytes(0, "PNG"))
        png[16:24] = struct.pack(">II", 100_000, 100_000)
        return "bomb header", P.pack_frame(step * 0.25, bytes(png))
    return "valid query", json.dumps({"type": P.QUERY, "text": "What is happening?", "video_time": step * 0.25})


async def fuzz_session(url: str, seed: int) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    rng = random.Random(seed)
    events: list[dict] = []
    sent: list[str] = []
    async with connect(f"{url}/v1/realtime?threshold=0.5&max_new_tokens=4", max_size=None) as socket:
        events.append(strict_json(await socket.recv()))

        async def read() -> None:
            async for raw in socket:
                events.append(strict_json(raw))

        reader = asyncio.create_task(read())
        try:
            for step in range(MESSAGES_PER_SESSION):
                what, message = random_message(rng, step)
                sent.append(what)
                await socket.send(message)
            ending = rng.choice(["finish", "leave", "bad utf-8"])
            sent.append(ending)
            if ending == "finish":
                await socket.send(json.dumps({"type": P.FINISH}))
                await asyncio.wait_for(reader, 120)
            elif ending == "bad utf-8":  # not text at all: the WebSocket layer itself closes the connection (1007)
                await socket.send(b"\xff\xfe{", text=True)
                with contextlib.suppress(ConnectionClosed):
                    await asyncio.wait_for(reader, 120)
        except ConnectionClosed:
            sent.append("closed by the server")
        finally:
            reader.cancel()
    return {"events": events, "sent": sent, "ending": sent[-1], "close_code": socket.close_code}


@pytest.fixture(scope="module")
def fuzz_server(tiny_decisive):
    with start_server(
        *tiny_decisive,
        max_sessions=SESSIONS,
        max_pending_frames=4,
        max_frame_bytes=64 * 1024,
        max_frame_rate=200,
        max_query_rate=50,
    ) as running:
        yield running


def test_random_and_mutated_messages_never_break_the_server(fuzz_server):
    async def all_sessions() -> list[dict]:
        return await asyncio.gather(*(fuzz_session(fuzz_server.ws_url, SEED * 1000 + i) for i in range(SESSIONS)))

    results = run(all_sessions(), timeout=300)
    for result in results:
        events = result["events"]
        assert events and events[0]["type"] == P.SESSION_CREATED
        assert [e["seq"] for e in events] == list(range(len(events))), "a gap in seq"
        codes = {e["error"]["code"] for e in events if e["type"] == P.ERROR}
        assert codes <= CLIENT_ERRORS, f"not a client error: {codes - CLIENT_ERRORS} (after {result['sent']})"
        if result["ending"] == "finish":  # the client read every event
            assert codes, "80 random messages and not one refused?"
            assert events[-1]["type"] == P.SESSION_CLOSED and events[-1]["reason"] == "finished"
        assert result["ending"] != "closed by the server", result["sent"]
        if result["ending"] == "bad utf-8":
            assert result["close_code"] == 1007
    assert {result["ending"] for result in results} == {"finish", "leave", "bad utf-8"}
    assert wait_for_sessions(fuzz_server, 0) == 0

    # Afterwards, every slot serves a well-behaved session in full.
    async def fresh(index: int) -> list[dict]:
        from videollm_online.apps.client import AsyncStreamClient

        async with AsyncStreamClient(fuzz_server.ws_url, threshold=0.0, max_new_tokens=4) as client:
            for step in range(3):
                await client.send_frame(step * 0.5, image_bytes(step + index))
            await client.ask("And now?", 0.5)
            await client.send_frame(1.5, image_bytes(9))
            await client.finish()
            return [e async for e in client.events()]

    async def every_slot() -> list[list[dict]]:
        return await asyncio.gather(*(fresh(i) for i in range(SESSIONS)))

    for events in run(every_slot(), timeout=180):
        assert not [e for e in events if e["type"] == P.ERROR]
        assert [e["video_time"] for e in events if e["type"] == P.FRAME_PROCESSED] == [0.0, 0.5, 1.0, 1.5]
        assert sum(e["type"] == P.RESPONSE_DONE for e in events) == 1
        assert events[-1]["reason"] == "finished"
