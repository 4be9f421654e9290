"""A streaming session as the server holds it: the input queue, the ordered event log, and its followers.

Inputs (frames and queries) are taken in the order they arrive and handed to the worker one at a time, so a
session's frames are watched in order; events get consecutive `seq` numbers and go to every subscriber (the
WebSocket that owns the session, and any SSE followers). Everything here runs on the event loop; model work runs
on the worker's thread and comes back through futures and `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ...core.policy import LIVE_MAX_NEW_TOKENS, SERVER_MAX_NEW_TOKENS, check_max_new_tokens, check_threshold
from ...engine import EngineConfig, StreamEvent
from ...video.sampling import LiveSampler
from . import protocol as P
from .config import ServerConfig
from .metrics import Metrics
from .worker import ContextFullError, Worker, WorkerSession, public_name

log = logging.getLogger("videollm_online.apps.server")


@dataclass
class SessionParams:
    """What a client may choose when it opens a session (or later, with `session.update`)."""

    threshold: float | None = None
    max_new_tokens: int = LIVE_MAX_NEW_TOKENS
    fps: float | None = None
    """Frames per second of video time the model watches; extra frames are skipped. None: the model's (2)."""

    def __post_init__(self) -> None:
        check_threshold(self.threshold, optional=True)
        check_max_new_tokens(self.max_new_tokens, high=SERVER_MAX_NEW_TOKENS)
        if self.fps is not None and not 0 < self.fps <= 30:
            raise ValueError(f"fps must be in (0, 30], got {self.fps}")

    @classmethod
    def parse(cls, values: dict[str, Any]) -> SessionParams:
        """From query parameters or a JSON message (strings or numbers); ValueError names the bad field."""
        kwargs: dict[str, Any] = {}
        for name, kind in (("threshold", float), ("max_new_tokens", int), ("fps", float)):
            value = values.get(name)
            if value is None or value == "":
                continue
            try:
                if isinstance(value, bool):
                    raise ValueError
                number = kind(value)
                if kind is float and not math.isfinite(number):
                    raise ValueError
            except (TypeError, ValueError, OverflowError):  # int(Infinity) overflows
                raise ValueError(f"{name} must be a number, got {value!r}") from None
            kwargs[name] = number
        return cls(**kwargs)


def _within_rate(recent: deque[float], now: float, per_second: float) -> bool:
    """A sliding window of one second (or 1/rate, for rates under one a second): True, and `now` counted, while
    the arrivals in it stay under the rate."""
    window = max(1.0, 1.0 / per_second)
    while recent and recent[0] <= now - window:
        recent.popleft()
    if len(recent) >= per_second * window:
        return False
    recent.append(now)
    return True


@dataclass
class _Frame:
    video_time: float
    data: bytes
    received: float


@dataclass
class _Query:
    video_time: float
    text: str
    received: float


@dataclass
class _Finish:
    received: float


@dataclass
class _Response:
    id: str
    text: str = ""


@dataclass
class _Call:
    """The responses one worker call is streaming (created from the worker's token callbacks)."""

    responses: list[_Response] = field(default_factory=list)


class LiveSession:
    def __init__(self, worker: Worker, config: ServerConfig, metrics: Metrics, params: SessionParams) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.secret = secrets.token_urlsafe(24)
        """Sent once, in `session.created`, to the client that opened the session: following the session (SSE)
        and seeing it in the list need it. The id alone names a session; it does not open it."""
        self.created = time.time()
        self.worker = worker
        self.config = config
        self.metrics = metrics
        self.params = params
        self.engine: WorkerSession = worker.open(
            EngineConfig(threshold=params.threshold, max_new_tokens=params.max_new_tokens)
        )
        self.sampler = LiveSampler(params.fps or worker.frame_fps)
        self.log: deque[dict] = deque(maxlen=config.event_log)
        self.subscribers: set[asyncio.Queue] = set()
        self.closed = False
        self.engine_closed: Future | None = None
        """Done once the worker has dropped this session's cache (after `close`)."""
        self.finishing = False
        self.done = asyncio.Event()
        self._working = False
        self._seq = 0
        self._inputs: deque = deque()
        self._wake = asyncio.Event()
        self._pending_frames = 0
        self._last_time: float | None = None
        self._recent: deque[float] = deque()  # wall-clock arrival times of the last second's frames
        self._recent_queries: deque[float] = deque()
        self._open_queries = 0  # questions taken and not answered yet
        self._queries: deque[_Query] = deque()  # taken, in input order, not yet given to the model
        self._queries_in_model = 0  # given to the model, not answered yet
        self._response_counter = 0
        self._loop = asyncio.get_running_loop()
        self.task = asyncio.create_task(self._run(), name=f"session-{self.id}")

    # ------------------------------------------------------------------ events
    def describe(self) -> dict:
        return {
            "id": self.id,
            "model": public_name(self.worker.name),
            "threshold": self.engine.threshold,
            "max_new_tokens": self.engine.max_new_tokens,
            "fps": self.sampler.fps,
            "frame_resolution": self.worker.frame_resolution,
            "frames": self.engine_frames,
            "created": round(self.created, 3),
            "limits": {
                "max_frame_bytes": self.config.max_frame_bytes,
                "max_frame_pixels": self.config.max_frame_pixels,
                "max_frame_rate": self.config.max_frame_rate,
                "max_pending_frames": self.config.max_pending_frames,
                "max_query_rate": self.config.max_query_rate,
                "max_pending_queries": self.config.max_pending_queries,
                "idle_timeout": self.config.idle_timeout,
            },
        }

    def opens(self, supplied: Iterable[str]) -> bool:
        """Whether one of the secrets a caller supplied is this session's (compared in constant time)."""
        mine = self.secret.encode()
        return any(hmac.compare_digest(candidate.encode(), mine) for candidate in supplied)

    @property
    def engine_frames(self) -> int:
        return getattr(self.engine, "num_frames", -1)

    @property
    def pending_frames(self) -> int:
        return self._pending_frames

    @property
    def busy(self) -> bool:
        """Inputs waiting or being worked on, or a finish under way: a quiet client is then waiting for us, not
        idle."""
        return self.finishing or self._working or bool(self._inputs)

    def emit(self, type_: str, **fields: Any) -> dict:
        event = {"type": type_, "seq": self._seq, "session_id": self.id, **fields}
        self._seq += 1
        self.log.append(event)
        self.metrics.events[type_] += 1
        if type_ == P.ERROR:
            self.metrics.errors[fields["error"]["code"]] += 1
        for queue in self.subscribers:
            queue.put_nowait(event)
        return event

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.emit(P.ERROR, error={"code": code, "message": message, **extra})

    def subscribe(self, since: int | None = None) -> asyncio.Queue:
        """A queue of this session's events: those after `since` still in the log, then live ones."""
        queue: asyncio.Queue = asyncio.Queue()
        if since is not None:
            for event in self.log:
                if event["seq"] > since:
                    queue.put_nowait(event)
        self.subscribers.add(queue)
        return queue

    # ------------------------------------------------------------------ inputs (from the socket)
    def add_frame(self, message: bytes) -> None:
        now = time.monotonic()
        self.metrics.frames_received += 1
        if len(message) > self.config.max_frame_bytes:
            self.error(
                P.FRAME_TOO_LARGE,
                f"the frame message is {len(message)} bytes; the limit is "
                f"{self.config.max_frame_bytes} bytes (send a smaller JPEG)",
                limit=self.config.max_frame_bytes,
            )
            return
        if not _within_rate(self._recent, now, self.config.max_frame_rate):
            self.error(
                P.RATE_LIMITED,
                f"more than {self.config.max_frame_rate:g} frames in one second "
                "(max_frame_rate); this one is dropped (send at most the session's fps)",
                limit=self.config.max_frame_rate,
                limit_name="max_frame_rate",
            )
            return
        try:
            video_time, data = P.unpack_frame(message)  # its header checked by schema.FrameHeader (finite, bounded)
        except ValueError as error:
            self.error(P.INVALID_FRAME, str(error))
            return
        if self._last_time is not None and video_time < self._last_time:
            self.error(
                P.INVALID_FRAME,
                f"frames must come in video-time order: {video_time} after {self._last_time}",
                video_time=video_time,
            )
            return
        self._last_time = video_time
        if self.sampler.push(video_time) is None:  # finer than the session's fps: skipped, as narrate does
            self.metrics.frames_dropped["sampled"] += 1
            return
        if self._pending_frames >= self.config.max_pending_frames:
            self._drop_oldest_frame()
        self._pending_frames += 1
        self._push(_Frame(video_time, data, now))

    def _drop_oldest_frame(self) -> None:
        for item in self._inputs:
            if isinstance(item, _Frame):
                self._inputs.remove(item)
                self._pending_frames -= 1
                self.metrics.frames_dropped["queue_full"] += 1
                self.emit(P.FRAME_DROPPED, video_time=item.video_time, reason="queue_full")
                return

    def add_query(self, message: dict) -> None:
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a query needs a non-empty string 'text'")
        if len(text) > self.config.max_query_chars:
            raise ValueError(f"the query is {len(text)} characters; the limit is {self.config.max_query_chars}")
        # the time was checked (finite, in range) where the message was parsed: schema.py
        video_time = float(message.get("video_time", self._last_time or 0.0))
        now = time.monotonic()
        if self._open_queries >= self.config.max_pending_queries:
            self.error(
                P.RATE_LIMITED,
                f"{self._open_queries} questions are still waiting for their answers "
                f"(max_pending_queries); this one is not taken: ask again after an answer",
                limit=self.config.max_pending_queries,
                limit_name="max_pending_queries",
            )
            return
        if not _within_rate(self._recent_queries, now, self.config.max_query_rate):
            self.error(
                P.RATE_LIMITED,
                f"more than {self.config.max_query_rate:g} questions in one second "
                "(max_query_rate); this one is not taken",
                limit=self.config.max_query_rate,
                limit_name="max_query_rate",
            )
            return
        self._open_queries += 1
        self._push(_Query(video_time, text.strip(), now))

    def update(self, message: dict) -> None:
        if not isinstance(message, dict):
            raise ValueError(f"session.update takes an object of settings, got {type(message).__name__}")
        params = SessionParams.parse({k: message.get(k) for k in ("threshold", "max_new_tokens", "fps")})
        if params.threshold is not None:
            self.engine.threshold = params.threshold  # takes effect with the next frame the model watches
        if "max_new_tokens" in message:
            self.engine.max_new_tokens = params.max_new_tokens
        if params.fps is not None:
            self.sampler = LiveSampler(params.fps, first_index=math.floor((self._last_time or 0) * params.fps) + 1)
        self.emit(P.SESSION_UPDATED, session=self.describe())

    def finish(self) -> None:
        self.finishing = True
        self._push(_Finish(time.monotonic()))

    def _push(self, item) -> None:
        self._inputs.append(item)
        self._wake.set()

    # ------------------------------------------------------------------ the worker coroutine
    async def _run(self) -> None:
        try:
            while True:
                self._working = False
                while not self._inputs:
                    self._wake.clear()
                    await self._wake.wait()
                item = self._inputs.popleft()
                self._working = True
                if isinstance(item, _Frame):
                    self._pending_frames -= 1
                    await self._hand_over_queries()
                    await self._watch(item)
                elif isinstance(item, _Query):
                    self._queries.append(item)  # handed to the model before a later frame
                else:
                    await self._hand_over_queries(every=True)
                    await self._call(lambda on_token: self.engine.submit_finish(on_token), item.received, None)
                    self.close("finished")
                    return
        except ContextFullError as error:
            self.error(P.CONTEXT_FULL, f"{error}; open a new session to go on")
            self.close("context_full")
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug, not the client's fault: say so, end this session, keep the server
            log.exception("session %s failed", self.id)
            self.error(P.SERVER_ERROR, f"the server failed on this session ({type(error).__name__}); it is closed")
            self.close("server_error")

    async def _hand_over_queries(self, every: bool = False) -> None:
        """Give the model the next waiting question, when it holds none unanswered (or, at the finish, every one).
        One question at a time: a frame's call then answers at most one, so a session that asks many questions
        holds the worker for one answer at a time, and other sessions' frames get their turns in between."""
        while self._queries and (every or self._queries_in_model == 0):
            query = self._queries.popleft()
            await asyncio.wrap_future(self.engine.submit_query(query.video_time, query.text))
            self._queries_in_model += 1
            self.emit(P.ITEM_CREATED, item={"role": "user", "content": query.text, "video_time": query.video_time})

    async def _watch(self, frame: _Frame) -> None:
        try:
            image = await asyncio.to_thread(
                P.decode_image, frame.data, self.worker.frame_resolution, self.config.max_frame_pixels
            )
        except P.FrameError as error:
            self.metrics.frames_dropped["invalid"] += 1
            self.error(P.INVALID_FRAME, str(error), video_time=frame.video_time)
            return
        await self._call(
            lambda on_token: self.engine.submit_frame(frame.video_time, image, on_token),
            frame.received,
            frame.video_time,
        )
        latency = time.monotonic() - frame.received
        self.metrics.frame_done(latency)
        self.emit(
            P.FRAME_PROCESSED,
            video_time=frame.video_time,
            frame_index=self.engine_frames - 1,
            latency_s=round(latency, 4),
            pending_frames=self._pending_frames,
        )

    async def _call(self, submit, received: float, frame_time: float | None) -> None:
        """Run one worker call, streaming its responses as their tokens come, then close them."""
        call = _Call()
        on_token = self._token_callback(call)
        events: list[StreamEvent] = await asyncio.wrap_future(submit(on_token))
        answered = sum(event.role == "user" for event in events)
        self._open_queries -= min(self._open_queries, answered)
        self._queries_in_model -= min(self._queries_in_model, answered)
        assistant = [event for event in events if event.role == "assistant"]
        for index, event in enumerate(assistant):
            if index < len(call.responses):
                response = call.responses[index]
            else:  # a turn with no tokens (the model said eos at once): nothing was streamed
                response = self._open_response(call)
            text = event.text.strip()
            latency = time.monotonic() - received
            self.metrics.responses += 1
            self.metrics.response_latency.observe(latency)
            self.emit(
                P.RESPONSE_DONE,
                response_id=response.id,
                video_time=round(event.video_time, 3),
                text=text,
                frame_time=frame_time,
                frame_index=event.frame_index,
                latency_s=round(latency, 4),
            )

    def _open_response(self, call: _Call) -> _Response:
        self._response_counter += 1
        response = _Response(f"resp_{self._response_counter}")
        call.responses.append(response)
        self.emit(P.RESPONSE_CREATED, response_id=response.id)
        return response

    def _token_callback(self, call: _Call):
        """Called on the worker thread after each token; the text delta is worked out there and sent from the
        loop. A delta ending in a partial UTF-8 character waits for the next token."""
        decode = self.engine.decode

        def on_token(token_ids: list[int]) -> None:
            text = decode(token_ids)
            self._loop.call_soon_threadsafe(self._delta, call, text, len(token_ids) == 1)

        return on_token

    def _delta(self, call: _Call, text: str, first: bool) -> None:
        if self.closed:  # the client left while the worker was still generating
            return
        if first or not call.responses:
            self._open_response(call)
        response = call.responses[-1]
        stable = text.rstrip("\ufffd")
        if len(stable) > len(response.text) and stable.startswith(response.text):
            self.emit(P.RESPONSE_DELTA, response_id=response.id, delta=stable[len(response.text) :])
            response.text = stable

    # ------------------------------------------------------------------ ending
    def close(self, reason: str) -> None:
        """Stop taking inputs, release the model's cache, and tell subscribers (the last event)."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        if current is not self.task:
            self.task.cancel()
        self.engine_closed = self.engine.close()  # runs after any call of this session still on the worker
        self.emit(P.SESSION_CLOSED, reason=reason)
        self._inputs.clear()
        self._queries.clear()
        self._pending_frames = 0
        self.done.set()
