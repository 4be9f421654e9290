"""The server's counters, gauges and histograms on `prometheus_client`, one `CollectorRegistry` per app (so tests and
embedding programs can build several apps), with the process and platform collectors on it (CPU, memory, open
files, Python version).

The session code counts with plain arithmetic (`metrics.frames_received += 1`, `metrics.events[kind] += 1`): those
attributes are backed by the Prometheus metrics, so an increase reaches the exposition and a decrease of a counter
is an error. Everything runs on the event loop.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Count:
    """An attribute that reads as the number counted so far and, when increased, increases its Prometheus counter."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, metrics: Metrics | None, owner: type | None = None):
        return self if metrics is None else metrics._counts[self.name]

    def __set__(self, metrics: Metrics, value: float) -> None:
        delta = value - metrics._counts[self.name]
        if delta < 0:
            raise ValueError(f"{self.name} is a counter: it cannot go down ({metrics._counts[self.name]} -> {value})")
        metrics._counters[self.name].inc(delta)
        metrics._counts[self.name] = value


class LabelledCounts:
    """`counts[label] += 1` on a Prometheus counter with one label; reads give the count so far (0 if none)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._counts: dict[str, float] = defaultdict(int)

    def __getitem__(self, label: str) -> float:
        return self._counts[label]

    def __setitem__(self, label: str, value: float) -> None:
        delta = value - self._counts[label]
        if delta < 0:
            raise ValueError(f"{label!r}: a counter cannot go down ({self._counts[label]} -> {value})")
        self.counter.labels(label).inc(delta)
        self._counts[label] = value

    def items(self):
        return self._counts.items()


class Metrics:
    content_type = CONTENT_TYPE
    """Of the text `render` returns (the exposition format's version)."""
    sessions_total = _Count()
    frames_received = _Count()
    frames_processed = _Count()
    responses = _Count()

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self._counts: dict[str, float] = defaultdict(int)
        self._active = 0
        self._counters = {
            "sessions_total": Counter("videollm_sessions", "Streaming sessions opened since start.", registry=r),
            "frames_received": Counter("videollm_frames_received", "Frame messages received.", registry=r),
            "frames_processed": Counter("videollm_frames_processed", "Frames the model has watched.", registry=r),
            "responses": Counter("videollm_responses", "Assistant turns generated.", registry=r),
        }
        self._sessions_active = Gauge("videollm_sessions_active", "Streaming sessions open now.", registry=r)
        self.frames_dropped = LabelledCounts(
            Counter("videollm_frames_dropped", "Frames not watched, by reason.", ["reason"], registry=r)
        )
        self.events = LabelledCounts(
            Counter("videollm_events", "Events sent to sessions, by type.", ["type"], registry=r)
        )
        self.errors = LabelledCounts(Counter("videollm_errors", "Error events, by code.", ["code"], registry=r))
        self.response_latency = Histogram(
            "videollm_response_latency_seconds",
            "From receiving the frame (or query) that led to a turn to the turn being complete.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.frame_latency = Histogram(
            "videollm_frame_latency_seconds",
            "From receiving a frame to the model having watched it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        Gauge("videollm_frames_per_second", "Frames processed per second over the last 10 s.", registry=r).set_function(
            self.frames_per_second
        )
        self._queue_depth = Gauge(
            "videollm_queue_depth", "Model calls waiting or running on the inference worker.", registry=r
        )
        self._pending_frames = Gauge("videollm_pending_frames", "Frames waiting in sessions' queues.", registry=r)
        self.completions = LabelledCounts(
            Counter(
                "videollm_chat_completions",
                "POST /v1/chat/completions requests, by outcome (ok, error, disconnected).",
                ["outcome"],
                registry=r,
            )
        )
        self.completion_frames = Counter(
            "videollm_chat_completion_frames", "Frames watched for /v1/chat/completions requests.", registry=r
        )
        self._processed_times: deque[float] = deque()

    @property
    def sessions_active(self) -> int:
        return self._active

    @sessions_active.setter
    def sessions_active(self, value: int) -> None:
        self._active = int(value)
        self._sessions_active.set(value)

    def frame_done(self, latency: float) -> None:
        self.frames_processed += 1
        self.frame_latency.observe(latency)
        now = time.monotonic()
        self._processed_times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._processed_times and self._processed_times[0] < now - 10.0:
            self._processed_times.popleft()

    def frames_per_second(self) -> float:
        """Frames processed per second over the last 10 s."""
        self._trim(time.monotonic())
        return len(self._processed_times) / 10.0

    def render(self, queue_depth: int, pending_frames: int) -> str:
        """The Prometheus text exposition of this registry, with the gauges read at scrape time set first."""
        self._queue_depth.set(queue_depth)
        self._pending_frames.set(pending_frames)
        return generate_latest(self.registry).decode()
