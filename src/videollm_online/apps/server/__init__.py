"""The streaming API server (`videollm-online serve`): FastAPI + uvicorn over a shared inference backend.

`create_app` needs the `serve` extra (fastapi); `backend` and `protocol` do not, so the web demo and the client can
use them without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backend import BackendSession, SerialBackend, StreamBackend
from .config import ServerConfig

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["BackendSession", "SerialBackend", "ServerConfig", "StreamBackend", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(name)
