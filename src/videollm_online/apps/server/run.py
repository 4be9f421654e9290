"""Running the API under uvicorn: in the foreground (`videollm-online serve`) or on a background thread (tests,
the load test, embedding in another program)."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time

import uvicorn

from .config import ServerConfig


class RedactSecrets(logging.Filter):
    """Blanks `token=...` and `secret=...` in log records: uvicorn logs each request's path with its query string
    (the access log, and WebSocket handshakes), and browsers must send the token there."""

    PATTERN = re.compile(r"((?:^|[?&;\s])(?:token|secret|access_token)=)[^&\s\"']*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: self.redact(arg) if isinstance(arg, str) else arg for key, arg in record.args.items()}
        return True

    @classmethod
    def redact(cls, text: str) -> str:
        return cls.PATTERN.sub(r"\1REDACTED", text)


def redact_server_logs() -> None:
    """Put `RedactSecrets` on uvicorn's loggers (after uvicorn has configured them: its dictConfig keeps filters)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn.asgi"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())


def uvicorn_config(app, config: ServerConfig, *, log_level: str = "info") -> uvicorn.Config:
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        ws="websockets-sansio",
        ws_max_size=config.ws_max_size,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    redact_server_logs()  # uvicorn.Config has just configured the loggers
    return settings


def serve(app, config: ServerConfig, *, log_level: str = "info") -> None:
    """Serve until interrupted."""
    uvicorn.Server(uvicorn_config(app, config, log_level=log_level)).run()


class BackgroundServer:
    """`with BackgroundServer(app, config) as server:` serves on a thread; `server.url` is its base URL.
    Port 0 picks a free port."""

    def __init__(self, app, config: ServerConfig, *, log_level: str = "warning") -> None:
        self.config = config
        self._server = uvicorn.Server(uvicorn_config(app, config, log_level=log_level))
        self._server.install_signal_handlers = lambda: None  # not the main thread
        self._thread = threading.Thread(target=self._server.run, name="videollm-server", daemon=True)
        self.port = config.port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (is the port free?)")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets and sockets[0].family in (socket.AF_INET, socket.AF_INET6):
            self.port = sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def serve_model(model, template, name: str, config: ServerConfig, *, log_level: str = "info") -> None:
    """`videollm-online serve`: the API over a loaded model, until interrupted."""
    from .app import create_app

    app = create_app(model, template, config=config, name=name)
    warm_up(app)
    print(
        f"videollm-online: serving {name} on http://{config.host}:{config.port} (WebSocket /v1/realtime, "
        f"SSE /v1/sessions/ID/events, /health, /metrics){'; bearer token required' if config.token else ''}",
        flush=True,
    )
    serve(app, config, log_level=log_level)


def warm_up(app) -> None:
    """One silent frame through the model before the first client (`SerialWorker.warm_up`), where the worker
    has it."""
    warm = getattr(app.state.hub.worker, "warm_up", None)
    if warm is not None:
        print(f"videollm-online: model warmed up in {warm():.1f} s", flush=True)
