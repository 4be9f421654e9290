"""The streaming API server (`videollm-online serve`): FastAPI + uvicorn over a shared inference worker.

`create_app` needs the `serve` extra (fastapi); `worker` and `protocol` do not, so the web demo and the client can
use them without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import ServerConfig
from .worker import SerialWorker, Worker, WorkerSession

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["WorkerSession", "SerialWorker", "ServerConfig", "Worker", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(name)
