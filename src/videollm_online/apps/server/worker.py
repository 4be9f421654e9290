"""The inference worker behind the API and the web demo: many stream sessions over one model.

The model is not thread safe, so every model call of every session runs on one worker thread; callers get
`concurrent.futures.Future`s, which both asyncio code (`asyncio.wrap_future`) and threads can wait on. A session's
calls run in the order it submitted them; between sessions the worker is shared fairly by time (`FairQueue`), so a
session whose calls are long (a flood of questions, each answered at length) waits its turn instead of slowing
everyone's frames. That small interface (`Worker.open` -> `WorkerSession.submit_*`) is what a faster
engine (one that batches the frames of many sessions into one forward) replaces. No web framework is imported here.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ...core.model import LiveModel
from ...core.policy import check_max_new_tokens, check_threshold
from ...core.text import StreamTemplate
from ...engine import EngineConfig, StreamEvent, StreamSession
from ...engine.static import ContextFullError

TokenCallback = Callable[[list[int]], None]
"""The token ids of the turn being generated, so far (a new turn starts when there is one); called on the worker
thread after each token."""


class WorkerSession(Protocol):
    """One stream. Calls return at once; the work runs in submission order."""

    threshold: float
    max_new_tokens: int

    def submit_frame(
        self, video_time: float, image: np.ndarray, on_token: TokenCallback | None = None
    ) -> Future[list[StreamEvent]]:
        """A letterboxed (R, R, 3) uint8 RGB frame at a video time -> the turns it triggers."""

    def submit_query(self, video_time: float, text: str) -> Future[None]:
        """Queue a user query; it is answered with the next frame (or `submit_finish`)."""

    def submit_finish(self, on_token: TokenCallback | None = None) -> Future[list[StreamEvent]]:
        """The stream has ended: answer the queries still waiting."""

    def close(self) -> Future[None]:
        """Release the session's cache; calls submitted after this one fail."""

    def decode(self, token_ids: list[int]) -> str:
        """Text of token ids (thread safe: the tokenizer only)."""


class Worker(Protocol):
    name: str
    """A name for the model (histories, /health)."""
    frame_resolution: int
    """Side of the square frames `submit_frame` takes."""
    frame_fps: float
    """The frame rate the model was trained at (the default sampling rate)."""

    def open(self, config: EngineConfig | None = None) -> WorkerSession: ...

    def shutdown(self) -> None: ...


class FairQueue:
    """Calls waiting for the worker, by owner (a session). Each owner's calls run in order; the next call is the
    first waiting one of the owner that has used the least worker time (start-time fair queuing: an owner that
    comes back after waiting on nothing starts level with the others, so idle time is not saved up as credit).
    One owner's long calls then delay another's next call by at most about one call, not by its whole backlog."""

    def __init__(self) -> None:
        self._waiting: dict[object, deque] = {}
        self._used: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # owner -> worker seconds (virtual)
        self._order = itertools.count()
        self._clock = 0.0
        self._lock = threading.Condition()
        self._closed = False

    def put(self, owner: object, item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker is shut down")
            if owner not in self._waiting:
                self._waiting[owner] = deque()
                self._used[owner] = max(self._used.get(owner, 0.0), self._clock)
            self._waiting[owner].append((next(self._order), item))
            self._lock.notify()

    def get(self) -> tuple[object, object] | None:
        """(owner, item) of the next call; None once closed."""
        with self._lock:
            while not self._waiting and not self._closed:
                self._lock.wait()
            if self._closed:
                return None
            owner = min(self._waiting, key=lambda key: (self._used.get(key, 0.0), self._waiting[key][0][0]))
            queue = self._waiting[owner]
            _, item = queue.popleft()
            if not queue:
                del self._waiting[owner]
            self._clock = max(self._clock, self._used.get(owner, 0.0))
            return owner, item

    def charge(self, owner: object, seconds: float) -> None:
        with self._lock:
            self._used[owner] = self._used.get(owner, self._clock) + seconds

    def close(self) -> list:
        """Stop; returns the items still waiting."""
        with self._lock:
            self._closed = True
            left = [item for queue in self._waiting.values() for _, item in queue]
            self._waiting.clear()
            self._lock.notify_all()
            return left


class SerialWorker:
    """One model, one worker thread: sessions' calls interleave, each session's in order, the worker's time shared
    fairly between sessions (`FairQueue`)."""

    def __init__(self, model: LiveModel, template: StreamTemplate, name: str = "model") -> None:
        self.model = model
        self.template = template
        self.name = name
        self.frame_resolution = int(model.config.frame_resolution)
        self.frame_fps = float(model.config.frame_fps)
        self.context_length = _context_length(model)
        self._queue = FairQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="videollm-infer", daemon=True)
        self._worker.start()

    @property
    def pending(self) -> int:
        """Calls submitted and not finished yet (all sessions): the inference queue depth."""
        return self._pending

    def open(self, config: EngineConfig | None = None) -> SerialWorkerSession:
        return SerialWorkerSession(self, config or EngineConfig())

    def submit(self, fn: Callable, *args, owner: object = None) -> Future:
        """Run `fn(*args)` on the worker, after `owner`'s earlier calls (owner None: a shared anonymous one)."""
        future: Future = Future()
        with self._pending_lock:
            self._pending += 1
        future.add_done_callback(self._done)
        self._queue.put(self if owner is None else owner, (fn, args, future))
        return future

    def _done(self, _: Future) -> None:
        with self._pending_lock:
            self._pending -= 1

    def _work(self) -> None:
        while (next_call := self._queue.get()) is not None:
            owner, (fn, args, future) = next_call
            if not future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                result = fn(*args)
            except BaseException as error:  # noqa: BLE001 - the caller's future carries it
                future.set_exception(error)
            else:
                future.set_result(result)
            finally:
                self._queue.charge(owner, time.perf_counter() - started)
            del owner, fn, args, future, next_call  # hold no frame or session while waiting

    def warm_up(self) -> float:
        """Watch one black frame in a throwaway session (silent: threshold 0); returns the seconds it took. Weights
        read through mmap (safetensors) are paged in on first use, and the first forward sets up kernels: doing
        it at start spares the first client the wait, and the server's resident memory is at its working size from
        the start instead of jumping by the model's size at the first frame."""
        started = time.perf_counter()
        session = self.open(EngineConfig(threshold=0.0, max_new_tokens=1))
        try:
            image = np.zeros((self.frame_resolution, self.frame_resolution, 3), dtype=np.uint8)
            session.submit_frame(0.0, image).result()
        finally:
            session.close().result()
        return time.perf_counter() - started

    def shutdown(self) -> None:
        for _, _, future in self._queue.close():
            future.cancel()


class SessionSettings:
    """threshold and max_new_tokens of a worker session, validated; read by the engine at each frame and turn, so a
    change takes effect at once. Subclasses say where their `StreamSession` is (`_engine_session`)."""

    @property
    def _engine_session(self) -> StreamSession | None:
        raise NotImplementedError

    @property
    def threshold(self) -> float:
        return self._engine_session.threshold if self._engine_session else 0.0

    @threshold.setter
    def threshold(self, value: float) -> None:
        check_threshold(value)  # also when the session is closed
        if self._engine_session is not None:
            self._engine_session.threshold = float(value)

    @property
    def max_new_tokens(self) -> int:
        return self._engine_session.max_new_tokens if self._engine_session else 0

    @max_new_tokens.setter
    def max_new_tokens(self, value: int) -> None:
        check_max_new_tokens(value)
        if self._engine_session is not None:
            self._engine_session.max_new_tokens = int(value)

    @property
    def num_frames(self) -> int:
        return self._engine_session.num_frames if self._engine_session else 0


class SerialWorkerSession(SessionSettings):
    """A `StreamSession` whose calls run on its worker's thread."""

    def __init__(self, worker: SerialWorker, config: EngineConfig) -> None:
        self._worker = worker
        # Built here, not on the worker: it only tokenizes the prompts, and holds no cache until the first frame.
        self._session: StreamSession | None = StreamSession(worker.model, worker.template, config)
        self._frame_tokens = worker.model.config.frame_num_tokens + 1

    @property
    def _engine_session(self) -> StreamSession | None:
        return self._session

    def decode(self, token_ids: list[int]) -> str:
        return self._worker.template.decode(token_ids)

    def submit_frame(
        self, video_time: float, image: np.ndarray, on_token: TokenCallback | None = None
    ) -> Future[list[StreamEvent]]:
        return self._worker.submit(self._frame, float(video_time), image, on_token, owner=self)

    def submit_query(self, video_time: float, text: str) -> Future[None]:
        return self._worker.submit(self._query, float(video_time), text, owner=self)

    def submit_finish(self, on_token: TokenCallback | None = None) -> Future[list[StreamEvent]]:
        return self._worker.submit(self._finish, on_token, owner=self)

    def close(self) -> Future[None]:
        return self._worker.submit(self._close, owner=self)

    # ------------------------------------------------------------------ on the worker thread
    def _live(self) -> StreamSession:
        if self._session is None:
            raise RuntimeError("the session is closed")
        return self._session

    @torch.inference_mode()
    def _frame(self, video_time: float, image: np.ndarray, on_token: TokenCallback | None) -> list[StreamEvent]:
        session = self._live()
        # A response may follow this frame: leave room for the frame, the prompt and a whole reply.
        needed = self._frame_tokens + 16 + session.max_new_tokens
        if self._worker.context_length and session.num_tokens + needed > self._worker.context_length:
            raise ContextFullError(
                f"the session reached the model's context length "
                f"({self._worker.context_length} tokens, {session.num_frames} frames)"
            )
        embeds = self._worker.model.frames_to_embeds(image[None])[0]  # (T, H)
        session.on_token = _turn_tracker(session, on_token)
        try:
            return session.push_frame(video_time, embeds)
        finally:
            session.on_token = None

    def _query(self, video_time: float, text: str) -> None:
        self._live().push_query(video_time, text)

    @torch.inference_mode()
    def _finish(self, on_token: TokenCallback | None) -> list[StreamEvent]:
        session = self._live()
        session.on_token = _turn_tracker(session, on_token)
        try:
            return session.finish()
        finally:
            session.on_token = None

    def _close(self) -> None:
        self._session = None  # drops the KV cache


def _turn_tracker(session: StreamSession, on_token: TokenCallback | None) -> Callable[[int], None] | None:
    """Adapt the session's per-token hook to whole turns. One call may produce several turns (queries answered
    before and after a frame); within a turn each token follows the previous one into the cache, so the cache grew
    by exactly one token since the last call, while a new turn's prompt (eos, `]`, `Assistant:` ...) adds more."""
    if on_token is None:
        return None
    tokens: list[int] = []
    last_length = -2

    def hook(token: int) -> None:
        nonlocal last_length
        length = session.num_tokens
        if length != last_length + 1:
            tokens.clear()
        last_length = length
        tokens.append(int(token))
        on_token(list(tokens))

    return hook


def public_name(name: str) -> str:
    """The model's name as responses show it: a checkpoint given as a local path shows as its last component
    only, so no response reveals where files live on the server. Hub ids (`org/name`) and presets stay as they are."""
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith((".", "~")) or ("/" in name and path.exists()):
        return path.name or name
    return name


def _context_length(model: LiveModel) -> int | None:
    config = getattr(model.base_llm, "config", None)
    return getattr(config, "max_position_embeddings", None)
