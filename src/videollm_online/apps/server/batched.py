"""The fast worker: every session's frames and tokens batched into one forward per step (`engine.BatchEngine`).

Same interface as `SerialWorker` (`Worker.open` -> `WorkerSession.submit_*` returning futures), so the API
and the web demo run on it unchanged. One worker thread owns the model: it takes the calls submitted since its last
step, encodes all new frames in one vision batch, hands them to the engine, runs one batched forward, and resolves
the futures of the inputs that completed. On a GPU the vision batch goes to `FrameEncoderRunner` (CUDA graphs on a
stream of their own, batch sizes rounded up to a power of two so few graphs are captured) and runs while the LLM
steps through the frames handed over before: the new frames join the engine after that step. Sessions that fill
their cache drop old tokens (`cache_tokens`, the memory policy); one whose single input cannot fit fails alone with
`ContextFullError`.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future

import numpy as np
import torch

from ...core.model import LiveModel
from ...core.text import StreamTemplate
from ...engine import EngineConfig, StreamEvent, StreamSession
from ...engine.batch import BatchEngine
from ...engine.static import MemoryPolicy
from ...engine.vision import FrameEncoderRunner
from ..narrate import VISION_INLINE, VISION_RUNNER
from .worker import SessionSettings, TokenCallback, _turn_tracker


class BatchedWorker:
    """Up to `max_sessions` streams on one model, batched; `cache_tokens` per session (None: the LLM's context)."""

    def __init__(
        self,
        model: LiveModel,
        template: StreamTemplate,
        name: str = "model",
        max_sessions: int = 32,
        cache_tokens: int | None = None,
    ) -> None:
        self.model = model
        self.template = template
        self.name = name
        self.frame_resolution = int(model.config.frame_resolution)
        self.frame_fps = float(model.config.frame_fps)
        self.engine = BatchEngine(
            model, template, max_sessions=max_sessions, max_tokens=cache_tokens, policy=MemoryPolicy()
        )
        self.runner = FrameEncoderRunner(model) if model.device.type == "cuda" else None
        self.vision_path = VISION_RUNNER if self.runner is not None else VISION_INLINE
        """How frames are encoded: FrameEncoderRunner (GPU, overlapped with the LLM step) or inline (a plain call)."""
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._stopping = False
        self._worker = threading.Thread(target=self._loop, name="videollm-batched", daemon=True)
        self._worker.start()

    @property
    def pending(self) -> int:
        """Calls submitted and not finished yet (all sessions)."""
        return self._pending

    def open(self, config: EngineConfig | None = None) -> BatchedWorkerSession:
        return BatchedWorkerSession(self, config or EngineConfig())

    def shutdown(self) -> None:
        self._stopping = True
        self._calls.put(None)

    def submit(self, call: tuple) -> Future:
        future: Future = Future()
        with self._lock:
            self._pending += 1
        future.add_done_callback(self._done)
        self._calls.put((*call, future))
        return future

    def _done(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    # ------------------------------------------------------------------ the worker thread
    def _loop(self) -> None:
        waiting: dict[StreamSession, deque[Future]] = {}  # per session, futures of inputs in the engine, in order
        while not self._stopping:
            calls = self._take(block=not self.engine.busy())
            try:
                embeds = self._encode(calls)  # on a GPU: launched on the vision stream, still running
                with torch.inference_mode():
                    if self.runner is not None:  # the LLM steps through what it has while the new frames encode
                        completed = self.engine.step()
                        self._apply(calls, waiting, embeds)
                    else:
                        self._apply(calls, waiting, embeds)
                        completed = self.engine.step()
            except Exception as error:  # noqa: BLE001 - a bug must not hang every client: fail what is waiting
                for futures in waiting.values():
                    while futures:
                        _fail(futures.popleft(), error)
                continue
            for session, events in completed:
                futures = waiting.get(session)
                if futures:
                    _succeed(futures.popleft(), events)
            for session, error in list(self.engine.failures.items()):
                for future in waiting.pop(session, ()):
                    _fail(future, error)
                self.engine.failures.pop(session)

    def _take(self, block: bool) -> list[tuple]:
        calls = []
        try:
            call = self._calls.get(block=block)
            while call is not None:
                calls.append(call)
                call = self._calls.get_nowait()
        except queue.Empty:
            pass
        return calls

    def _encode(self, calls: list[tuple]) -> dict[int, torch.Tensor]:
        """One vision batch for every session's new frame: embeddings by id(call). On a GPU the batch is padded to a
        power of two (repeats of its first frame) for `FrameEncoderRunner`'s graphs, and the LLM's stream is made to
        wait for it (so the engine reads the embeddings only once they are written)."""
        frames = [call for call in calls if call[0] == "frame"]
        if not frames:
            return {}
        try:
            images = np.stack([call[3] for call in frames])
        except ValueError:  # frames of different shapes: each is checked (and failed) by itself in `_apply`
            return {}
        with torch.inference_mode():
            if self.runner is None:
                return dict(zip(map(id, frames), self.model.frames_to_embeds(images)))
            pixels = self.model.normalise_frames(images)
            count = len(frames)
            padded = 1 << (count - 1).bit_length()
            if padded > count:
                pixels = torch.cat([pixels, pixels[:1].expand(padded - count, *pixels.shape[1:])])
            embeds, done = self.runner.encode(pixels)
            torch.cuda.current_stream().wait_event(done)  # ordered on the GPU; the host does not wait
        return dict(zip(map(id, frames), embeds[:count]))

    def _apply(
        self, calls: list[tuple], waiting: dict[StreamSession, deque[Future]], embeds: dict[int, torch.Tensor]
    ) -> None:
        for call in calls:
            kind, handle, *args, future = call
            try:
                if kind == "open":
                    handle.session = self.engine.open(handle.config)
                    _succeed(future, None)
                    continue
                session = handle.session
                if session is None or not self.engine.is_open(session):
                    raise RuntimeError("the session is closed")
                if kind == "frame":
                    video_time, image, on_token = args
                    frame = embeds.get(id(call))
                    if frame is None:
                        frame = self.model.frames_to_embeds(np.asarray(image)[None])[0]
                    if on_token is not None:
                        session.on_token = _turn_tracker(session, on_token)
                    self.engine.submit_frame(session, video_time, frame)
                    waiting.setdefault(session, deque()).append(future)
                elif kind == "query":
                    self.engine.submit_query(session, *args)
                    _succeed(future, None)
                elif kind == "finish":
                    (on_token,) = args
                    if on_token is not None:
                        session.on_token = _turn_tracker(session, on_token)
                    self.engine.submit_finish(session)
                    waiting.setdefault(session, deque()).append(future)
                elif kind == "close":
                    for pending in waiting.pop(session, ()):
                        _fail(pending, RuntimeError("the session is closed"))
                    self.engine.close(session)
                    handle.session = None
                    _succeed(future, None)
            except Exception as error:  # noqa: BLE001 - the caller's future carries it
                _fail(future, error)


def _succeed(future: Future, result) -> None:
    """Settle a caller's future, unless the caller gave up on it (a client that left cancels its frame's future):
    setting a cancelled future raises, which would skip the rest of the step, such as freeing the session's slot."""
    if not future.done():
        future.set_result(result)


def _fail(future: Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class BatchedWorkerSession(SessionSettings):
    """One stream on a `BatchedWorker`."""

    def __init__(self, worker: BatchedWorker, config: EngineConfig) -> None:
        self._worker = worker
        self.config = config
        self.session: StreamSession | None = None
        worker.submit(("open", self)).result()  # a free slot, or the error saying there is none

    @property
    def _engine_session(self) -> StreamSession | None:
        return self.session

    def decode(self, token_ids: list[int]) -> str:
        return self._worker.template.decode(token_ids)

    def submit_frame(
        self, video_time: float, image: np.ndarray, on_token: TokenCallback | None = None
    ) -> Future[list[StreamEvent]]:
        return self._worker.submit(("frame", self, float(video_time), image, on_token))

    def submit_query(self, video_time: float, text: str) -> Future[None]:
        return self._worker.submit(("query", self, float(video_time), text))

    def submit_finish(self, on_token: TokenCallback | None = None) -> Future[list[StreamEvent]]:
        return self._worker.submit(("finish", self, on_token))

    def close(self) -> Future[None]:
        return self._worker.submit(("close", self))
