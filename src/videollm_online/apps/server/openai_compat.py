"""The OpenAI-compatible routes: `GET /v1/models` and `POST /v1/chat/completions` over a whole video clip.

A chat completion narrates a clip the way a streaming session would: the clip is decoded at the model's frame rate,
the user's question is asked at `question_time` (default 0 s), every frame goes through the same worker as the
WebSocket sessions, and the assistant's turns (narration and answers) come back as the message content, one line
each, prefixed with the turn's video time: `[2.5s] ...`. With `stream: true` each turn is one
`chat.completion.chunk` server-sent event as soon as it is generated, and the stream ends with `data: [DONE]`.

The video is a `video_url` content part (the shape vLLM uses): a data URL (`data:video/mp4;base64,...`) carrying
the file, or a local path (`file:///...` or an absolute path) under a directory the server was started with
(`--allowed-video-dir`, repeatable); anything else is refused with a 4xx and an OpenAI-shaped error body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from ...core.policy import LIVE_MAX_NEW_TOKENS, SERVER_MAX_NEW_TOKENS
from ...engine import EngineConfig, StreamEvent
from ...engine.static import ContextFullError
from ...video import VideoSourceError, open_video
from .config import ServerConfig
from .metrics import Metrics
from .schema import MAX_TEXT_CHARS, MAX_VIDEO_TIME, describe_errors
from .worker import Worker, public_name

OWNED_BY = "videollm-online"
MAX_MESSAGES = 64
MAX_CLIP_FRAMES = 3600
"""Frames one completion watches at most (30 minutes at 2 fps); a longer clip ends with finish_reason `length`."""
API_DESCRIPTION = (
    "Live narration and questions over a video stream. The streaming session is the WebSocket "
    "`/v1/realtime` (not listed below: its messages and events are the components Realtime*, and JSON "
    "Schemas in docs/schemas/; the protocol is docs/api.md); `POST /v1/chat/completions` narrates a "
    "whole clip in one request."
)
VIDEO_DATA_URL = re.compile(r"data:video/([a-z0-9.+-]+);base64,", re.IGNORECASE)
VIDEO_SUFFIXES = {
    "mp4": ".mp4",
    "webm": ".webm",
    "quicktime": ".mov",
    "x-matroska": ".mkv",
    "x-msvideo": ".avi",
    "mpeg": ".mpg",
    "ogg": ".ogv",
}


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("videollm-online")
    except PackageNotFoundError:
        return "0+unknown"


# ---------------------------------------------------------------------- request and response models
class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TextPart(_Request):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class VideoURL(_Request):
    url: str = Field(
        description="data:video/mp4;base64,... (an upload), or file:///PATH / an absolute PATH under "
        "one of the server's --allowed-video-dir directories"
    )


class VideoPart(_Request):
    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | VideoPart, Field(discriminator="type")]


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: (
        Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
        | Annotated[list[ContentPart], Field(min_length=1, max_length=32)]
    )
    name: str | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request, with the video in a `video_url` part of the last user message. Fields this
    server does not use (temperature, top_p, ...: decoding is greedy) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(description="the served model's id (GET /v1/models)")
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    stream: bool = False
    max_tokens: Annotated[StrictInt, Field(ge=1, le=SERVER_MAX_NEW_TOKENS)] | None = Field(
        default=None, description=f"longest turn in tokens (each turn; default {LIVE_MAX_NEW_TOKENS})"
    )
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=SERVER_MAX_NEW_TOKENS)] | None = Field(
        default=None, description="same as max_tokens"
    )
    question_time: Annotated[StrictFloat, Field(ge=0, le=MAX_VIDEO_TIME)] = Field(
        default=0.0, description="extension: the video time (s) at which the question is asked"
    )
    threshold: Annotated[StrictFloat, Field(ge=0, le=1)] | None = Field(
        default=None, description="extension: silence threshold (default: the model's); 1 narrates every frame"
    )
    fps: Annotated[StrictFloat, Field(gt=0, le=30)] | None = Field(
        default=None, description="extension: frames per second watched (default: the model's)"
    )


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNED_BY


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Turn(BaseModel):
    video_time: float
    text: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    turns: list[Turn] = Field(description="extension: the assistant's turns with their video times")
    frames: int = Field(description="extension: frames watched")


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "a malformed request, or an unreadable video"),
        (401, "no valid bearer token"),
        (403, "a local path outside the allowed directories"),
        (404, "no such model or video"),
        (413, "the request body is over --max-upload-bytes"),
        (429, "the server is at its limit"),
    )
}


class OpenAIError(Exception):
    """An error the route answers with an OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, code=self.code, param=self.param, type=self.type)


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    type: str = "invalid_request_error",
    headers: dict | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------------- the video of a request
def local_video(url: str, allowed: tuple[str, ...]) -> Path:
    """The file a local path names, when it lies under an allowed directory (after resolving `..` and symlinks);
    OpenAIError otherwise. The check comes before any look at the file, so refusals say nothing about what exists."""
    text = url[len("file://") :] if url.startswith("file://") else url
    if not allowed:
        raise OpenAIError(
            403,
            "this server reads no local files: upload the video as a data URL "
            "(data:video/mp4;base64,...), or start the server with --allowed-video-dir DIR",
            code="video_path_not_allowed",
            param="video_url",
        )
    if "\x00" in text or not os.path.isabs(text):
        raise OpenAIError(
            400, "a local video must be an absolute path or a file:// URL", param="video_url", code="invalid_video_url"
        )
    real = Path(os.path.realpath(text))
    if not any(real.is_relative_to(os.path.realpath(root)) for root in allowed):
        raise OpenAIError(
            403,
            f"{url!r} is not under a directory this server may read (--allowed-video-dir)",
            code="video_path_not_allowed",
            param="video_url",
        )
    if not real.is_file():
        raise OpenAIError(404, f"no such video file: {url!r}", code="video_not_found", param="video_url")
    return real


def _write_upload(match: re.Match, url: str) -> Path:
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise OpenAIError(
            400, "the video data URL's base64 is not valid", param="video_url", code="invalid_video_url"
        ) from None
    if not data:
        raise OpenAIError(400, "the uploaded video is empty", param="video_url", code="invalid_video_url")
    suffix = VIDEO_SUFFIXES.get(match.group(1).lower(), ".mp4")
    handle, name = tempfile.mkstemp(prefix="videollm-upload-", suffix=suffix)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return Path(name)


def question_and_video(request: ChatCompletionRequest) -> tuple[str | None, str]:
    """The question (the text of the last user message; None for narration alone) and the video URL."""
    users = [message for message in request.messages if message.role == "user"]
    if not users:
        raise OpenAIError(400, "messages need a user message carrying the video", param="messages")
    last = users[-1]
    parts = [TextPart(type="text", text=last.content)] if isinstance(last.content, str) else last.content
    videos = [part.video_url.url for part in parts if isinstance(part, VideoPart)]
    if len(videos) != 1:
        raise OpenAIError(
            400,
            f"the last user message must carry exactly one video_url part, got {len(videos)} "
            '(e.g. {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,..."}})',
            param="messages",
            code="invalid_video_url",
        )
    text = "\n".join(part.text.strip() for part in parts if isinstance(part, TextPart) and part.text.strip())
    return text or None, videos[0]


# ---------------------------------------------------------------------- running a clip
class ClipRun:
    """The streaming narration of one clip on a worker session; iterate it for the assistant turns as they come."""

    def __init__(
        self,
        worker: Worker,
        path: Path,
        question: str | None,
        question_time: float,
        engine: EngineConfig,
        fps: float | None,
        metrics: Metrics,
    ) -> None:
        self.worker, self.question, self.question_time = worker, question, question_time
        self.metrics = metrics
        self.stream = open_video(path, fps=fps or worker.frame_fps, resolution=worker.frame_resolution)
        self.engine = engine
        self.frames = 0
        self.finish_reason: Literal["stop", "length"] = "stop"
        self.turns: list[StreamEvent] = []

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        session = self.worker.open(self.engine)
        frames = iter(self.stream)
        try:
            if self.question:
                await _result(session.submit_query(self.question_time, self.question))
            while True:
                if self.frames >= MAX_CLIP_FRAMES:
                    self.finish_reason = "length"
                    break
                frame = await asyncio.to_thread(next, frames, None)  # decoding off the event loop
                if frame is None:
                    break
                try:
                    events = await _result(session.submit_frame(frame.time, frame.image))
                except ContextFullError:  # the model's context is full: say what was said so far
                    self.finish_reason = "length"
                    break
                self.frames += 1
                self.metrics.completion_frames.inc()
                for event in self._assistant(events):
                    yield event
            for event in self._assistant(await _result(session.submit_finish())):
                yield event
        finally:  # nothing here awaits: a cancelled request (a client gone) would cut an await short
            session.close()
            self.close_stream()

    def close_stream(self) -> None:
        """Stop decoding (idempotent). The decoder's thread is joined on an executor thread, not on the loop."""
        asyncio.get_running_loop().run_in_executor(None, self.stream.close)

    def _assistant(self, events: list[StreamEvent]) -> list[StreamEvent]:
        turns = [event for event in events if event.role == "assistant" and event.text.strip()]
        self.turns += turns
        return turns


async def _result(future: Future):
    """The result of a worker call, awaited without tying the call to this task: `asyncio.wrap_future` cancels the
    worker's future when the awaiting task is cancelled (a client gone), and a worker may then fail to close the
    session (the batched one did). Here the call finishes on its own; `session.close()` drops its work."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def copy(done: Future) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.cancel()
        elif done.exception() is not None:
            waiter.set_exception(done.exception())
        else:
            waiter.set_result(done.result())

    def hand_over(done: Future) -> None:  # on the worker's thread
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped, nobody waits
            loop.call_soon_threadsafe(copy, done)

    future.add_done_callback(hand_over)
    return await waiter


def format_turn(event: StreamEvent) -> str:
    return f"[{event.video_time:.1f}s] {event.text.strip()}"


# ---------------------------------------------------------------------- the routes
def openai_router(
    worker: Worker,
    config: ServerConfig,
    metrics: Metrics,
    authorized: Callable[[Any, Any], bool],
    busy: Callable[[], int],
) -> tuple[APIRouter, Callable]:
    """The routes, sharing the app's worker, settings, metrics and token check; `busy()` counts the streaming
    sessions open, so a completion is refused when the server is at `max_sessions`. Also returns a function
    counting the completions running."""
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"], responses=ERROR_RESPONSES)
    created = int(time.time())
    active = [0]
    served = public_name(worker.name)

    def refuse_unauthorized(request: Request) -> JSONResponse | None:
        if authorized(request.headers, request.query_params):
            return None
        return error_response(
            401,
            "send Authorization: Bearer <token> (the openai client's api_key)",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @router.get("/models", response_model=ModelList, summary="The served model (OpenAI shape)")
    async def models(request: Request):
        return refuse_unauthorized(request) or ModelList(data=[ModelCard(id=served, created=created)])

    @router.post(
        "/chat/completions",
        response_model=ChatCompletion,
        summary="Narrate a video clip, answering the question in the last user message",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}},
            }
        },
        responses={
            200: {
                "description": "a chat.completion, or with stream=true a text/event-stream of "
                "chat.completion.chunk events ending with data: [DONE]",
                "content": {"text/event-stream": {}},
            }
        },
    )
    async def chat_completions(request: Request):
        refusal = refuse_unauthorized(request)
        if refusal is not None:
            return refusal
        upload: Path | None = None
        reserved = False
        try:
            body = await read_body(request, config.max_upload_bytes)
            try:
                parsed = ChatCompletionRequest.model_validate_json(body)
            except ValidationError as error:
                first = error.errors(include_url=False)[0]["loc"]
                raise OpenAIError(400, describe_errors(error), param=".".join(map(str, first)) or None) from None
            if parsed.model != served:
                raise OpenAIError(
                    404,
                    f"the model {parsed.model!r} does not exist; this server serves {served!r} (GET /v1/models)",
                    code="model_not_found",
                    param="model",
                )
            question, url = question_and_video(parsed)
            if busy() + active[0] >= config.max_sessions:
                raise OpenAIError(
                    429,
                    f"the server is at its limit of {config.max_sessions} sessions; try again later",
                    code="session_limit",
                    type="rate_limit_error",
                )
            active[0] += 1  # the slot is taken before any await, so two requests cannot both take the last one
            reserved = True
            match = VIDEO_DATA_URL.match(url[:64])
            if match:
                upload = await asyncio.to_thread(_write_upload, match, url)
                path = upload
            elif re.match(r"[a-z][a-z0-9+.-]*://", url, re.IGNORECASE) and not url.startswith("file://"):
                raise OpenAIError(
                    400,
                    "the server does not fetch video URLs: upload the video as a data URL "
                    "(data:video/mp4;base64,...) or name a file under an allowed directory",
                    param="video_url",
                    code="invalid_video_url",
                )
            else:
                path = local_video(url, config.allowed_video_dirs)
            max_tokens = parsed.max_completion_tokens or parsed.max_tokens or LIVE_MAX_NEW_TOKENS
            try:
                run = ClipRun(
                    worker,
                    path,
                    question,
                    parsed.question_time,
                    EngineConfig(threshold=parsed.threshold, max_new_tokens=max_tokens),
                    parsed.fps,
                    metrics,
                )
            except VideoSourceError as error:
                raise OpenAIError(
                    400, f"the video cannot be read: {error}", param="video_url", code="invalid_video"
                ) from None
        except BaseException as error:  # a refusal, or a cancelled request: free what was taken
            if reserved:
                active[0] -= 1
            _remove(upload)
            if not isinstance(error, OpenAIError):
                raise
            metrics.completions["error"] += 1
            return error.response()
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if parsed.stream:
            chunks = _stream(run, completion_id, served, upload, release)
            # Started here, so that its `finally` (which frees the slot, the upload and the decoder) runs however
            # the response ends, even when the client is gone before the first byte is sent.
            first = await chunks.__anext__()
            return StreamingResponse(
                _prepend(first, chunks),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        turns = run.__aiter__()

        async def consume() -> None:
            async for _ in turns:
                pass

        work, left = asyncio.ensure_future(consume()), asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, left}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():  # the client left: stop decoding and free the worker session now
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                metrics.completions["disconnected"] += 1
                return Response(status_code=499)
            work.result()
        except VideoSourceError as error:
            metrics.completions["error"] += 1
            return error_response(400, f"the video cannot be read: {error}", param="video_url", code="invalid_video")
        finally:
            left.cancel()
            release(upload)
            run.close_stream()
            await turns.aclose()
        metrics.completions["ok"] += 1
        return ChatCompletion(
            id=completion_id,
            created=int(time.time()),
            model=served,
            frames=run.frames,
            choices=[
                Choice(
                    message=AssistantMessage(content="\n".join(map(format_turn, run.turns))),
                    finish_reason=run.finish_reason,
                )
            ],
            turns=[Turn(video_time=round(t.video_time, 3), text=t.text.strip()) for t in run.turns],
        )

    def release(upload: Path | None, outcome: str | None = None) -> None:
        active[0] -= 1
        _remove(upload)
        if outcome:
            metrics.completions[outcome] += 1

    return router, lambda: active[0]


async def _stream(
    run: ClipRun, completion_id: str, model: str, upload: Path | None, release: Callable[..., None]
) -> AsyncIterator[str]:
    created = int(time.time())
    outcome = "disconnected"

    def chunk(delta: dict, finish_reason: str | None = None) -> str:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    turns = run.__aiter__()
    try:
        yield chunk({"role": "assistant", "content": ""})  # before any work: see the caller
        first = True
        try:
            async for turn in turns:
                yield chunk({"content": ("" if first else "\n") + format_turn(turn)})
                first = False
        except VideoSourceError as error:
            outcome = "error"
            body = {
                "error": {
                    "message": f"the video cannot be read: {error}",
                    "type": "invalid_request_error",
                    "param": "video_url",
                    "code": "invalid_video",
                }
            }
            yield f"data: {json.dumps(body)}\n\n"
        else:
            outcome = "ok"
            yield chunk({}, run.finish_reason)
        yield "data: [DONE]\n\n"
    finally:  # sync work first: when the client has gone the task is cancelled, and any await may be cut short
        release(upload, outcome)
        run.close_stream()  # also when the clip's iteration never started
        await turns.aclose()  # closes the worker session (its `finally` does not await)


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    try:
        yield first
        async for piece in rest:
            yield piece
    finally:
        await rest.aclose()


async def _disconnected(request: Request, every: float = 0.5) -> None:
    """Returns once the client has gone."""
    while not await request.is_disconnected():
        await asyncio.sleep(every)


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OpenAIError(
            413,
            f"the request is {int(declared)} bytes; the limit is {limit} bytes (--max-upload-bytes)",
            code="request_too_large",
        )
    chunks, size = [], 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise OpenAIError(
                413, f"the request is over the limit of {limit} bytes (--max-upload-bytes)", code="request_too_large"
            )
        chunks.append(piece)
    return b"".join(chunks)


def add_openapi_components(schema: dict) -> dict:
    """Put the request model's JSON Schema into an OpenAPI document's components (the route reads its body itself,
    to bound its size, so FastAPI does not add it)."""
    from pydantic import TypeAdapter

    from .schema import ClientMessage, ServerEvent

    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, model in (
        ("ChatCompletionRequest", ChatCompletionRequest),
        ("RealtimeClientMessage", ClientMessage),
        ("RealtimeServerEvent", ServerEvent),
    ):
        model_schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[name] = model_schema
    return schema


def add_openai_routes(
    app,
    worker: Worker,
    config: ServerConfig,
    metrics: Metrics,
    authorized: Callable[[Any, Any], bool],
    busy: Callable[[], int],
) -> Callable[[], int]:
    """Mount the routes on an app and complete its OpenAPI document with the request model and the WebSocket's
    message schemas; returns a function counting the completions running (they hold worker sessions too)."""
    router, active = openai_router(worker, config, metrics, authorized, busy)
    app.include_router(router)
    default_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            add_openapi_components(default_openapi())
        return app.openapi_schema

    app.openapi = openapi
    return active
