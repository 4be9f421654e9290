"""One streaming session: a KV cache, the silence decision after each frame, greedy responses, queries at their time.

The session speaks token ids and frame embeddings; text enters and leaves only through the `StreamTemplate`
(queries in, decoded responses out). It holds no UI and prints nothing: `push_frame` / `push_query` / `finish`
return the events they produce. The protocol: the first frame follows the system prompt and `\\n[`, each later frame
the token chosen after the one before (the interval token while silent); after a frame the session stays silent or
answers as `core.policy.DecisionPolicy` decides from the logits (an answer: `]\\nAssistant:`, greedy tokens up to
eos or `max_new_tokens`, then `\\n[` opens the next frame); a query at video time t goes in before the first frame later
than t (`]\\nUser: {query}\\nAssistant:`, then its answer). The plain per-frame loop in `engine.reference` is the
oracle it is tested against; docs/performance.md says how the fast engine runs the same protocol.

The protocol is written once, as generators that yield the `Feed`s they need and receive `FeedResult`s; a session
drives them through its own backend (`HFCacheBackend` by default, a slot of the static-cache engine for speed),
and `engine.batch` drives many sessions' generators together, one batched forward per step. Whether to respond
after a frame, and how long a response may be, is the session's `DecisionPolicy` (`core.policy`).
"""

from __future__ import annotations

import bisect
import itertools
import time as wallclock
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..core.config import LiveConfig
from ..core.model import LiveModel
from ..core.policy import DEFAULT_MAX_NEW_TOKENS, DecisionPolicy, check_max_new_tokens, check_threshold
from ..core.text import StreamTemplate
from .backend import Feed, FeedResult, HFCacheBackend


@dataclass
class EngineConfig:
    """Inference settings of a session."""

    threshold: float | None = None
    """Stay silent after a frame when P(silence token) >= threshold. None: the model config's default."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """A response stops at eos or after this many tokens."""
    system_prompt: str | None = None
    """None: the model config's system prompt."""

    def __post_init__(self) -> None:
        check_threshold(self.threshold, optional=True)
        check_max_new_tokens(self.max_new_tokens)

    def policy(self, model_config: LiveConfig) -> DecisionPolicy:
        """The decision policy these settings give a model (threshold None: the model config's)."""
        return DecisionPolicy.for_model(model_config, self.threshold, self.max_new_tokens)


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

# A protocol step: yields the feeds of one forward, receives their results, returns its events at the end.
Steps = Generator[list[Feed], list[FeedResult], list[StreamEvent]]


class StreamSession:
    """Feed frames and queries in video-time order; collect the assistant's turns."""

    def __init__(self, model: LiveModel, template: StreamTemplate, config: EngineConfig | None = None, backend=None):
        self.model = model
        self.template = template
        self.config = config or EngineConfig()
        self.policy = self.config.policy(model.config)
        """When to respond and for how long; replaced (it is frozen) when `threshold` or `max_new_tokens` is set."""
        ids = template.ids
        self._eos_id = ids.eos
        self._silence_id = ids.silence
        self.backend = backend if backend is not None else HFCacheBackend(model, ids.silence)
        self.on_token: Callable[[int], None] | None = None
        """Called with each response token as it is generated (servers stream text with it)."""
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
        self.backend.reset()
        self._state = _START
        self._carry: list[int] = []  # ids owed before the next input (the eos closing the last response)
        self._queries: list[tuple[float, int, str]] = []
        self._query_counter = itertools.count()
        self.num_frames = 0
        self.last_frame_time: float | None = None
        self.events: list[StreamEvent] = []

    @property
    def threshold(self) -> float:
        """The policy's threshold; setting it takes effect at the next frame (servers change it mid-stream)."""
        return self.policy.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.policy = replace(self.policy, threshold=value)

    @property
    def max_new_tokens(self) -> int:
        """The policy's reply length; setting it takes effect at the next response."""
        return self.policy.max_new_tokens

    @max_new_tokens.setter
    def max_new_tokens(self, value: int) -> None:
        self.policy = replace(self.policy, max_new_tokens=value)

    @property
    def num_tokens(self) -> int:
        """Tokens in the KV cache."""
        return self.backend.num_tokens

    def push_query(self, video_time: float, text: str) -> None:
        """Queue a user query at a video time; it is answered before the first frame later than that time."""
        if not text.strip():
            raise ValueError("a query needs some text")
        bisect.insort(self._queries, (float(video_time), next(self._query_counter), text))

    def push_frame(self, video_time: float, frame_embeds: torch.Tensor) -> list[StreamEvent]:
        """Feed one frame, (frame_num_tokens, H) embeddings, at a video time; return the turns it triggers."""
        self.check_frame(video_time, frame_embeds)
        return self.run(self.frame_steps(video_time, frame_embeds))

    def push_frames(self, times: Sequence[float], frames: torch.Tensor, ahead: int = 8) -> list[StreamEvent]:
        """Feed frames (N, T, H) that are all available now (a file): up to `ahead` frames go in one forward on
        the guess that the model stays silent after each; the cache is rolled back to the first frame where it
        would not. The events are those of feeding the frames one by one."""
        if len(times) != len(frames):
            raise ValueError(f"{len(times)} times for {len(frames)} frames")
        for index, frame in enumerate(frames):
            self.check_frame(times[index], frame, times[index - 1] if index else None)
        return self.run(self.frames_steps(times, frames, ahead))

    def finish(self) -> list[StreamEvent]:
        """The stream has ended: answer the queries still waiting."""
        return self.run(self.finish_steps())

    def wants_response(self, result: FeedResult) -> bool:
        """The decision after a frame, by the session's policy."""
        return bool(self.policy.responds(result.silence, result.token == self._silence_id))

    def check_frame(self, video_time: float, frame_embeds: torch.Tensor, previous: float | None = None) -> None:
        previous = self.last_frame_time if previous is None else previous
        if previous is not None and video_time < previous:
            raise ValueError(f"frames must come in time order: {video_time} after {previous}")
        expected = (self.model.config.frame_num_tokens, self.model.hidden_size)
        if tuple(frame_embeds.shape) != expected:
            raise ValueError(f"frame_embeds must have shape {expected}, got {tuple(frame_embeds.shape)}")

    @torch.inference_mode()
    def run(self, steps: Steps) -> list[StreamEvent]:
        """Drive protocol steps through this session's own backend."""
        try:
            feeds = next(steps)
            while True:
                feeds = steps.send(self.backend.feed(feeds))
        except StopIteration as done:
            return done.value

    # ------------------------------------------------------------------ protocol steps
    def frame_steps(self, video_time: float, frame_embeds: torch.Tensor, started: float | None = None) -> Steps:
        started = wallclock.perf_counter() if started is None else started
        events = yield from self._answer_queries(lambda t: t < video_time, started)
        (result,) = yield [Feed(self._frame_prefix(), frame_embeds)]
        respond = self._count_and_decide(video_time, result)
        events += yield from self._after_frame(video_time, respond, started)
        self.events += events
        return events

    def frames_steps(self, times: Sequence[float], frames: torch.Tensor, ahead: int) -> Steps:
        started = wallclock.perf_counter()
        events: list[StreamEvent] = []
        index = 0
        while index < len(frames):
            if self._state != _STREAM or ahead <= 1 or self._query_due(times[index], strict=True):
                events += yield from self.frame_steps(times[index], frames[index], started)
                index += 1
                continue
            end = index  # frames index..end-1 go in one forward; none has a query due before it
            while end < len(frames) and end - index < ahead and not self._query_due(times[end], strict=True):
                end += 1
                if self._query_due(times[end - 1], strict=False):
                    break  # a query comes right after this frame: it ends the guess
            feeds = [Feed(self._silent_ids, frames[k]) for k in range(index, end)]
            results = yield feeds
            base = self.num_tokens - sum(feed.length for feed in feeds)  # after the feed: it may have evicted
            for k in range(index, end):
                base += feeds[k - index].length
                respond = self._count_and_decide(times[k], results[k - index])
                if respond or self._query_due(times[k], strict=False) or k == end - 1:
                    self.backend.truncate(base)  # undo the frames guessed after this one
                    frame_events = yield from self._after_frame(times[k], respond, started)
                    self.events += frame_events
                    events += frame_events
                    index = k + 1
                    break
        return events

    def finish_steps(self) -> Steps:
        events = yield from self._answer_queries(lambda t: True, wallclock.perf_counter())
        self.events += events
        return events

    # ------------------------------------------------------------------ internals
    def _frame_prefix(self) -> list[int]:
        if self._state == _START:
            prefix = self._start_stream_ids
        elif self._state == _STREAM:
            prefix = self._silent_ids
        else:
            prefix = self._carry + self._stream_prompt_ids
        self._carry = []
        return prefix

    def _count_frame(self, video_time: float) -> None:
        self._state = _STREAM
        self.num_frames += 1
        self.last_frame_time = video_time

    def _count_and_decide(self, video_time: float, result: FeedResult) -> bool:
        """Count a fed frame and take its decision; a query due at its time closes the stream instead."""
        self._count_frame(video_time)
        return not self._query_due(video_time, strict=False) and self.wants_response(result)

    def _after_frame(self, video_time: float, respond: bool, started: float) -> Steps:
        """After a counted frame: queries due at its time are answered, or the response it decided on is given."""
        answered = yield from self._answer_queries(lambda t: t <= video_time, started)
        if answered:
            return answered
        if respond:
            return [(yield from self._respond(video_time, self._respond_ids, started))]
        return []

    def _query_due(self, video_time: float, strict: bool) -> bool:
        if not self._queries:
            return False
        return self._queries[0][0] < video_time if strict else self._queries[0][0] <= video_time

    def _answer_queries(self, due: Callable[[float], bool], started: float) -> Steps:
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
            events.append((yield from self._respond(video_time, prompt, started)))
        return events

    def _respond(self, video_time: float, prompt_ids: list[int], started: float) -> Steps:
        """Feed the prompt, then greedy tokens until eos or the policy's max_new_tokens. The eos is fed with the
        next input."""
        (result,) = yield [Feed(prompt_ids)]
        tokens: list[int] = []
        while True:
            token = result.token
            if token == self._eos_id:
                break
            tokens.append(token)
            if self.on_token is not None:
                self.on_token(token)
            if len(tokens) >= self.policy.max_new_tokens:
                break  # cut short: the eos still closes the turn, as if the model had said it
            (result,) = yield [Feed([token])]
        self._carry = [self._eos_id]
        self._state = _TEXT
        text = self.template.decode(tokens)
        latency = wallclock.perf_counter() - started
        return StreamEvent(video_time, "assistant", text, tokens, self.num_frames - 1, latency)
