"""The API's message models: the parser's checks (finite numbers, bounds, clear errors), the committed JSON Schemas,
and OpenAI Realtime-shaped messages over a real WebSocket whose every event validates against the event schema."""

from __future__ import annotations

import base64
import json

import pytest
from api_helpers import image_bytes, run

from videollm_online.apps.server import protocol as P
from videollm_online.apps.server import schema as S


def realtime_item(*parts: dict, **extra) -> str:
    return json.dumps(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": list(parts)},
            **extra,
        }
    )


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 200_000, "nested too deeply"),
        ("not json", "not JSON"),
        (
            '{"type": "conversation.item.create", "text": "hi", "video_time": Infinity}',
            "video_time: Input should be a finite number",
        ),
        ('{"type": "conversation.item.create", "text": "hi", "video_time": NaN}', "finite number"),
        ('{"type": "conversation.item.create", "text": "hi", "video_time": 1e308}', "less than or equal to 1000000000"),
        ('{"type": "conversation.item.create", "text": "hi", "video_time": -1}', "greater than or equal to 0"),
        (
            '{"type": "conversation.item.create", "text": "hi", "video_time": "3"}',
            "video_time: Input should be a valid number",
        ),
        ('{"type": "conversation.item.create", "text": "hi", "video_time": true}', "valid number"),
        ('{"type": "conversation.item.create", "text": "  "}', "blank"),
        ('{"type": "conversation.item.create"}', "either 'text'"),
        (json.dumps({"type": "conversation.item.create", "text": "x" * 100_001}), "text: String should have at most"),
        ('{"type": "session.update", "session": 5}', "session.update: session: Input should be a valid dictionary"),
        ('{"type": "session.update", "threshold": 2}', "threshold: Input should be less than or equal to 1"),
        ('{"type": "session.update", "session": {"fps": 1e999}}', "session.fps: Input should be a finite number"),
        (
            '{"type": "session.update", "max_new_tokens": 0}',
            "max_new_tokens: Input should be greater than or equal to 1",
        ),
        (
            '{"type": "session.update", "session": {"treshold": 0.5}}',
            "session.treshold: Extra inputs are not permitted",
        ),
        ('{"type": "no.such.type"}', "unknown message type 'no.such.type'"),
        ('{"type": ["x"]}', "unknown message type 'list'"),
        ("[1, 2]", "JSON object with a 'type'"),
        (
            realtime_item({"type": "input_text", "text": "hi"}).replace('"user"', '"assistant"'),
            "item.role: Input should be 'user'",
        ),
        (realtime_item(), "item.content: List should have at least 1 item"),
        (realtime_item({"type": "input_audio", "audio": "AAAA"}), "does not match any of the expected tags"),
        (realtime_item({"type": "input_image", "image_url": "https://example.com/a.jpg"}), "must be a data URL"),
        (
            realtime_item(*[{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}] * 17),
            "at most 16 frames per message",
        ),
        (realtime_item(*[{"type": "input_text", "text": "x" * 60_000}] * 2), "at most 100000 in all"),
        (
            realtime_item({"type": "input_text", "text": "hi", "video_time": 1.0}),
            "content.0.input_text.video_time: Extra inputs",
        ),
    ],
)
def test_bad_messages_name_the_field_and_the_problem(text, expected):
    with pytest.raises(S.MessageError) as caught:
        S.parse_client_message(text)
    assert expected in str(caught.value)


def test_good_messages_in_both_shapes():
    plain = S.parse_client_message('{"type": "conversation.item.create", "text": " What? ", "video_time": 2}')
    assert plain.question() == "What?" and plain.question_time() == 2.0 and plain.images() == []
    item = S.parse_client_message(
        realtime_item(
            {"type": "input_image", "image_url": data_url(b"\x89PNG..")},
            {"type": "input_text", "text": "What is it?"},
            event_id="evt_1",
        )
    )
    assert item.question() == "What is it?" and item.question_time() is None
    assert [image.image_bytes() for image in item.images()] == [b"\x89PNG.."]
    update = S.parse_client_message('{"type": "session.update", "fps": 1, "session": {"threshold": 0.5}}')
    assert update.settings() == {"fps": 1.0, "threshold": 0.5}
    assert S.parse_client_message('{"type": "session.finish"}').type == P.FINISH


@pytest.mark.parametrize(
    "header",
    [
        b'{"video_time": Infinity}',
        b'{"video_time": 1e308}',
        b'{"video_time": NaN}',
        b'{"video_time": -0.5}',
        b'{"video_time": "1"}',
        b"{}",
        b"[" * 3000,
    ],
)
def test_frame_headers_need_a_finite_time(header):
    with pytest.raises(P.FrameError, match="video_time|nested"):
        P.unpack_frame(P.HEADER_LENGTH.pack(len(header)) + header + b"picture")


def test_committed_schemas_match_the_models():
    """docs/schemas/*.json are generated from the models: regenerate with
    `python -m videollm_online.apps.server.schema`."""
    schemas = S.json_schemas()
    assert set(schemas) == {path.stem for path in S.SCHEMA_DIR.glob("*.json")}
    for name, schema in schemas.items():
        committed = (S.SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8")
        assert committed == S.render_schema(schema), f"docs/schemas/{name}.json is stale"
    client = schemas["client_message"]
    assert set(client["discriminator"]["mapping"]) == {P.SESSION_UPDATE, P.QUERY, P.FINISH, "response.create"}
    events = schemas["server_event"]["discriminator"]["mapping"]
    assert set(events) == {
        P.SESSION_CREATED,
        P.SESSION_UPDATED,
        P.SESSION_CLOSED,
        P.FRAME_PROCESSED,
        P.FRAME_DROPPED,
        P.ITEM_CREATED,
        P.RESPONSE_CREATED,
        P.RESPONSE_DELTA,
        P.RESPONSE_DONE,
        P.ERROR,
    }


def test_realtime_shaped_messages_over_a_real_websocket(server):
    """An OpenAI Realtime-style client: JSON text messages only, frames as input_image data URLs, the question as an
    input_text item; a deeply nested message and a bad one on the way get error events and the session goes on."""
    from websockets.asyncio.client import connect

    async def session() -> list[dict]:
        async with connect(f"{server.ws_url}/v1/realtime?threshold=0&max_new_tokens=4", max_size=None) as socket:
            await socket.send(
                json.dumps(
                    {"type": "session.update", "event_id": "evt_0", "session": {"threshold": 0.0, "max_new_tokens": 4}}
                )
            )
            for index in range(3):
                await socket.send(
                    realtime_item(
                        {"type": "input_image", "image_url": data_url(image_bytes(index)), "video_time": index * 0.5}
                    )
                )
            await socket.send("[" * 200_000)
            await socket.send(realtime_item({"type": "input_image", "image_url": "data:image/png;base64,@@@"}))
            await socket.send(realtime_item({"type": "input_text", "text": "What is happening?"}, video_time=1.2))
            await socket.send(json.dumps({"type": "response.create", "event_id": "evt_2"}))  # a Realtime habit: a no-op
            await socket.send(
                realtime_item(
                    {"type": "input_image", "image_url": data_url(image_bytes(3, "JPEG"), "jpeg"), "video_time": 1.5},
                    {"type": "input_image", "image_url": data_url(image_bytes(4)), "video_time": 2.0},
                )
            )
            await socket.send(json.dumps({"type": "session.finish"}))
            return [json.loads(message) async for message in socket]

    events = run(session())
    for event in events:  # every event the server sent is one its schema describes
        S.SERVER_EVENT.validate_python(event)
    kinds = [event["type"] for event in events]
    assert kinds[0] == P.SESSION_CREATED and kinds[1] == P.SESSION_UPDATED and kinds[-1] == P.SESSION_CLOSED
    assert events[1]["session"]["threshold"] == 0.0
    errors = [event["error"] for event in events if event["type"] == P.ERROR]
    assert [error["code"] for error in errors] == [P.INVALID_MESSAGE, P.INVALID_MESSAGE]
    assert "nested too deeply" in errors[0]["message"] and "base64" in errors[1]["message"]
    processed = [event["video_time"] for event in events if event["type"] == P.FRAME_PROCESSED]
    assert processed == [0.0, 0.5, 1.0, 1.5, 2.0]
    item = next(event for event in events if event["type"] == P.ITEM_CREATED)
    assert item["item"] == {"role": "user", "content": "What is happening?", "video_time": 1.2}
    done = [event for event in events if event["type"] == P.RESPONSE_DONE]
    assert len(done) == 1 and done[0]["video_time"] == pytest.approx(1.2) and done[0]["frame_time"] == 1.5
    assert events[-1]["reason"] == "finished"


def test_the_parser_never_raises_anything_but_its_error():
    """Any JSON value, or any text: parse_client_message returns a model or raises MessageError with a message;
    whatever it accepts has finite times in range and bounded text."""
    import math

    from hypothesis import given, settings
    from hypothesis import strategies as st

    numbers = st.one_of(st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True))
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        numbers,
        st.text(max_size=20),
        st.sampled_from(
            [
                "session.update",
                "session.finish",
                "conversation.item.create",
                "input_text",
                "input_image",
                "message",
                "user",
                "video_time",
                "text",
            ]
        ),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(
                st.sampled_from(
                    [
                        "type",
                        "text",
                        "video_time",
                        "item",
                        "content",
                        "role",
                        "session",
                        "threshold",
                        "fps",
                        "max_new_tokens",
                        "image_url",
                        "event_id",
                        "x",
                    ]
                ),
                inner,
                max_size=5,
            ),
        ),
        max_leaves=20,
    )
    messages = st.one_of(
        values.map(lambda v: json.dumps(v, allow_nan=True)),
        st.text(max_size=60),
        st.fixed_dictionaries(
            {"type": st.sampled_from(S.CLIENT_TYPES)},
            optional={
                "text": st.text(max_size=30),
                "video_time": numbers,
                "session": st.dictionaries(st.sampled_from(["threshold", "fps", "max_new_tokens"]), numbers),
            },
        ).map(lambda v: json.dumps(v, allow_nan=True)),
    )

    @settings(max_examples=300, deadline=None, database=None)
    @given(messages)
    def check(text: str) -> None:
        try:
            message = S.parse_client_message(text)
        except S.MessageError as error:
            assert str(error)
            return
        if isinstance(message, S.ConversationItemCreate):
            time_ = message.question_time()
            assert time_ is None or (math.isfinite(time_) and 0 <= time_ <= S.MAX_VIDEO_TIME)
            assert message.question() is None or 0 < len(message.question()) <= S.MAX_TEXT_CHARS
        elif isinstance(message, S.SessionUpdate):
            for value in message.settings().values():
                assert math.isfinite(value)

    check()
