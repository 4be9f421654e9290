"""Narrate a video source: frames -> vision encoder -> stream session -> turns, with a history written as it goes.

This is the glue between a `FrameStream` and a `StreamSession`: it batches the vision encoder over frames that are
already decoded (files), keeps one frame at a time for live sources, times each stage, and rewrites the history
JSON atomically after every turn so an interrupt loses nothing that was said.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .engine import EngineConfig, StreamEvent, open_session
from .files import write_json_atomic
from .model import LiveModel
from .text import StreamTemplate


@dataclass
class StageTimes:
    """Seconds spent waiting for decoded frames, in the vision encoder + connector, and in the LLM."""

    decode: float = 0.0
    vision: float = 0.0
    llm: float = 0.0
    frames: int = 0

    def summary(self) -> dict[str, float]:
        total = self.decode + self.vision + self.llm
        return {
            "frames": self.frames,
            "seconds": round(total, 3),
            "frames_per_second": round(self.frames / total, 2) if total else 0.0,
            "decode_s": round(self.decode, 3),
            "vision_s": round(self.vision, 3),
            "llm_s": round(self.llm, 3),
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
        return {"video_path": self.video_path, "frame_fps": self.frame_fps, "model": self.model,
                "conversation": self.conversation}

    def save(self) -> None:
        if self.path is None:
            return
        write_json_atomic(self.path, self.to_dict(), strict=True)


def _batches(frames: Iterable, batch_size: int, times: StageTimes):
    """Group decoded frames for one vision call; a wait for the decoder counts as decode time."""
    batch = []
    iterator = iter(frames)
    while True:
        started = time.perf_counter()
        frame = next(iterator, None)
        times.decode += time.perf_counter() - started
        if frame is None:
            break
        batch.append(frame)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def narrate_frames(
    model: LiveModel,
    template: StreamTemplate,
    frames: Iterable,
    *,
    queries: list[tuple[float, str]] = (),
    engine: EngineConfig | None = None,
    history: History | None = None,
    on_event: Callable[[StreamEvent], None] | None = None,
    on_frame: Callable[[int], None] | None = None,
    batch_size: int = 8,
    backend: str = "default",
    cache_tokens: int | None = None,
) -> tuple[list[StreamEvent], StageTimes]:
    """Stream `frames` (objects with `.time` and `.image`) through a new session; returns its turns and timings.
    `backend` and `cache_tokens` pick the engine (`engine.open_session`)."""
    session = open_session(model, template, engine, backend, cache_tokens)
    for query_time, text in queries:
        session.push_query(query_time, text)
    times = StageTimes()

    def emit(events: list[StreamEvent]) -> None:
        for event in events:
            if history is not None:
                history.add(event)
            if on_event is not None:
                on_event(event)

    with torch.inference_mode():
        for batch in _batches(frames, batch_size, times):
            started = time.perf_counter()
            embeds = model.frames_to_embeds([frame.image for frame in batch])  # (B, T, H)
            times.vision += time.perf_counter() - started
            for frame, frame_embeds in zip(batch, embeds):
                started = time.perf_counter()
                events = session.push_frame(frame.time, frame_embeds)
                times.llm += time.perf_counter() - started
                times.frames += 1
                emit(events)
                if on_frame is not None:
                    on_frame(times.frames)
        started = time.perf_counter()
        emit(session.finish())
        times.llm += time.perf_counter() - started
    return session.events, times
