"""Pydantic models of the streaming API: every client message and every server event, with their bounds.

The server parses each client text message with `parse_client_message` (one check, at the edge: finite numbers in
range, bounded text, a bounded number of frames per message) and answers a bad one with an `error` event naming the
field and the problem. Server events are documented by models too; their JSON Schemas are exported to
docs/schemas/ by `write_schemas` (`python -m videollm_online.apps.server.schema`), and a test keeps those files in step
with the models. Server events allow extra fields (clients ignore what they do not know); client messages do not
(a misspelt setting is an error, not a silent no-op).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, TypeAdapter, ValidationError, model_validator

from ...core.policy import SERVER_MAX_NEW_TOKENS
from . import protocol as P

MAX_VIDEO_TIME = 1e9
"""Largest video time (seconds, about 31 years) a message may carry: finite, and far from float overflow."""
MAX_TEXT_CHARS = 100_000
"""Static bound on a question's length; the server's own limit (`ServerConfig.max_query_chars`) is lower."""
MAX_FRAMES_PER_MESSAGE = 16
"""`input_image` parts in one `conversation.item.create`."""
MAX_CONTENT_PARTS = 32
MAX_IMAGE_URL_CHARS = 16 * 1024 * 1024
"""A data URL's length; the decoded frame must also fit the server's `max_frame_bytes`."""
MAX_ID_CHARS = 256

VideoTime = Annotated[
    StrictFloat, Field(ge=0, le=MAX_VIDEO_TIME, allow_inf_nan=False, description="seconds of video time, finite, >= 0")
]
Threshold = Annotated[
    StrictFloat,
    Field(
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="stay silent while P(frame interval token) >= threshold; 1: speak after every frame",
    ),
]
MaxNewTokens = Annotated[StrictInt, Field(ge=1, le=SERVER_MAX_NEW_TOKENS, description="longest turn, in tokens")]
Fps = Annotated[
    StrictFloat,
    Field(gt=0, le=30, allow_inf_nan=False, description="frames per second of video time the model watches"),
]
EventId = Annotated[
    str,
    Field(
        max_length=MAX_ID_CHARS,
        description="the client's own id of the message (OpenAI Realtime clients send one); ignored",
    ),
]
DATA_URL = re.compile(r"data:image/(jpeg|jpg|png);base64,", re.IGNORECASE)


class _ClientModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _EventModel(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------- client -> server
class SessionSettings(_ClientModel):
    """Settings a client may change (each optional)."""

    threshold: Threshold | None = None
    max_new_tokens: MaxNewTokens | None = None
    fps: Fps | None = None


class SessionUpdate(SessionSettings):
    """Change settings at once; answered by `session.updated`. The settings may also come inside `session`, as
    OpenAI Realtime clients send them."""

    type: Literal["session.update"]
    event_id: EventId | None = None
    session: SessionSettings | None = None

    def settings(self) -> dict[str, Any]:
        """The settings given, top level and `session` merged (those in `session` win)."""
        values = self.model_dump(include={"threshold", "max_new_tokens", "fps"}, exclude_unset=True)
        if self.session is not None:
            values.update(self.session.model_dump(exclude_unset=True))
        return values


class InputText(_ClientModel):
    type: Literal["input_text"]
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class InputImage(_ClientModel):
    """A frame as a data URL (JPEG or PNG, base64), as OpenAI Realtime clients send images."""

    type: Literal["input_image"]
    image_url: Annotated[
        str,
        Field(max_length=MAX_IMAGE_URL_CHARS, description="data:image/jpeg;base64,... or data:image/png;base64,..."),
    ]
    video_time: VideoTime | None = Field(
        default=None,
        description="the frame's video time; default: the item's video_time, else seconds since the session opened",
    )

    @model_validator(mode="after")
    def _data_url(self) -> InputImage:
        if not DATA_URL.match(self.image_url[:40]):
            raise ValueError("image_url must be a data URL: data:image/jpeg;base64,... or data:image/png;base64,...")
        return self

    def image_bytes(self) -> bytes:
        """The decoded picture; ValueError when the base64 is broken."""
        try:
            return base64.b64decode(self.image_url.split(",", 1)[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("image_url: the base64 data is not valid") from None


ContentPart = Annotated[InputText | InputImage, Field(discriminator="type")]


class MessageItem(_ClientModel):
    """An OpenAI Realtime conversation item: a user message of text (the question) and/or images (frames)."""

    type: Literal["message"] = "message"
    role: Literal["user"]
    content: Annotated[list[ContentPart], Field(min_length=1, max_length=MAX_CONTENT_PARTS)]
    id: Annotated[str, Field(max_length=MAX_ID_CHARS)] | None = None
    video_time: VideoTime | None = None

    @model_validator(mode="after")
    def _bounds(self) -> MessageItem:
        images = sum(isinstance(part, InputImage) for part in self.content)
        if images > MAX_FRAMES_PER_MESSAGE:
            raise ValueError(f"{images} input_image parts; at most {MAX_FRAMES_PER_MESSAGE} frames per message")
        chars = sum(len(part.text) for part in self.content if isinstance(part, InputText))
        if chars > MAX_TEXT_CHARS:
            raise ValueError(f"the input_text parts hold {chars} characters; at most {MAX_TEXT_CHARS} in all")
        return self


class ConversationItemCreate(_ClientModel):
    """A question (today's shape: `text`, optional `video_time`) or an OpenAI Realtime item (`item`)."""

    type: Literal["conversation.item.create"]
    event_id: EventId | None = None
    previous_item_id: Annotated[str, Field(max_length=MAX_ID_CHARS)] | None = None
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)] | None = None
    video_time: VideoTime | None = Field(
        default=None, description="when the question is asked; default: the latest frame's time"
    )
    item: MessageItem | None = None

    @model_validator(mode="after")
    def _one_form(self) -> ConversationItemCreate:
        if (self.text is None) == (self.item is None):
            raise ValueError("give either 'text' (a question) or 'item' (an OpenAI Realtime message item)")
        if self.text is not None and not self.text.strip():
            raise ValueError("the question 'text' is blank")
        if self.item is not None and not any(isinstance(p, InputImage) or p.text.strip() for p in self.item.content):
            raise ValueError("the item's input_text is blank")
        return self

    def question(self) -> str | None:
        """The question's text (input_text parts joined by a newline), None when the item carries only frames."""
        if self.text is not None:
            return self.text.strip()
        parts = [p.text.strip() for p in self.item.content if isinstance(p, InputText) and p.text.strip()]
        return "\n".join(parts) or None

    def question_time(self) -> float | None:
        value = self.video_time if self.video_time is not None else (self.item.video_time if self.item else None)
        return None if value is None else float(value)

    def images(self) -> list[InputImage]:
        return [p for p in self.item.content if isinstance(p, InputImage)] if self.item else []


class SessionFinish(_ClientModel):
    """The stream has ended: waiting questions are answered, then `session.closed`."""

    type: Literal["session.finish"]
    event_id: EventId | None = None


class ResponseCreate(_ClientModel):
    """Accepted for OpenAI Realtime clients, which ask for a response after adding an item; it changes nothing here:
    questions are answered by themselves (with the next frame, or at `session.finish`), and the model decides when
    to narrate."""

    type: Literal["response.create"]
    event_id: EventId | None = None
    response: dict[str, Any] | None = Field(default=None, description="ignored")


ClientMessage = Annotated[
    SessionUpdate | ConversationItemCreate | SessionFinish | ResponseCreate, Field(discriminator="type")
]
CLIENT_TYPES = (P.SESSION_UPDATE, P.QUERY, P.FINISH, "response.create")


class FrameHeader(_ClientModel):
    """The JSON header of a binary frame message (see `protocol.pack_frame`)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    type: Literal["input_frame.append"] = "input_frame.append"
    video_time: VideoTime


# ---------------------------------------------------------------------- server -> client
class Limits(_EventModel):
    max_frame_bytes: int
    max_frame_pixels: int
    max_frame_rate: float
    max_pending_frames: int
    idle_timeout: float


class SessionInfo(_EventModel):
    id: str
    model: str
    threshold: float
    max_new_tokens: int
    fps: float
    frame_resolution: int
    frames: int = Field(description="frames the model has watched")
    created: float = Field(description="Unix time the session opened")
    limits: Limits
    secret: str | None = Field(
        default=None,
        description="only in session.created, where the server gives each "
        "session a secret: following or listing the session needs it",
    )


class _Event(_EventModel):
    seq: int = Field(ge=0, description="0, 1, 2, ... within a session: a gap means a lost event")
    session_id: str | None = Field(default=None, description="absent only on a refusal before any session exists")


class SessionCreated(_Event):
    type: Literal["session.created"]
    session: SessionInfo


class SessionUpdated(_Event):
    type: Literal["session.updated"]
    session: SessionInfo


class SessionClosed(_Event):
    type: Literal["session.closed"]
    reason: str = Field(
        description="finished, client_disconnected, idle_timeout, context_full, server_error, server_shutdown"
    )


class FrameProcessed(_Event):
    type: Literal["input_frame.processed"]
    video_time: float
    frame_index: int
    latency_s: float
    pending_frames: int


class FrameDropped(_Event):
    type: Literal["input_frame.dropped"]
    video_time: float
    reason: str = Field(description="queue_full: the model fell behind and the oldest waiting frame was dropped")


class UserItem(_EventModel):
    role: Literal["user"]
    content: str
    video_time: float


class ItemCreated(_Event):
    type: Literal["conversation.item.created"]
    item: UserItem


class ResponseCreated(_Event):
    type: Literal["response.created"]
    response_id: str


class ResponseTextDelta(_Event):
    type: Literal["response.text.delta"]
    response_id: str
    delta: str


class ResponseDone(_Event):
    type: Literal["response.done"]
    response_id: str
    video_time: float = Field(description="the turn's time in the video")
    text: str
    frame_time: float | None = Field(description="the frame the turn followed; null at finish")
    frame_index: int
    latency_s: float


class ErrorDetail(_EventModel):
    code: str = Field(
        description="invalid_frame, frame_too_large, rate_limited, invalid_message, session_limit, "
        "idle_timeout, context_full, server_error, ..."
    )
    message: str


class ErrorEvent(_Event):
    type: Literal["error"]
    error: ErrorDetail


class Health(_EventModel):
    """`GET /health`."""

    status: Literal["ok"]
    model: str
    sessions_active: int


class SessionList(_EventModel):
    """`GET /v1/sessions`."""

    sessions: list[SessionInfo]


class ApiErrorDetail(_EventModel):
    code: str
    message: str


class ApiError(_EventModel):
    """The body of an HTTP error of the streaming routes."""

    error: ApiErrorDetail


ServerEvent = Annotated[
    SessionCreated
    | SessionUpdated
    | SessionClosed
    | FrameProcessed
    | FrameDropped
    | ItemCreated
    | ResponseCreated
    | ResponseTextDelta
    | ResponseDone
    | ErrorEvent,
    Field(discriminator="type"),
]

CLIENT_MESSAGE: TypeAdapter = TypeAdapter(ClientMessage)
SERVER_EVENT: TypeAdapter = TypeAdapter(ServerEvent)


# ---------------------------------------------------------------------- parsing
class MessageError(ValueError):
    """A client message that cannot be used; the text names the field and the problem."""


def loads(text: str | bytes) -> Any:
    """JSON text -> a value; MessageError for anything that is not JSON, including nesting too deep to parse
    (Python's parser recurses, so a deeply nested document raises RecursionError, caught here)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise MessageError("the message is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError is a ValueError; so is a 5000-digit int
        raise MessageError(f"the message is not JSON ({error})") from None


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """'field.path: problem' for each of pydantic's errors, joined by '; '."""
    return "; ".join(prefix + _one_error(item) for item in error.errors(include_url=False))


def _one_error(item: dict, skip: int = 0) -> str:
    location = ".".join(str(part) for part in item["loc"][skip:])
    message = item["msg"].removeprefix("Value error, ")
    value = item.get("input")
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 40):
        if item["type"] not in ("extra_forbidden", "value_error", "missing"):
            message += f" (got {value!r})"
    return f"{location}: {message}" if location else message


def parse_client_message(text: str | bytes) -> SessionUpdate | ConversationItemCreate | SessionFinish | ResponseCreate:
    """One client text message -> its model; MessageError says what is wrong (which field, and why)."""
    data = loads(text)
    if not isinstance(data, dict) or "type" not in data:
        raise MessageError("a message must be a JSON object with a 'type'")
    kind = data["type"]
    if kind not in CLIENT_TYPES:
        shown = kind if isinstance(kind, str) and len(kind) <= 64 else type(kind).__name__
        raise MessageError(
            f"unknown message type {shown!r}; valid: {', '.join(CLIENT_TYPES)} "
            "(frames are binary messages, or input_image items)"
        )
    try:
        return CLIENT_MESSAGE.validate_python(data)
    except ValidationError as error:
        # The first location part is the union's tag (the message type): say it once, in front.
        details = "; ".join(_one_error(item, skip=1) for item in error.errors(include_url=False))
        raise MessageError(f"{kind}: {details}") from None
    except RecursionError:
        raise MessageError("the message is nested too deeply") from None


def parse_frame_header(data: bytes) -> float:
    """The video time of a binary frame's JSON header; MessageError says what is wrong."""
    header = loads(data)
    if not isinstance(header, dict):
        raise MessageError("the frame header must be a JSON object")
    try:
        return float(FrameHeader.model_validate(header).video_time)
    except ValidationError as error:
        raise MessageError(
            f"the frame header needs a number video_time in [0, {MAX_VIDEO_TIME:g}]: {describe_errors(error)}"
        ) from None


# ---------------------------------------------------------------------- JSON Schemas
SCHEMAS: dict[str, Any] = {"client_message": ClientMessage, "server_event": ServerEvent, "frame_header": FrameHeader}
SCHEMA_DIR = Path(__file__).resolve().parents[4] / "docs" / "schemas"


def json_schemas() -> dict[str, dict]:
    """{file stem: JSON Schema} of the client messages, the server events and the binary frame header."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = TypeAdapter(model).json_schema()
        out[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": name.replace("_", " ").capitalize() + " (videollm-online streaming API)",
            **schema,
        }
    return out


def render_schema(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path = SCHEMA_DIR) -> list[Path]:
    """Write docs/schemas/<name>.json; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.json"
        path.write_text(render_schema(schema), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_schemas():
        print(written)
