"""When the model speaks: the one decision rule, its settings, their defaults and their checks.

After each frame the model predicts its next token. The frame-interval token (`silence`) means "stay silent"; the
model responds when P(silence) falls below the threshold. The seed's streaming metrics add a second clause (also
respond when the most likely token is not the silence token), kept here as `argmax_clause` so that the metrics and
the engines apply the same rule, each with its own setting. Every engine, the reference loop, the metrics, the
server and the web demo call `DecisionPolicy`: a different rule is a change to this file only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

import torch

DEFAULT_THRESHOLD = 0.725
"""The seed's threshold on P(silence) (its demo's `frame_token_interval_threshold`)."""
DEFAULT_MAX_NEW_TOKENS = 128
"""A response stops at eos or after this many tokens."""
MAX_NEW_TOKENS = 8192
"""The longest response any setting may ask for: past any model's useful answer, and it bounds a request's time."""
LIVE_MAX_NEW_TOKENS = 64
"""The reply length of the live applications (the server's sessions and chat completions, the web demo)."""
SERVER_MAX_NEW_TOKENS = 1024
"""The longest reply a client of the server may ask for."""


def check_threshold(value: object, name: str = "threshold", optional: bool = False) -> None:
    """Raise ValueError naming `name` unless `value` is a number in [0, 1] (None passes when `optional`)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:  # NaN fails the range
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_max_new_tokens(value: object, high: int = MAX_NEW_TOKENS, name: str = "max_new_tokens") -> None:
    """Raise ValueError naming `name` unless `value` is a whole number in 1..high."""
    whole = isinstance(value, Real) and not isinstance(value, bool) and float(value).is_integer()
    if not whole or not 1 <= value <= high:
        raise ValueError(f"{name} must be a whole number in 1..{high}, got {value!r}")


def silence_probability(logits: torch.Tensor, silence_id: int) -> torch.Tensor:
    """P(silence token) under the softmax of logits (..., V), computed on the logits' device without the softmax."""
    logits = logits.float()
    return (logits[..., silence_id] - logits.logsumexp(dim=-1)).exp()


@dataclass(frozen=True)
class DecisionPolicy:
    """The rule that decides, after each frame, whether the model responds, and how long a response may be."""

    threshold: float = DEFAULT_THRESHOLD
    """Stay silent after a frame when P(frame interval) >= this, in [0, 1]; higher makes the model more talkative."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """A response stops at eos or after this many tokens."""
    argmax_clause: bool = False
    """Also respond when the most likely next token is not the frame interval (the seed's streaming metrics)."""

    def __post_init__(self) -> None:
        check_threshold(self.threshold)
        check_max_new_tokens(self.max_new_tokens)

    @classmethod
    def for_model(
        cls, model_config: Any, threshold: float | None = None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ) -> DecisionPolicy:
        """A model's policy: `threshold`, or (None) the one its `LiveConfig` was trained with."""
        if threshold is None:
            threshold = model_config.frame_token_interval_threshold
        return cls(threshold, max_new_tokens)

    def with_threshold(self, threshold: float | None) -> DecisionPolicy:
        """This policy with another threshold (None: unchanged)."""
        return self if threshold is None else replace(self, threshold=threshold)

    def responds(self, silence: torch.Tensor | float, top_is_silence: torch.Tensor | bool | None = None):
        """The decision, from P(silence) (a float or a tensor) and, for the argmax clause, whether the most likely
        token is the silence token. Elementwise on tensors."""
        speak = silence < self.threshold
        if self.argmax_clause:
            if top_is_silence is None:
                raise ValueError("the argmax clause needs whether the most likely token is the silence token")
            speak = speak | ~top_is_silence if isinstance(speak, torch.Tensor) else speak or not top_is_silence
        return speak

    def responds_to_logits(self, logits: torch.Tensor, silence_id: int) -> torch.Tensor:
        """The decision per row of logits (..., V)."""
        return self.responds(silence_probability(logits, silence_id), logits.argmax(dim=-1) == silence_id)
