"""Settings of the API server: where it listens, who may use it, and the limits that keep one client from
starving the others."""

from __future__ import annotations

import os
from dataclasses import dataclass

TOKEN_ENV = "VIDEOLLM_ONLINE_TOKEN"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    """Loopback unless told otherwise: exposing a model is a choice, not a default."""
    port: int = 8000
    """TCP port to listen on (0: any free one)."""
    token: str | None = None
    """When set, every endpoint but /health needs `Authorization: Bearer TOKEN` (or `?token=` where a browser
    cannot set headers: WebSocket, EventSource)."""
    max_sessions: int = 64
    """Streaming sessions at once; one more is refused with a `session_limit` error."""
    max_frame_bytes: int = 2 * 1024 * 1024
    """Largest frame message; a larger one gets a `frame_too_large` error and is dropped (the session goes on)."""
    max_frame_pixels: int = 4096 * 4096
    """Largest decoded picture (checked from the image header, before decoding)."""
    max_frame_rate: float = 30.0
    """Frame messages a session may send per wall-clock second; more get `rate_limited` errors."""
    max_pending_frames: int = 8
    """Frames a session may have waiting for the model. When the model falls behind, the oldest waiting frame is
    dropped (an `input_frame.dropped` event): the model keeps watching the present rather than lagging further."""
    max_query_rate: float = 1.0
    """Questions a session may ask per wall-clock second; more get `rate_limited` errors (the question is not
    taken)."""
    max_pending_queries: int = 4
    """Questions a session may have asked and not had answered yet; more get `rate_limited` errors. With the fair
    worker this bounds how long one session's questions can hold up everyone's frames."""
    idle_timeout: float = 60.0
    """Seconds without a message from the client, while its session has no work left, before it is closed."""
    max_query_chars: int = 2000
    """Longest question in characters."""
    event_log: int = 10000
    """Events kept per session, for SSE followers that join late or reconnect (`Last-Event-ID`)."""
    allowed_video_dirs: tuple[str, ...] = ()
    """Directories whose files (and subdirectories') `POST /v1/chat/completions` may read by path; none: the route
    takes only uploaded videos (data URLs)."""
    max_upload_bytes: int = 64 * 1024 * 1024
    """Largest `POST /v1/chat/completions` body (an uploaded video travels in it, base64)."""

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes must be >= 1, got {self.max_upload_bytes}")
        self.allowed_video_dirs = tuple(os.fspath(directory) for directory in self.allowed_video_dirs)
        for directory in self.allowed_video_dirs:
            if not os.path.isdir(directory):
                raise ValueError(f"allowed video directory {directory!r} is not a directory")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ValueError("the token must not be empty")
        for name in (
            "max_sessions",
            "max_frame_bytes",
            "max_frame_pixels",
            "max_pending_frames",
            "max_query_chars",
            "event_log",
            "max_pending_queries",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_frame_rate", "idle_timeout", "max_query_rate"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")

    @property
    def ws_max_size(self) -> int:
        """The WebSocket message limit given to uvicorn: room above `max_frame_bytes`, so that a frame a little too
        large gets a clear error event; a message over this closes the connection (code 1009)."""
        return 4 * self.max_frame_bytes + 65536

    @staticmethod
    def token_from_env() -> str | None:
        return os.environ.get(TOKEN_ENV) or None
