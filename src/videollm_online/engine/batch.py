"""Many streams on one model: continuous batching of sessions over a `StaticKV`.

Each session is an ordinary `StreamSession` whose backend is a slot of the shared static cache, so a session can
also be driven alone (`session.push_frame`). `BatchEngine` instead takes frames, queries and ends of stream from
any number of sessions (`submit_frame`, `submit_query`, `submit_finish`) and `step()` advances every session that
has work by one model forward, all of them in the same batched forward: frame steps, response tokens and prompts
of different sessions share one read of the weights. Sessions open and close at any time; each keeps its own
cache, position, queries and threshold.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from ..core.model import LiveModel
from ..core.text import StreamTemplate
from ..utils.errors import UserError
from .backend import Feed, FeedResult
from .session import EngineConfig, StreamEvent, StreamSession
from .static import ContextFullError, MemoryPolicy, SlotBackend, StaticKV

ENGINES = ("default", "fast")


def engine_in_use(engine: str, cache_tokens: int | None = None, weights: str | None = None) -> str:
    """The engine `open_session` runs for these options: `cache_tokens` and `weights` imply the fast one."""
    return "fast" if cache_tokens is not None or weights is not None else engine


def open_session(
    model: LiveModel,
    template: StreamTemplate,
    config: EngineConfig | None = None,
    engine: str = "default",
    cache_tokens: int | None = None,
    ahead: int = 1,
    weights: str | None = None,
) -> StreamSession:
    """One session on the default engine (transformers' cache, any model) or the fast one (static cache; CUDA graphs
    on a GPU; Llama-family LLMs). With `cache_tokens` (fast engine) the session keeps at most that many tokens: the
    attention sink and the most recent ones, so an endless stream runs in fixed memory. `ahead`: the most frames
    the caller will give `push_frames` at once (the fast engine sizes its steps for them). `weights="fp8"` (fast
    engine): float8 linear weights (`engine.quant`). `cache_tokens` and `weights` imply the fast engine."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    if engine_in_use(engine, cache_tokens, weights) == "default":
        return StreamSession(model, template, config)
    policy = MemoryPolicy() if cache_tokens is not None else None
    step_tokens = max(256, ahead * (model.config.frame_num_tokens + 1))
    static = StaticKV(
        model,
        template.ids.silence,
        max_tokens=cache_tokens,
        policy=policy,
        max_step_tokens=step_tokens,
        weights=weights,
        frames_per_step=ahead,
    )
    return StreamSession(model, template, config, backend=SlotBackend(static, 0))


@dataclass
class _Work:
    inbox: deque = field(default_factory=deque)  # ("frame", time, embeds) | ("finish",)
    steps: object | None = None  # the running protocol generator
    pending: list[Feed] | None = None  # what it waits to have fed


class BatchEngine:
    """Sessions sharing one model and one static cache; `step()` runs one batched forward for all of them."""

    def __init__(
        self,
        model: LiveModel,
        template: StreamTemplate,
        max_sessions: int = 16,
        max_tokens: int | None = None,
        policy: MemoryPolicy | None = None,
        cuda_graphs: bool | None = None,
        **static_options,
    ):
        self.model = model
        self.template = template
        self.static = StaticKV(
            model, template.ids.silence, max_sessions, max_tokens, policy, cuda_graphs, **static_options
        )
        self._free = list(range(max_sessions))
        self._work: dict[StreamSession, _Work] = {}
        self.failures: dict[StreamSession, Exception] = {}

    # ------------------------------------------------------------------ sessions
    def open(
        self, config: EngineConfig | None = None, session_class: type[StreamSession] = StreamSession
    ) -> StreamSession:
        """A new session in a free slot (the lowest, which keeps the batch small)."""
        if not self._free:
            raise RuntimeError(f"all {self.static.max_sessions} session slots are in use")
        self._free.sort()
        slot = self._free.pop(0)
        session = session_class(self.model, self.template, config, backend=SlotBackend(self.static, slot))
        self._work[session] = _Work()
        return session

    def close(self, session: StreamSession) -> None:
        """Free the session's slot (work it still had is dropped)."""
        self._work.pop(session)
        self.failures.pop(session, None)
        self._free.append(session.backend.slot)

    def is_open(self, session: StreamSession) -> bool:
        return session in self._work

    # ------------------------------------------------------------------ work
    def submit_frame(self, session: StreamSession, video_time: float, frame_embeds: torch.Tensor) -> None:
        work = self._work[session]
        last = next((item[1] for item in reversed(work.inbox) if item[0] == "frame"), None)
        session.check_frame(video_time, frame_embeds, last)
        work.inbox.append(("frame", video_time, frame_embeds))

    def submit_query(self, session: StreamSession, video_time: float, text: str) -> None:
        session.push_query(video_time, text)

    def submit_finish(self, session: StreamSession) -> None:
        self._work[session].inbox.append(("finish",))

    def busy(self, session: StreamSession | None = None) -> bool:
        """Whether a session (or any) has work queued or running."""
        works = [self._work[session]] if session is not None else self._work.values()
        return any(work.inbox or work.pending is not None for work in works)

    def _fail(self, session: StreamSession, work: _Work, error: Exception) -> None:
        """The session cannot go on: its running input and queued ones are dropped; the others are untouched."""
        work.steps.close()
        work.steps, work.pending = None, None
        work.inbox.clear()
        self.failures[session] = error

    @torch.inference_mode()
    def step(self) -> list[tuple[StreamSession, list[StreamEvent]]]:
        """One batched forward over every session with work. Returns, for every input (frame or finish) that
        completed, its session and the turns it produced (often none). A session whose next input cannot fit its
        cache fails alone: its error is in `failures` and its queued inputs are dropped."""
        completed: list[tuple[StreamSession, list[StreamEvent]]] = []
        for session, work in self._work.items():
            if work.pending is None:
                self._start_next(session, work, completed)
        for session, work in self._work.items():
            if work.pending is not None:
                error = self.static.room_error(session.backend.slot, sum(feed.length for feed in work.pending))
                if error is not None:
                    self._fail(session, work, ContextFullError(error))
        rows = {session.backend.slot: work.pending for session, work in self._work.items() if work.pending is not None}
        if not rows:
            return completed
        results = self.static.feed(rows)
        for session, work in self._work.items():
            if work.pending is not None:
                self._advance(session, work, results[session.backend.slot], completed)
        return completed

    def run_until_idle(self) -> list[tuple[StreamSession, list[StreamEvent]]]:
        completed = []
        while self.busy():
            completed += self.step()
        return completed

    def _start_next(self, session: StreamSession, work: _Work, completed: list) -> None:
        """Start the session's next input; inputs that need no forward complete at once."""
        while work.pending is None and work.inbox:
            item = work.inbox.popleft()
            work.steps = session.frame_steps(item[1], item[2]) if item[0] == "frame" else session.finish_steps()
            self._advance(session, work, None, completed)

    def _advance(self, session: StreamSession, work: _Work, results: list[FeedResult] | None, completed: list) -> None:
        try:
            work.pending = next(work.steps) if results is None else work.steps.send(results)
        except StopIteration as done:
            work.steps, work.pending = None, None
            completed.append((session, done.value))
