"""When the model speaks: the one decision rule, its settings, their defaults and their checks.

After each frame the model predicts its next token. The frame-interval token (`silence`) means "stay silent"; the
model responds when P(silence) falls below the threshold. The seed's streaming metrics add a second clause (also
respond when the most likely token is not the silence token), kept here as `argmax_clause` so that the metrics and
the engines apply the same rule, each with its own setting. Every engine, the reference loop, the metrics, the
server and the web demo call `DecisionPolicy`: a different rule is a change to this file only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

DEFAULT_THRESHOLD = 0.725
"""The seed's threshold on P(silence) (its demo's `frame_token_interval_threshold`)."""
DEFAULT_MAX_NEW_TOKENS = 128
"""A response stops at eos or after this many tokens."""
MAX_NEW_TOKENS = 4096
"""The longest response any setting may ask for."""


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
        from ..utils.checks import check_number

        check_number("threshold", self.threshold, low=0.0, high=1.0)
        check_number("max_new_tokens", self.max_new_tokens, low=1, high=MAX_NEW_TOKENS, integer=True)

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
