"""A Python client of the streaming API (`videollm-online serve`): `AsyncStreamClient` for asyncio code, `StreamClient`
for plain scripts, `follow` for a session's server-sent events, and `stream_video` to send a file or a camera.

Needs the `serve` extra (websockets, httpx). The wire format is in `videollm_online.apps.server.protocol` and
docs/api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import numpy as np

from .server import protocol as P


class ApiError(RuntimeError):
    """The server refused the session, or closed it with an error."""


class AsyncStreamClient:
    """One streaming session: `async with AsyncStreamClient(url) as client:` then `send_frame`, `ask`, `events()`.

    `url` is the server's base (`ws://host:port` or `http://host:port`). Events come as dicts in order; the client
    counts gaps in their `seq` numbers as `lost` (0 unless the server or the network lost events)."""

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000",
        *,
        token: str | None = None,
        threshold: float | None = None,
        max_new_tokens: int | None = None,
        fps: float | None = None,
        max_size: int = 64 * 1024 * 1024,
    ):
        base = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        params = {
            k: v
            for k, v in (("threshold", threshold), ("max_new_tokens", max_new_tokens), ("fps", fps))
            if v is not None
        }
        self.url = f"{base}/v1/realtime" + (f"?{urlencode(params)}" if params else "")
        self.token = token
        self.max_size = max_size
        self.session: dict = {}
        self.created: dict = {}
        """The `session.created` event itself (`connect` reads it; `session` is its description)."""
        self.lost = 0
        self._next_seq = 0
        self._socket = None

    @property
    def session_id(self) -> str:
        return self.session.get("id", "")

    @property
    def secret(self) -> str:
        """The session's secret (from `session.created`): `follow` and the session list need it."""
        return self.session.get("secret", "")

    async def connect(self) -> dict:
        """Open the session; returns the server's description of it (id, resolution, fps, limits)."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._socket = await connect(self.url, additional_headers=headers, max_size=self.max_size, open_timeout=30)
        except InvalidStatus as error:
            raise ApiError(
                f"the server refused the connection (HTTP {error.response.status_code}); check the token"
            ) from None
        event = await self.receive()
        if event is None or event["type"] != P.SESSION_CREATED:
            detail = (event or {}).get("error", {}).get("message", "the connection closed")
            raise ApiError(f"no session: {detail}")
        self.created, self.session = event, event["session"]
        return self.session

    async def __aenter__(self) -> AsyncStreamClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()

    # ------------------------------------------------------------------ sending
    async def send_frame(self, video_time: float, image: bytes | np.ndarray) -> None:
        """A frame at a video time: JPEG/PNG bytes, or an (H, W, 3) uint8 RGB array (sent as JPEG)."""
        data = image if isinstance(image, (bytes, bytearray)) else P.encode_image(np.asarray(image))
        await self._socket.send(P.pack_frame(video_time, bytes(data)))

    async def send_raw(self, message: bytes | str) -> None:
        """Any message as is (tests of what the server does with a bad one)."""
        await self._socket.send(message)

    async def ask(self, text: str, video_time: float | None = None) -> None:
        """A question at a video time (default: the latest frame's); it is answered before the next frame."""
        message: dict[str, Any] = {"type": P.QUERY, "text": text}
        if video_time is not None:
            message["video_time"] = float(video_time)
        await self._socket.send(json.dumps(message))

    async def update(self, **settings: Any) -> None:
        """Change threshold / max_new_tokens / fps at once (a `session.updated` event follows)."""
        await self._socket.send(json.dumps({"type": P.SESSION_UPDATE, **settings}))

    async def finish(self) -> None:
        """The stream has ended: the server answers waiting queries, sends `session.closed`, and closes."""
        await self._socket.send(json.dumps({"type": P.FINISH}))

    # ------------------------------------------------------------------ receiving
    async def receive(self, timeout: float | None = None) -> dict | None:
        """The next event, or None once the server has closed the connection."""
        from websockets.exceptions import ConnectionClosed

        try:
            raw = await asyncio.wait_for(self._socket.recv(), timeout)
        except ConnectionClosed:
            return None
        event = json.loads(raw)
        seq = event.get("seq")
        if isinstance(seq, int) and event.get("session_id"):
            if seq > self._next_seq:
                self.lost += seq - self._next_seq
            self._next_seq = max(self._next_seq, seq + 1)
        return event

    async def events(self) -> AsyncIterator[dict]:
        """Events until the session closes (the last one is `session.closed`) or the connection does."""
        while True:
            event = await self.receive()
            if event is None:
                return
            yield event
            if event["type"] == P.SESSION_CLOSED:
                return


class StreamClient:
    """The same session from synchronous code: the socket lives on a background event loop. Events queue up
    as they arrive; `events(timeout)` yields them."""

    def __init__(self, url: str = "ws://127.0.0.1:8000", **options: Any) -> None:
        import queue

        self._client = AsyncStreamClient(url, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="videollm-client", daemon=True)
        self._thread.start()
        self._events: queue.Queue = queue.Queue()
        self.session = self._run(self._client.connect())
        self._reader = asyncio.run_coroutine_threadsafe(self._read(), self._loop)

    def _run(self, coroutine, timeout: float | None = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _read(self) -> None:
        try:
            async for event in self._client.events():
                self._events.put(event)
        finally:
            self._events.put(None)

    @property
    def lost(self) -> int:
        return self._client.lost

    def send_frame(self, video_time: float, image: bytes | np.ndarray) -> None:
        self._run(self._client.send_frame(video_time, image))

    def ask(self, text: str, video_time: float | None = None) -> None:
        self._run(self._client.ask(text, video_time))

    def update(self, **settings: Any) -> None:
        self._run(self._client.update(**settings))

    def finish(self) -> None:
        self._run(self._client.finish())

    def events(self, timeout: float | None = None) -> Iterator[dict]:
        """Events as they come; stops when the session closes, or after `timeout` seconds without one."""
        import queue

        while True:
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                return
            if event is None:
                return
            yield event

    def close(self) -> None:
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._run(self._client.close(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def follow(
    url: str,
    session_id: str,
    *,
    token: str | None = None,
    secret: str | None = None,
    since: int | None = None,
    timeout: float = 60.0,
) -> AsyncIterator[dict]:
    """A session's events through server-sent events (read-only), until `session.closed`. `secret` is the
    session's (`client.secret` of the client that opened it)."""
    import httpx

    base = url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if secret:
        headers["X-Session-Secret"] = secret
    if since is not None:
        headers["Last-Event-ID"] = str(since)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, read=timeout)) as http:
        async with http.stream("GET", f"{base}/v1/sessions/{session_id}/events", headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise ApiError(f"cannot follow session {session_id}: HTTP {response.status_code} {response.text}")
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    event = json.loads("\n".join(data))
                    data = []
                    yield event
                    if event["type"] == P.SESSION_CLOSED:
                        return


async def stream_video(
    url: str,
    source: Any,
    *,
    token: str | None = None,
    fps: float | None = None,
    threshold: float | None = None,
    max_new_tokens: int | None = None,
    realtime: bool = True,
    queries: list[tuple[float, str]] = (),
    on_event: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Send a video source (a file, a camera, anything `open_video` opens) to the server, frame by frame at its
    video time, asking `queries` (time, text) along the way; returns the `response.done` events. `realtime` paces
    a file to the wall clock, as a live feed would arrive. `on_event` gets every event, `session.created` first."""
    from ..video import open_video

    turns: list[dict] = []
    async with AsyncStreamClient(
        url, token=token, fps=fps, threshold=threshold, max_new_tokens=max_new_tokens
    ) as client:
        session = client.session
        if on_event is not None:
            on_event(client.created)  # the session's id (and what else the server sends) comes first

        async def read() -> None:
            async for event in client.events():
                if event["type"] == P.RESPONSE_DONE:
                    turns.append(event)
                if on_event is not None:
                    on_event(event)

        reader = asyncio.create_task(read())
        waiting = sorted(queries)
        stream = open_video(source, fps=session["fps"], resolution=session["frame_resolution"], realtime=realtime)
        frames = iter(stream)
        try:
            while True:
                frame = await asyncio.to_thread(next, frames, None)  # decoding and pacing off the loop
                if frame is None:
                    break
                while waiting and waiting[0][0] <= frame.time:
                    query_time, text = waiting.pop(0)
                    await client.ask(text, query_time)
                await client.send_frame(frame.time, await asyncio.to_thread(P.encode_image, frame.image))
            for query_time, text in waiting:
                await client.ask(text, query_time)
            await client.finish()
            await reader
        finally:
            stream.close()
            reader.cancel()
    return turns
