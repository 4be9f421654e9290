"""The world's on-disk format tag and `WorldConfig`, how episodes are generated and rendered."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FORMAT = "synth_world/1"
"""Version tag written into every annotation and index."""
VIDEO_COMMENT = f"videollm-online {FORMAT}"
"""Written into every world video's container (its `comment` tag): how `bundled.is_world_video` knows one."""


def num_frames(duration: float, fps: float) -> int:
    """Frames sampled at `fps` from `duration` seconds of video: frame i shows time i / fps, for i / fps < duration."""
    return max(1, math.ceil(duration * fps - 1e-6))


@dataclass
class WorldConfig:
    """How episodes are generated and rendered."""

    width: int = 256
    """Frame width in pixels (even, at least 32)."""
    height: int = 256
    """Frame height in pixels (even, at least 32)."""
    fps: int = 10
    """Frame rate of the rendered mp4 (the source rate; training subsamples it)."""
    min_duration: float = 20.0
    """Shortest episode, seconds."""
    max_duration: float = 60.0
    """Longest episode, seconds; a task that would run past it loses its last steps."""
    event_duration: tuple[float, float] = (0.5, 2.0)
    """Range of an event's duration (the motion or colour fade), seconds."""
    idle_gap: tuple[float, float] = (1.0, 4.0)
    """Range of the idle time before each event (and after the last one), seconds."""
    max_objects: int = 6
    """Most objects in one episode (task objects plus distractors)."""
    task_prob: float = 0.75
    """Probability that an episode pursues a goal made of ordered steps; otherwise it is free play."""
    camera_jitter: float = 0.015
    """Amplitude of the camera's smooth random translation, as a fraction of the frame size."""
    zoom_jitter: float = 0.04
    """Amplitude of the camera's random zoom-in (1 + zoom_jitter at most)."""
    lighting_drift: float = 0.12
    """Amplitude of the global brightness, tint and light-direction drift (relative gain)."""
    noise_std: float = 4.0
    """Standard deviation of per-pixel Gaussian noise, in 0-255 units."""
    motion_blur: bool = True
    """Average three sub-frame renders while an object moves."""
    crf: int = 23
    """x264 constant rate factor (0 lossless .. 51 worst)."""
    time_grid: float = 0.0
    """When > 0, events start and end on multiples of this many seconds. Set it to the training frame period
    (0.5 s at 2 fps) so the frame a narration follows shows the finished event."""

    def __post_init__(self) -> None:
        for name in ("event_duration", "idle_gap"):
            try:
                setattr(self, name, tuple(float(v) for v in getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"WorldConfig.{name} must be a pair of numbers, got {getattr(self, name)!r}") from None
        for name in ("width", "height", "fps", "max_objects", "crf"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"WorldConfig.{name} must be an int, got {value!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 32 or value > 4096 or value % 2:
                raise ValueError(f"WorldConfig.{name} must be even and in [32, 4096] (yuv420p), got {value}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"WorldConfig.fps must be in [1, 120], got {self.fps}")
        if not 0 < self.min_duration <= self.max_duration <= 3600:
            raise ValueError(
                f"WorldConfig needs 0 < min_duration <= max_duration <= 3600, "
                f"got {self.min_duration} and {self.max_duration}"
            )
        for name, low in (("event_duration", 0.1), ("idle_gap", 0.0)):
            value = getattr(self, name)
            if len(value) != 2 or not low <= value[0] <= value[1] or value[1] <= 0:
                raise ValueError(f"WorldConfig.{name} must be (lo, hi) with {low} <= lo <= hi and hi > 0, got {value}")
        if not 2 <= self.max_objects <= 12:
            raise ValueError(f"WorldConfig.max_objects must be in [2, 12], got {self.max_objects}")
        for name, hi in (
            ("task_prob", 1.0),
            ("camera_jitter", 0.1),
            ("zoom_jitter", 0.3),
            ("lighting_drift", 0.5),
            ("noise_std", 50.0),
        ):
            value = getattr(self, name)
            if not 0 <= value <= hi:
                raise ValueError(f"WorldConfig.{name} must be in [0, {hi}], got {value}")
        if not 0 <= self.time_grid <= 5:
            raise ValueError(f"WorldConfig.time_grid must be in [0, 5] seconds, got {self.time_grid}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"WorldConfig.crf must be in [0, 51], got {self.crf}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorldConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown WorldConfig fields {sorted(unknown)}; valid fields: {', '.join(sorted(names))}")
        return cls(**data)
