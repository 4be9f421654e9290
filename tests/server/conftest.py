"""Fixtures of the API and browser tests: tiny models and the bundled one, served by real uvicorn on loopback."""

from __future__ import annotations

import pytest

from tiny_models import make_decisive, tiny_model

pytest.importorskip("fastapi")
pytest.importorskip("websockets")

from api_helpers import start_server  # noqa: E402


@pytest.fixture(scope="module")
def tiny_decisive():
    model, template = tiny_model()
    make_decisive(model, template)
    return model, template


@pytest.fixture(scope="module")
def server(tiny_decisive):
    """An open server (no token) with room for every frame the tests send."""
    with start_server(*tiny_decisive, max_pending_frames=64, max_frame_bytes=256 * 1024) as running:
        yield running


@pytest.fixture(scope="session")
def bundled():
    """The bundled demo model (loaded once)."""
    from videollm_online.core.checkpoint import load_model

    return load_model()
