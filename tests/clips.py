"""Small real clips for tests, encoded with PyAV (importable from any test: `from clips import write_clip`)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_pattern(index: int, width: int, height: int) -> np.ndarray:
    """A smooth RGB picture that differs clearly from one frame index to the next."""
    yy, xx = np.mgrid[0:height, 0:width]
    red = (xx * 255 // max(width - 1, 1) + index * 8) % 256
    green = (yy * 255 // max(height - 1, 1)) % 256
    blue = np.full_like(xx, (index * 37) % 256)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def write_clip(
    path: Path,
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (160, 96),
    frames: int = 30,
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    pts_ms: Sequence[int] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` pattern frames with PyAV; ``pts_ms`` gives irregular (VFR) timestamps in milliseconds."""
    width, height = size
    with av.open(str(path), "w", container_options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path
