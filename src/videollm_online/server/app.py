"""The HTTP/WebSocket API: a thin adapter from sockets to `LiveSession`s over one shared backend.

Routes: `GET /health` (open), `GET /metrics` (Prometheus text), `GET /v1/sessions`, `WS /v1/realtime` (a client's
own stream), `GET /v1/sessions/{id}/events` (SSE: follow a session read-only), the OpenAI-compatible
`GET /v1/models` and `POST /v1/chat/completions` (openai_compat.py), and the OpenAPI docs (`/docs`,
`/openapi.json`). docs/api.md is the protocol; docs/schemas/ the JSON Schemas of the WebSocket messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..model import LiveModel
from ..text import StreamTemplate
from . import protocol as P
from .backend import SerialBackend, StreamBackend
from .config import ServerConfig
from .metrics import Metrics
from .openai_compat import API_DESCRIPTION, add_openai_routes, package_version
from .realtime import apply_message
from .schema import ApiError, Health, SessionList
from .sessions import LiveSession, SessionParams

log = logging.getLogger("videollm_online.server")
SSE_KEEPALIVE_S = 15.0
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_AGAIN = 1000, 1008, 1013


class Hub:
    """The sessions open now, and the numbers about them."""

    def __init__(self, backend: StreamBackend, config: ServerConfig) -> None:
        self.backend = backend
        self.config = config
        self.metrics = Metrics()
        self.sessions: dict[str, LiveSession] = {}

    def open(self, params: SessionParams) -> LiveSession:
        session = LiveSession(self.backend, self.config, self.metrics, params)
        self.sessions[session.id] = session
        self.metrics.sessions_total += 1
        self.metrics.sessions_active = len(self.sessions)
        return session

    def release(self, session: LiveSession, reason: str) -> None:
        session.close(reason)
        self.sessions.pop(session.id, None)
        self.metrics.sessions_active = len(self.sessions)

    def render_metrics(self) -> str:
        pending = sum(session.pending_frames for session in self.sessions.values())
        return self.metrics.render(getattr(self.backend, "pending", 0), pending)


def create_app(model: LiveModel | StreamBackend, template: StreamTemplate | None = None, *,
               config: ServerConfig | None = None, name: str = "model") -> FastAPI:
    """The API over a model (run on one worker thread) or over any `StreamBackend`."""
    config = config or ServerConfig()
    if isinstance(model, LiveModel):
        if template is None:
            raise ValueError("create_app needs the model's template")
        backend: StreamBackend = SerialBackend(model, template, name)
    else:
        backend = model
    hub = Hub(backend, config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        for session in list(hub.sessions.values()):
            hub.release(session, "server_shutdown")
        backend.shutdown()

    app = FastAPI(title="videollm-online", lifespan=lifespan, description=API_DESCRIPTION, version=package_version())
    app.state.hub = hub

    def authorized(headers, query_params) -> bool:
        if config.token is None:
            return True
        scheme, _, supplied = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            supplied = query_params.get("token", "")
        return hmac.compare_digest(supplied.strip().encode(), config.token.encode())

    def unauthorized() -> JSONResponse:
        return JSONResponse({"error": {"code": "unauthorized", "message": "send Authorization: Bearer <token>"}},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health", responses={200: {"model": Health}})
    async def health() -> dict:
        return {"status": "ok", "model": backend.name, "sessions_active": len(hub.sessions)}

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: {"model": ApiError}})
    async def metrics(request: Request):
        if not authorized(request.headers, request.query_params):
            return unauthorized()
        return PlainTextResponse(hub.render_metrics(), media_type=hub.metrics.content_type)

    @app.get("/v1/sessions", responses={200: {"model": SessionList}, 401: {"model": ApiError}})
    async def sessions(request: Request):
        if not authorized(request.headers, request.query_params):
            return unauthorized()
        return {"sessions": [session.describe() for session in hub.sessions.values()]}

    @app.get("/v1/sessions/{session_id}/events", response_class=StreamingResponse,
             responses={200: {"description": "server-sent events: `id:` seq, `event:` type, `data:` the event "
                                             "(docs/schemas/server_event.json)", "content": {"text/event-stream": {}}},
                        401: {"model": ApiError}, 404: {"model": ApiError}})
    async def follow(session_id: str, request: Request):
        if not authorized(request.headers, request.query_params):
            return unauthorized()
        session = hub.sessions.get(session_id)
        if session is None:
            return JSONResponse({"error": {"code": "not_found", "message": f"no open session {session_id!r}"}},
                                status_code=404)
        since = request.headers.get("last-event-id") or request.query_params.get("since")
        try:
            since_seq = int(since) if since is not None else -1
        except ValueError:
            return JSONResponse({"error": {"code": "invalid_request", "message": "since must be an integer"}},
                                status_code=400)
        queue = session.subscribe(since_seq)
        return StreamingResponse(_sse(session, queue), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    completions_running = add_openai_routes(app, backend, config, hub.metrics, authorized, lambda: len(hub.sessions))

    @app.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        if not authorized(websocket.headers, websocket.query_params):
            await websocket.close(code=CLOSE_POLICY, reason="unauthorized")
            return
        await websocket.accept()
        try:
            params = SessionParams.parse(dict(websocket.query_params))
        except ValueError as error:
            await _refuse(websocket, P.INVALID_MESSAGE, str(error), CLOSE_POLICY)
            return
        if len(hub.sessions) + completions_running() >= config.max_sessions:
            await _refuse(websocket, P.SESSION_LIMIT, f"the server is at its limit of {config.max_sessions} "
                          "sessions; try again later", CLOSE_TRY_AGAIN)
            return
        session = hub.open(params)
        queue = session.subscribe()
        sender = asyncio.create_task(_send_events(websocket, queue))
        session.emit(P.SESSION_CREATED, session=session.describe())
        receiver = asyncio.create_task(_receive(websocket, session, config))
        ended = asyncio.create_task(session.done.wait())
        try:
            await asyncio.wait({receiver, sender, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            reason = "finished" if session.closed else "client_disconnected"
            if receiver.done() and not receiver.cancelled() and isinstance(receiver.result(), str):
                reason = receiver.result()
            receiver.cancel()
            hub.release(session, reason)  # no-op when the session already closed itself
            session.subscribers.discard(queue)
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, timeout=10.0)  # flush what is queued, session.closed last
            if websocket.client_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close(code=CLOSE_NORMAL)

    return app


async def _refuse(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    await websocket.send_text(json.dumps({"type": P.ERROR, "seq": 0, "error": {"code": code, "message": message}}))
    await websocket.close(code=close_code, reason=code)


async def _send_events(websocket: WebSocket, queue: asyncio.Queue) -> None:
    """Forward a session's events to its socket, in order, until the session ends (None) or the socket breaks."""
    while True:
        event = await queue.get()
        if event is None:
            return
        await websocket.send_text(json.dumps(event, ensure_ascii=False))
        if event["type"] == P.SESSION_CLOSED:
            return


async def _receive(websocket: WebSocket, session: LiveSession, config: ServerConfig) -> str:
    """Read the client's messages into the session; returns why reading stopped."""
    while True:
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout=config.idle_timeout)
        except asyncio.TimeoutError:
            if session.busy:  # the client waits for frames or a finish still being worked on
                continue
            session.error(P.IDLE_TIMEOUT, f"no message for {config.idle_timeout:g} s; the session is closed")
            return "idle_timeout"
        except (WebSocketDisconnect, RuntimeError):
            return "client_disconnected"
        if message["type"] == "websocket.disconnect":
            return "client_disconnected"
        if message.get("bytes") is not None:
            session.add_frame(message["bytes"])
            continue
        try:
            apply_message(session, message.get("text") or "")  # today's shapes and OpenAI Realtime's (schema.py)
        except ValueError as error:
            session.error(P.INVALID_MESSAGE, str(error))


async def _sse(session: LiveSession, queue: asyncio.Queue) -> AsyncIterator[str]:
    """Server-sent events of a session, ending after `session.closed` (or when the follower leaves)."""
    try:
        yield ": following session " + session.id + "\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=SSE_KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
            if event["type"] == P.SESSION_CLOSED:
                return
    finally:
        session.subscribers.discard(queue)
