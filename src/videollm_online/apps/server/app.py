"""The HTTP/WebSocket API: a thin adapter from sockets to `LiveSession`s over one shared worker.

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
import math
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ...core.model import LiveModel
from ...core.text import StreamTemplate
from . import protocol as P
from .config import ServerConfig
from .memory import MemoryReleaser
from .metrics import Metrics
from .openai_compat import API_DESCRIPTION, add_openai_routes, package_version
from .realtime import apply_message
from .schema import ApiError, Health, SessionList
from .sessions import LiveSession, SessionParams
from .worker import SerialWorker, Worker, public_name

log = logging.getLogger("videollm_online.apps.server")
SSE_KEEPALIVE_S = 15.0
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_AGAIN = 1000, 1008, 1013
SECRET_HEADER = "X-Session-Secret"
MAX_SECRETS = 64


class Hub:
    """The sessions open now, and the numbers about them."""

    def __init__(self, worker: Worker, config: ServerConfig) -> None:
        self.worker = worker
        self.config = config
        self.metrics = Metrics()
        self.sessions: dict[str, LiveSession] = {}
        self.releaser = MemoryReleaser()
        self.completions_running: Callable[[], int] = lambda: 0
        """How many OpenAI-compatible completions are running (they hold worker sessions too); set by `create_app`."""

    def authorized(self, headers, query_params) -> bool:
        """Whether a request carries the server's token (always, when it has none)."""
        if self.config.token is None:
            return True
        scheme, _, supplied = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            supplied = query_params.get("token", "")
        return hmac.compare_digest(supplied.strip().encode(), self.config.token.encode())

    def open(self, params: SessionParams) -> LiveSession:
        session = LiveSession(self.worker, self.config, self.metrics, params)
        self.sessions[session.id] = session
        self.metrics.sessions_total += 1
        self.metrics.sessions_active = len(self.sessions)
        return session

    def release(self, session: LiveSession, reason: str) -> None:
        """End a session and free its slot; the slot is freed even when closing it fails."""
        try:
            session.close(reason)
        except Exception:  # noqa: BLE001 - a failed close must not keep the slot
            log.exception("closing session %s failed", session.id)
        finally:
            if self.sessions.pop(session.id, None) is not None:
                session.log.clear()  # nobody can start following it now; current followers have their queues
                self._release_memory_after(session)
            self.metrics.sessions_active = len(self.sessions)

    def _release_memory_after(self, session: LiveSession) -> None:
        """Once the worker has dropped the session's cache, give the memory back (debounced)."""
        loop = asyncio.get_running_loop()

        def schedule(_) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the server is shutting down
                loop.call_soon_threadsafe(self.releaser.schedule)

        if session.engine_closed is not None:
            session.engine_closed.add_done_callback(schedule)

    def visible(self, secrets: list[str]) -> list[LiveSession]:
        """The sessions a caller may see: those whose secret it holds."""
        return [session for session in self.sessions.values() if session.opens(secrets)]

    def owned(self, session_id: str, secrets: list[str]) -> LiveSession | None:
        """The open session `session_id` if the caller holds its secret, else None (an unknown id and a wrong
        secret look the same, so ids cannot be probed). Every route that reads or acts on a session goes through
        this."""
        session = self.sessions.get(session_id)
        return session if session is not None and session.opens(secrets) else None

    def render_metrics(self) -> str:
        pending = sum(session.pending_frames for session in self.sessions.values())
        return self.metrics.render(getattr(self.worker, "pending", 0), pending)


def create_app(
    model: LiveModel | Worker,
    template: StreamTemplate | None = None,
    *,
    config: ServerConfig | None = None,
    name: str = "model",
) -> FastAPI:
    """The API over a model (run on one worker thread) or over any `Worker`. The routes find the sessions, the
    worker and the settings in `app.state.hub`."""
    config = config or ServerConfig()
    if isinstance(model, LiveModel):
        if template is None:
            raise ValueError("create_app needs the model's template")
        worker: Worker = SerialWorker(model, template, name)
    else:
        worker = model
    hub = Hub(worker, config)
    app = FastAPI(title="videollm-online", lifespan=_lifespan, description=API_DESCRIPTION, version=package_version())
    app.state.hub = hub
    app.include_router(router)
    hub.completions_running = add_openai_routes(
        app, worker, config, hub.metrics, hub.authorized, lambda: len(hub.sessions)
    )
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    hub: Hub = app.state.hub
    for session in list(hub.sessions.values()):
        hub.release(session, "server_shutdown")
    hub.releaser.cancel()
    hub.worker.shutdown()


def _session_secrets(request: Request) -> list[str]:
    """Secrets a caller presents: `X-Session-Secret` (comma-separated for several) and/or `?secret=` (repeatable;
    for browsers' EventSource, which cannot set headers)."""
    supplied = request.headers.get(SECRET_HEADER, "").split(",") + request.query_params.getlist("secret")
    return [secret.strip() for secret in supplied if secret.strip()][:MAX_SECRETS]


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "unauthorized", "message": "send Authorization: Bearer <token>"}},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


router = APIRouter()
"""The API's own routes (the OpenAI-compatible ones are `openai_compat`'s)."""


@router.get("/health", responses={200: {"model": Health}})
async def health(request: Request) -> dict:
    hub: Hub = request.app.state.hub
    return {"status": "ok", "model": public_name(hub.worker.name), "sessions_active": len(hub.sessions)}


@router.get("/metrics", response_class=PlainTextResponse, responses={401: {"model": ApiError}})
async def metrics(request: Request):
    hub: Hub = request.app.state.hub
    if not hub.authorized(request.headers, request.query_params):
        return _unauthorized()
    return PlainTextResponse(hub.render_metrics(), media_type=hub.metrics.content_type)


@router.get("/v1/sessions", responses={200: {"model": SessionList}, 401: {"model": ApiError}})
async def sessions(request: Request):
    hub: Hub = request.app.state.hub
    if not hub.authorized(request.headers, request.query_params):
        return _unauthorized()
    return {"sessions": [session.describe() for session in hub.visible(_session_secrets(request))]}


@router.get(
    "/v1/sessions/{session_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "server-sent events: `id:` seq, `event:` type, `data:` the event "
            "(docs/schemas/server_event.json)",
            "content": {"text/event-stream": {}},
        },
        401: {"model": ApiError},
        404: {"model": ApiError},
    },
)
async def follow(session_id: str, request: Request):
    hub: Hub = request.app.state.hub
    if not hub.authorized(request.headers, request.query_params):
        return _unauthorized()
    session = hub.owned(session_id, _session_secrets(request))
    if session is None:
        return JSONResponse(
            {
                "error": {
                    "code": "not_found",
                    "message": f"no open session {session_id!r} for "
                    f"this secret: send the secret from session.created as {SECRET_HEADER} "
                    "or ?secret=",
                }
            },
            status_code=404,
        )
    since = request.headers.get("last-event-id") or request.query_params.get("since")
    try:
        since_seq = int(since) if since is not None else -1
    except ValueError:
        return JSONResponse(
            {"error": {"code": "invalid_request", "message": "since must be an integer"}}, status_code=400
        )
    queue = session.subscribe(since_seq)
    return StreamingResponse(
        _sse(session, queue),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    config = hub.config
    if not hub.authorized(websocket.headers, websocket.query_params):
        await websocket.close(code=CLOSE_POLICY, reason="unauthorized")
        return
    await websocket.accept()
    try:
        params = SessionParams.parse(dict(websocket.query_params))
    except ValueError as error:
        await _refuse(websocket, P.INVALID_MESSAGE, str(error), CLOSE_POLICY)
        return
    if len(hub.sessions) + hub.completions_running() >= config.max_sessions:
        await _refuse(
            websocket,
            P.SESSION_LIMIT,
            f"the server is at its limit of {config.max_sessions} sessions; try again later",
            CLOSE_TRY_AGAIN,
        )
        return
    try:
        session = hub.open(params)
    except Exception as error:  # noqa: BLE001 - e.g. the worker has no free slot: say so, hold nothing
        log.exception("opening a session failed")
        await _refuse(
            websocket,
            P.SERVER_ERROR,
            f"the server could not open a session ({type(error).__name__}); try again later",
            CLOSE_TRY_AGAIN,
        )
        return
    # From here on the session holds a slot: whatever happens below (a bad message, a bug, a broken socket,
    # cancellation), the `finally` releases it.
    queue = session.subscribe()
    sender = receiver = ended = None
    try:
        sender = asyncio.create_task(_send_events(websocket, queue))
        session.emit(P.SESSION_CREATED, session={**session.describe(), "secret": session.secret})
        receiver = asyncio.create_task(_receive(websocket, session, config))
        ended = asyncio.create_task(session.done.wait())
        await asyncio.wait({receiver, sender, ended}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        reason = _outcome(receiver) or ("finished" if session.closed else "client_disconnected")
        for task in (ended, receiver):
            if task is not None:
                task.cancel()
        hub.release(session, reason)  # no-op when the session already closed itself
        session.subscribers.discard(queue)
        queue.put_nowait(None)
        if sender is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, timeout=10.0)  # flush what is queued, session.closed last
        if websocket.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(code=CLOSE_NORMAL)


async def _refuse(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    await websocket.send_text(json.dumps({"type": P.ERROR, "seq": 0, "error": {"code": code, "message": message}}))
    await websocket.close(code=close_code, reason=code)


def _outcome(task: asyncio.Task | None) -> str | None:
    """Why the receive loop stopped, if it did; never raises (a failed or cancelled task has no reason)."""
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    result = task.result()
    return result if isinstance(result, str) else None


def _dumps(event: dict) -> str:
    """An event as strict JSON. Inputs are checked finite where they come in; should a non-finite number slip
    through anyway, it goes out as null rather than as `Infinity` / `NaN` (which are not JSON)."""
    try:
        return json.dumps(event, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(event), ensure_ascii=False, allow_nan=False)


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


async def _send_events(websocket: WebSocket, queue: asyncio.Queue) -> None:
    """Forward a session's events to its socket, in order, until the session ends (None) or the socket breaks."""
    while True:
        event = await queue.get()
        if event is None:
            return
        await websocket.send_text(_dumps(event))
        if event["type"] == P.SESSION_CLOSED:
            return


async def _receive(websocket: WebSocket, session: LiveSession, config: ServerConfig) -> str:
    """Read the client's messages into the session; returns why reading stopped. Never raises: a message the
    session refuses gets an `error` event and the session goes on; a failure nobody foresaw gets a `server_error`
    event and ends the session (the caller then frees its slot)."""
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
        is_frame = message.get("bytes") is not None
        try:
            if is_frame:
                session.add_frame(message["bytes"])
            else:
                apply_message(session, message.get("text") or "")  # today's shapes and OpenAI Realtime's
        except RecursionError:  # json (and pydantic) give up on deep nesting with this, not a ValueError
            session.error(
                P.INVALID_FRAME if is_frame else P.INVALID_MESSAGE,
                "the message is nested too deeply to read (send a flat JSON object)",
            )
        except ValueError as error:  # json.JSONDecodeError, FrameError, pydantic's ValidationError are ValueErrors
            session.error(P.INVALID_FRAME if isinstance(error, P.FrameError) else P.INVALID_MESSAGE, str(error))
        except Exception as error:  # noqa: BLE001 - a bug, not the client's fault: end this session, keep the server
            log.exception("session %s failed on a client message", session.id)
            session.error(
                P.SERVER_ERROR, f"the server failed on this message ({type(error).__name__}); the session is closed"
            )
            return "server_error"


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
            yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {_dumps(event)}\n\n"
            if event["type"] == P.SESSION_CLOSED:
                return
    finally:
        session.subscribers.discard(queue)
