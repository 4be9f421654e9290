"""One streaming session: a KV cache, the silence decision after each frame, greedy responses, queries at their time.

The session speaks token ids and frame embeddings; text enters and leaves only through the `StreamTemplate`
(queries in, decoded responses out). It holds no UI and prints nothing: `push_frame` / `push_query` / `finish`
return the events they produce. The protocol is DESIGN.md section 3; the plain per-frame loop in
`engine.reference` is the oracle it is tested against.
"""

from __future__ import annotations

import bisect
import itertools
import time as wallclock
from dataclasses import dataclass, field

import torch

from ..model import LiveModel
from ..text import StreamTemplate


@dataclass
class EngineConfig:
    """Inference settings of a session."""

    threshold: float | None = None
    """Stay silent after a frame when P(silence token) >= threshold. None: the model config's default (0.725)."""
    max_new_tokens: int = 128
    """A response stops at eos or after this many tokens."""
    system_prompt: str | None = None
    """None: the model config's system prompt."""

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class StreamEvent:
    """A turn: a user query echoed at its time, or an assistant response at the video time it was decided."""

    video_time: float
    role: str
    text: str
    token_ids: list[int] = field(default_factory=list)
    frame_index: int = -1
    """Index of the last frame seen before this turn (-1: none yet)."""
    latency: float = 0.0
    """Seconds from the call that produced this turn to the turn being complete."""

    def to_dict(self) -> dict:
        return {"role": self.role, "content": self.text.strip(), "time": round(self.video_time, 3)}


# Where the conversation stands, which decides the text that joins the next frame or turn.
_START, _STREAM, _TEXT = "start", "stream", "text"


class StreamSession:
    """Feed frames and queries in video-time order; collect the assistant's turns."""

    def __init__(self, model: LiveModel, template: StreamTemplate, config: EngineConfig | None = None):
        self.model = model
        self.template = template
        self.config = config or EngineConfig()
        self.threshold = self.config.threshold if self.config.threshold is not None else (
            model.config.frame_token_interval_threshold
        )
        ids = template.ids
        self._silence_id = ids.silence
        self._eos_id = ids.eos
        # Prompt pieces tokenized once.
        system = template.system_text(self.config.system_prompt)
        self._start_stream_ids = template.encode(system + template.STREAM_PROMPT)
        self._system_text = system
        self._stream_prompt_ids = template.encode(template.STREAM_PROMPT)
        self._respond_ids = template.encode(template.STREAM_GENERATION_PROMPT)
        # With an interval token, a silent frame is followed by it; without one (v1), frames are adjacent.
        self._silent_ids = [ids.interval] if ids.interval is not None else []
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget everything: an empty cache, no frames, no queries."""
        self._cache = None
        self._state = _START
        self._carry: list[int] = []  # ids owed before the next input (the eos closing the last response)
        self._queries: list[tuple[float, int, str]] = []
        self._query_counter = itertools.count()
        self.num_frames = 0
        self.last_frame_time: float | None = None
        self.events: list[StreamEvent] = []

    @property
    def num_tokens(self) -> int:
        """Tokens in the KV cache."""
        return 0 if self._cache is None else int(self._cache.get_seq_length())

    def push_query(self, video_time: float, text: str) -> None:
        """Queue a user query at a video time; it is answered before the first frame later than that time."""
        if not text.strip():
            raise ValueError("a query needs some text")
        bisect.insort(self._queries, (float(video_time), next(self._query_counter), text))

    @torch.inference_mode()
    def push_frame(self, video_time: float, frame_embeds: torch.Tensor) -> list[StreamEvent]:
        """Feed one frame, (frame_num_tokens, H) embeddings, at a video time; return the turns it triggers."""
        started = wallclock.perf_counter()
        if self.last_frame_time is not None and video_time < self.last_frame_time:
            raise ValueError(f"frames must come in time order: {video_time} after {self.last_frame_time}")
        expected = (self.model.config.frame_num_tokens, self.model.hidden_size)
        if tuple(frame_embeds.shape) != expected:
            raise ValueError(f"frame_embeds must have shape {expected}, got {tuple(frame_embeds.shape)}")
        events = self._answer_queries(lambda t: t < video_time, started)

        if self._state == _START:
            prefix = self._start_stream_ids
        elif self._state == _STREAM:
            prefix = self._silent_ids
        else:
            prefix = self._carry + self._stream_prompt_ids
        self._carry = []
        logits = self._feed(prefix, frame_embeds)
        self._state = _STREAM
        self.num_frames += 1
        self.last_frame_time = video_time

        answered = self._answer_queries(lambda t: t <= video_time, started)
        if answered:  # a query after this frame closes the stream; the frame's own decision is not taken
            events += answered
        elif self._should_respond(logits):
            events.append(self._respond(video_time, self._respond_ids, started))
        self.events += events
        return events

    @torch.inference_mode()
    def finish(self) -> list[StreamEvent]:
        """The stream has ended: answer the queries still waiting."""
        events = self._answer_queries(lambda t: True, wallclock.perf_counter())
        self.events += events
        return events

    # ------------------------------------------------------------------ internals
    def _should_respond(self, logits: torch.Tensor) -> bool:
        """Respond unless P(silence) >= threshold (after zeroing it, any argmax is a non-silence token)."""
        probability = logits.float().softmax(dim=-1)[self._silence_id]
        return bool(probability < self.threshold)

    def _answer_queries(self, due, started: float) -> list[StreamEvent]:
        events = []
        while self._queries and due(self._queries[0][0]):
            query_time, _, text = self._queries.pop(0)
            video_time = max(query_time, self.last_frame_time if self.last_frame_time is not None else query_time)
            if self._state == _START:
                prompt = self.template.encode(
                    self._system_text + self.template.user_text(text) + self.template.GENERATION_PROMPT
                )
            elif self._state == _STREAM:
                prompt = self.template.encode(self.template.stream_query_prompt(text))
            else:
                text_ids = self.template.encode(self.template.user_text(text) + self.template.GENERATION_PROMPT)
                prompt = self._carry + text_ids
            self._carry = []
            events.append(StreamEvent(video_time, "user", text, frame_index=self.num_frames - 1))
            events.append(self._respond(video_time, prompt, started))
        return events

    def _respond(self, video_time: float, prompt_ids: list[int], started: float) -> StreamEvent:
        """Feed the prompt, then greedy tokens until eos or max_new_tokens. The eos is fed with the next input."""
        logits = self._feed(prompt_ids)
        tokens: list[int] = []
        while True:
            token = int(logits.argmax())
            if token == self._eos_id:
                break
            tokens.append(token)
            if len(tokens) >= self.config.max_new_tokens:
                break  # cut short: the eos still closes the turn, as if the model had said it
            logits = self._feed([token])
        self._carry = [self._eos_id]
        self._state = _TEXT
        text = self.template.decode(tokens)
        latency = wallclock.perf_counter() - started
        return StreamEvent(video_time, "assistant", text, tokens, self.num_frames - 1, latency)

    def _feed(self, ids: list[int], frame_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Run ids (then a frame's embeddings) through the LLM with the cache; return the last position's logits."""
        model = self.model
        parts = []
        if ids:
            parts.append(model.embed_tokens(torch.tensor([ids], device=model.device))[0])
        if frame_embeds is not None:
            parts.append(frame_embeds.to(device=model.device, dtype=model.dtype))
        inputs_embeds = torch.cat(parts)[None]  # (1, L, H)
        output = model.forward_embeds(inputs_embeds, past_key_values=self._cache, use_cache=True, logits_to_keep=1)
        self._cache = output.kv_cache
        return output.logits[0, -1]
