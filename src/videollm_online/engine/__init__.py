"""Streaming inference: `StreamSession` (one stream), `open_session` (on the default or the fast engine),
`BatchEngine` (many streams batched) and `reference_stream` (the seed's loop, the oracle)."""

from .batch import ENGINES, BatchEngine, open_session
from .reference import reference_stream
from .session import EngineConfig, StreamEvent, StreamSession

__all__ = ["ENGINES", "BatchEngine", "EngineConfig", "StreamEvent", "StreamSession", "open_session", "reference_stream"]
