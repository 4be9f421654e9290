"""What a session asks of the model: feed ids and frame embeddings into its KV cache, read two numbers back.

A `Feed` is text ids followed optionally by one frame's embeddings. The backend runs one or several feeds of one
session in a single forward (several: the multi-frame mode, which guesses silence ahead) and returns, for each feed,
the greedy next token and P(silence) at the feed's last position: all the stream protocol needs, so a fast backend
can keep full logits on the GPU and read back a few numbers per frame. `truncate` rolls the cache back (the
multi-frame mode undoes the frames it guessed wrong). `HFCacheBackend` is the portable one: any Hugging Face causal
LM, PEFT adapters unmerged, transformers' dynamic cache.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..core.model import LiveModel
from ..core.policy import silence_probability


@dataclass
class Feed:
    """Ids, then optionally one frame's embeddings (T, H), appended to a session's stream."""

    ids: list[int]
    frame: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return len(self.ids) + (0 if self.frame is None else self.frame.shape[0])


@dataclass
class FeedResult:
    """The model's reading at a feed's last position."""

    token: int
    """Greedy next token (argmax of the logits)."""
    silence: float
    """P(silence token) under the softmax of the logits."""
    logits: torch.Tensor | None = None
    """The logits themselves, when the backend has them at hand (tests read them)."""


def read_logits(logits: torch.Tensor, silence_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (..., V) -> (argmax token (...), P(silence) (...)) computed on the logits' device."""
    return logits.argmax(dim=-1), silence_probability(logits, silence_id)


class ContextWarning(RuntimeWarning):
    """A stream grew past the positions its LLM was trained on."""


class HFCacheBackend:
    """One session's cache as transformers' `DynamicCache`; works with any causal LM the project loads.

    The cache grows without bound: past the LLM's `max_position_embeddings` the model still runs (RoPE extrapolates)
    but was never trained there, so the backend warns once per stream. The fast engine's memory policy
    (`--cache-tokens`) keeps positions under that limit."""

    def __init__(self, model: LiveModel, silence_id: int):
        self.model = model
        self.silence_id = silence_id
        self.cache = None
        self.context_limit = getattr(model.base_llm.config, "max_position_embeddings", None)
        self._warned = False

    def reset(self) -> None:
        self.cache = None
        self._warned = False

    @property
    def num_tokens(self) -> int:
        return 0 if self.cache is None else int(self.cache.get_seq_length())

    def embed(self, feeds: list[Feed]) -> tuple[torch.Tensor, list[int]]:
        """Embeddings of the feeds in order (L, H) and the index of each feed's last position."""
        model = self.model
        parts, ends, total = [], [], 0
        for feed in feeds:
            if feed.ids:
                parts.append(model.embed_tokens(torch.tensor([feed.ids], device=model.device))[0])
            if feed.frame is not None:
                parts.append(feed.frame.to(device=model.device, dtype=model.dtype))
            total += feed.length
            ends.append(total - 1)
        return torch.cat(parts), ends

    def feed(self, feeds: list[Feed]) -> list[FeedResult]:
        inputs_embeds, ends = self.embed(feeds)
        keep = torch.tensor(ends, device=inputs_embeds.device)  # the LM head runs only where a result is read
        output = self.model.forward_embeds(
            inputs_embeds[None], past_key_values=self.cache, use_cache=True, logits_to_keep=keep
        )
        self.cache = output.kv_cache
        if self.context_limit and not self._warned and self.num_tokens > self.context_limit:
            self._warned = True
            warnings.warn(
                f"the stream is past the LLM's {self.context_limit}-token context ({self.num_tokens} "
                "tokens): turns from here on may degrade; cap the cache to stay within it "
                "(--engine fast --cache-tokens N)",
                ContextWarning,
                stacklevel=2,
            )
        logits = output.logits[0]  # (len(feeds), V)
        tokens, silence = read_logits(logits, self.silence_id)
        return [FeedResult(int(t), float(s), row) for t, s, row in zip(tokens.tolist(), silence.tolist(), logits)]

    def truncate(self, num_tokens: int) -> None:
        if self.cache is not None and num_tokens < self.num_tokens:
            self.cache.crop(num_tokens - self.num_tokens)  # negative: tokens to drop (every transformers 5.x)
