"""Streaming inference: `StreamSession` (the engine) and `reference_stream` (the seed's loop, the oracle)."""

from .reference import reference_stream
from .session import EngineConfig, StreamEvent, StreamSession

__all__ = ["EngineConfig", "StreamEvent", "StreamSession", "reference_stream"]
