"""Counters, gauges and histograms of the server, written in the Prometheus text format (no client library:
a handful of numbers does not need one)."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.buckets):
            self.counts[index] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.total}"]
        return out


class Metrics:
    """Updated on the event loop only, so no locks."""

    def __init__(self) -> None:
        self.sessions_total = 0
        self.sessions_active = 0
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped: dict[str, int] = defaultdict(int)
        self.events: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.responses = 0
        self.response_latency = Histogram()
        self.frame_latency = Histogram()
        self._processed_times: deque[float] = deque()

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
        lines = []

        def metric(name: str, kind: str, help_text: str, samples: list[str]) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples])

        metric("videollm_sessions_active", "gauge", "Streaming sessions open now.",
               [f"videollm_sessions_active {self.sessions_active}"])
        metric("videollm_sessions_total", "counter", "Streaming sessions opened since start.",
               [f"videollm_sessions_total {self.sessions_total}"])
        metric("videollm_frames_received_total", "counter", "Frame messages received.",
               [f"videollm_frames_received_total {self.frames_received}"])
        metric("videollm_frames_processed_total", "counter", "Frames the model has watched.",
               [f"videollm_frames_processed_total {self.frames_processed}"])
        metric("videollm_frames_dropped_total", "counter", "Frames not watched, by reason.",
               [f'videollm_frames_dropped_total{{reason="{k}"}} {v}' for k, v in sorted(self.frames_dropped.items())])
        metric("videollm_frames_per_second", "gauge", "Frames processed per second over the last 10 s.",
               [f"videollm_frames_per_second {self.frames_per_second():.3f}"])
        metric("videollm_queue_depth", "gauge", "Model calls waiting or running on the inference worker.",
               [f"videollm_queue_depth {queue_depth}"])
        metric("videollm_pending_frames", "gauge", "Frames waiting in sessions' queues.",
               [f"videollm_pending_frames {pending_frames}"])
        metric("videollm_responses_total", "counter", "Assistant turns generated.",
               [f"videollm_responses_total {self.responses}"])
        metric("videollm_events_total", "counter", "Events sent to sessions, by type.",
               [f'videollm_events_total{{type="{k}"}} {v}' for k, v in sorted(self.events.items())])
        metric("videollm_errors_total", "counter", "Error events, by code.",
               [f'videollm_errors_total{{code="{k}"}} {v}' for k, v in sorted(self.errors.items())])
        metric("videollm_response_latency_seconds", "histogram",
               "From receiving the frame (or query) that led to a turn to the turn being complete.",
               self.response_latency.lines("videollm_response_latency_seconds"))
        metric("videollm_frame_latency_seconds", "histogram", "From receiving a frame to the model having watched it.",
               self.frame_latency.lines("videollm_frame_latency_seconds"))
        return "\n".join(lines) + "\n"
