"""Narrate a video source: frames -> vision encoder -> stream session -> turns, with a history written as it goes.

This is the glue between a `FrameStream` (which decodes ahead on its own thread) and a `StreamSession`: it batches
the vision encoder over frames that are already decoded (files), feeds a file's frames to the fast engine several
at a time (`ahead`), keeps one frame at a time for live sources, encodes on a GPU with `FrameEncoderRunner` (the
next frames while the LLM steps), times each stage, and rewrites the history JSON atomically after every turn so an
interrupt loses nothing that was said.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..core.model import LiveModel
from ..core.text import StreamTemplate
from ..engine import EngineConfig, StreamEvent, open_session
from ..engine.static import SlotBackend
from ..engine.vision import FrameEncoderRunner, FrameStager
from ..utils.files import write_json_atomic

VISION_INLINE = "inline"
VISION_RUNNER = "FrameEncoderRunner"


@dataclass
class StageTimes:
    """Seconds spent waiting for decoded frames, in the vision encoder + connector, and in the LLM. With the vision on
    its own CUDA stream (`vision_path` FrameEncoderRunner) `vision` is the host's share (launches, normalising):
    its GPU work overlaps the LLM's, whose time includes any wait for it."""

    decode: float = 0.0
    vision: float = 0.0
    llm: float = 0.0
    frames: int = 0
    vision_path: str = VISION_INLINE
    """How frames were encoded: `inline` (a plain call before the LLM step) or `FrameEncoderRunner` (CUDA graphs on
    a stream of their own, the next frames encoded while the LLM steps)."""
    ahead: int = 1
    """Frames per `push_frames` call (1: frame by frame)."""
    staged: bool = False
    """The frames were stacked into page-locked buffers by a thread of their own (`FrameStager`: a file on a GPU);
    `decode` is then this thread's wait for them."""
    graphs: int = 0
    """CUDA graphs the fast engine captured on the way (each new step shape and cache span), and the seconds that
    took (part of `llm`)."""
    capture: float = 0.0
    warmup_graphs: int = 0
    """CUDA graphs captured before the first frame (`warm_up`), and the seconds that took (not in any stage)."""
    warmup: float = 0.0

    def summary(self) -> dict[str, float]:
        total = self.decode + self.vision + self.llm
        return {
            "frames": self.frames,
            "seconds": round(total, 3),
            "frames_per_second": round(self.frames / total, 2) if total else 0.0,
            "decode_s": round(self.decode, 3),
            "vision_s": round(self.vision, 3),
            "llm_s": round(self.llm, 3),
            "vision_path": self.vision_path,
            "ahead": self.ahead,
            "staged": self.staged,
            "graphs_captured": self.graphs,
            "capture_s": round(self.capture, 3),
            "warmup_graphs": self.warmup_graphs,
            "warmup_s": round(self.warmup, 3),
        }


@dataclass
class History:
    """The conversation so far, in the seed's history format; `save` rewrites the file atomically."""

    video_path: str
    frame_fps: float
    model: str
    path: Path | None = None
    conversation: list[dict] = field(default_factory=list)

    def add(self, event: StreamEvent) -> None:
        self.conversation.append(event.to_dict())
        try:
            self.save()
        except ValueError:  # a non-finite time: never written (it is not JSON), the file keeps the last good history
            self.conversation.pop()
            raise

    def to_dict(self) -> dict:
        return {
            "video_path": self.video_path,
            "frame_fps": self.frame_fps,
            "model": self.model,
            "conversation": self.conversation,
        }

    def save(self) -> None:
        if self.path is None:
            return
        write_json_atomic(self.path, self.to_dict(), strict=True)


def _batches(frames: Iterable, batch_size: int):
    """Group decoded frames for one vision call."""
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _waited(items: Iterable, times: StageTimes):
    """`items`, the wait for each counted as decode time (its frames were not decoded, or not staged, yet)."""
    iterator = iter(items)
    while True:
        started = time.perf_counter()
        item = next(iterator, None)
        times.decode += time.perf_counter() - started
        if item is None:
            return
        yield item


def print_status(line: str) -> None:
    """A progress line on stderr, above narrate's progress bar if one is drawn."""
    tqdm.write(line, file=sys.stderr)


def warm_up(
    session, frames: int | None, ahead: int, queries: int, status: Callable[[str], None] | None
) -> tuple[int, float]:
    """Capture, before the first frame, the CUDA graphs a file of `frames` frames will need on the fast engine: the
    block of `ahead` frames, the single frame (after a response or a query) and the reply token, at every cache
    span the stream's tokens reach (bounded by the cache), so that the stream never pauses for a capture. Other
    shapes (the first prompt, a query's) are captured when they come, as before. Returns (graphs, seconds); (0, 0)
    without CUDA graphs (a CPU) or an unknown length."""
    static = session.backend.static if isinstance(session.backend, SlotBackend) else None
    if static is None or not static.cuda_graphs or not frames:
        return 0, 0.0
    frame_step = session.model.config.frame_num_tokens + 1
    prompt = len(session.template.encode(session.template.system_text(session.config.system_prompt)))
    # each query and response adds a prompt and up to max_new_tokens; a guess past the end only costs a capture
    tokens = min(prompt + frames * frame_step + queries * (session.max_new_tokens + 32), static.max_tokens)
    shapes = [(1, 1, 1), (1, frame_step, 1), *([(1, ahead * frame_step, ahead)] if ahead > 1 else [])]
    last = next(span for span in static.span_buckets if span >= min(tokens, static.allocated))
    spans = len([span for span in static.span_buckets if span <= last])  # as `StaticKV.warmup` counts them
    if status is not None:
        status(f"capturing {len(shapes) * spans} CUDA graphs for {frames} frames (once, before the first frame) ...")
    started = time.perf_counter()
    graphs = static.warmup(shapes, tokens)
    return graphs, time.perf_counter() - started


def _expected_frames(frames: Iterable, fps: float) -> int | None:
    """How many frames a source will give: its length, or a file's duration at `fps`; None for a live source."""
    if hasattr(frames, "__len__"):
        return len(frames)
    info = getattr(frames, "info", None)
    if info is None or info.is_live or not info.duration:
        return None
    return math.ceil(info.duration * fps - 1e-9)


def narrate_frames(
    model: LiveModel,
    template: StreamTemplate,
    frames: Iterable,
    *,
    queries: list[tuple[float, str]] = (),
    config: EngineConfig | None = None,
    history: History | None = None,
    on_event: Callable[[StreamEvent], None] | None = None,
    on_frame: Callable[[int], None] | None = None,
    batch_size: int = 8,
    engine: str = "default",
    cache_tokens: int | None = None,
    ahead: int = 1,
    weights: str | None = None,
    live: bool = False,
    expected_frames: int | None = None,
    status: Callable[[str], None] | None = print_status,
) -> tuple[list[StreamEvent], StageTimes]:
    """Stream `frames` (objects with `.time` and `.image`) through a new session; returns its turns and timings.
    `engine` (the engine kind), `cache_tokens` and `weights` pick the engine (`engine.open_session`); `config` holds
    its settings.

    `ahead` > 1 on the fast engine (a file): frames go to `StreamSession.push_frames` `ahead` at a time, one forward
    for a block of frames on the guess that the model stays silent, rolled back where it would not (the events are
    those of frame by frame; a query inside a block splits it). `live` (a device, a URL, `--realtime`): one frame
    at a time, encoded and stepped as soon as it arrives. On a GPU the frames are encoded by `FrameEncoderRunner`
    (CUDA graphs on their own stream), a file's next block while the LLM steps through this one, and the fast
    engine captures the CUDA graphs the file will need before its first frame (`warm_up`, for `expected_frames`
    frames: default the source's length, or its duration at the model's frame rate), saying so through `status`
    (None: silently)."""
    session = open_session(model, template, config, engine, cache_tokens, ahead=1 if live else ahead, weights=weights)
    for query_time, text in queries:
        session.push_query(query_time, text)
    multi = ahead > 1 and not live and isinstance(session.backend, SlotBackend)
    runner = FrameEncoderRunner(model) if model.device.type == "cuda" else None
    times = StageTimes(vision_path=VISION_RUNNER if runner is not None else VISION_INLINE, ahead=ahead if multi else 1)
    if not live:
        if expected_frames is None:
            expected_frames = _expected_frames(frames, model.config.frame_fps)
        times.warmup_graphs, times.warmup = warm_up(
            session, expected_frames, ahead if multi else 1, len(queries), status
        )
    static = session.backend.static if isinstance(session.backend, SlotBackend) else None
    warmup_capture = static.capture_seconds if static is not None else 0.0

    def emit(events: list[StreamEvent]) -> None:
        for event in events:
            if history is not None:
                history.add(event)
            if on_event is not None:
                on_event(event)

    def encode(item: tuple) -> tuple:
        """(frames, embeddings (B, T, H), an event the LLM's stream waits on or None, the staging buffer or None)."""
        batch, host, slot = item
        started = time.perf_counter()
        if host is not None:
            embeds, done = runner.encode_host(host)
        elif runner is not None:
            embeds, done = runner.encode(model.normalise_frames([frame.image for frame in batch]))
        else:
            embeds, done = model.frames_to_embeds([frame.image for frame in batch]), None
        times.vision += time.perf_counter() - started
        return batch, embeds, done, slot

    # A file on a GPU: the frames are stacked into page-locked buffers by a thread of their own (`FrameStager`), and
    # the next block goes to the vision encoder before the LLM steps through this one, so the two overlap. A live
    # source is not waited for (its next frame is encoded when it comes), nor is anything on a CPU, where the stages
    # share the cores and nothing would overlap.
    prefetch = runner is not None and not live
    batch_frames = 1 if live else ahead if multi else batch_size
    stager = None
    if prefetch:
        resolution = model.config.frame_resolution
        stager = FrameStager(_batches(frames, batch_frames), batch_frames, (resolution, resolution, 3), pin=True)
        times.staged = True
    source = stager if stager is not None else ((batch, None, None) for batch in _batches(frames, batch_frames))
    batches = _waited(source, times)
    try:
        with torch.inference_mode():
            upcoming = next(batches, None)
            upcoming = encode(upcoming) if upcoming is not None else None
            while upcoming is not None:
                batch, embeds, done, slot = upcoming
                upcoming = next(batches, None) if prefetch else None
                upcoming = encode(upcoming) if upcoming is not None else None
                started = time.perf_counter()
                if done is not None:
                    torch.cuda.current_stream().wait_event(done)
                if multi:
                    events = session.push_frames([frame.time for frame in batch], embeds, ahead=ahead)
                    times.llm += time.perf_counter() - started
                    emit(events)
                    for _ in batch:
                        times.frames += 1
                        if on_frame is not None:
                            on_frame(times.frames)
                else:
                    times.llm += time.perf_counter() - started
                    for frame, frame_embeds in zip(batch, embeds):
                        started = time.perf_counter()
                        events = session.push_frame(frame.time, frame_embeds)
                        times.llm += time.perf_counter() - started
                        times.frames += 1
                        emit(events)
                        if on_frame is not None:
                            on_frame(times.frames)
                if stager is not None:  # the encoder has read the buffer (the step waited on it: no wait here)
                    done.synchronize()
                    stager.release(slot)
                if not prefetch:
                    upcoming = next(batches, None)
                    upcoming = encode(upcoming) if upcoming is not None else None
    finally:
        if stager is not None:
            stager.close()
    with torch.inference_mode():
        started = time.perf_counter()
        emit(session.finish())
        times.llm += time.perf_counter() - started
    if static is not None:  # the captures on the way, after the warm-up's
        times.graphs = len(static._graphs) - times.warmup_graphs
        times.capture = static.capture_seconds - warmup_capture
    return session.events, times
