"""Evaluation of streaming video LLMs: the paper's streaming metrics (see `metrics`)."""

from .metrics import (
    ConversationResult,
    EventMatch,
    StreamMetrics,
    TurnResult,
    aggregate,
    evaluate_conversation,
    event_match,
    normalize_sentence,
)

__all__ = [
    "ConversationResult",
    "EventMatch",
    "StreamMetrics",
    "TurnResult",
    "aggregate",
    "evaluate_conversation",
    "event_match",
    "normalize_sentence",
]
