"""Helpers of the API and browser tests: encoded pictures, servers on loopback, a time-limited asyncio runner."""

from __future__ import annotations

import asyncio
import io

import numpy as np
from PIL import Image

from videollm_online.apps.server import ServerConfig, create_app
from videollm_online.apps.server.run import BackgroundServer


def image_bytes(index: int, format: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small picture that differs from one index to the next, encoded."""
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=format)
    return buffer.getvalue()


def start_server(model, template, name: str = "tiny", **settings) -> BackgroundServer:
    config = ServerConfig(port=0, **settings)
    return BackgroundServer(create_app(model, template, config=config, name=name), config)


def run(coroutine, timeout: float = 120.0):
    """Run a test coroutine with an overall time limit (a hang fails the test instead of the suite)."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))
