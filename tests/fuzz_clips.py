"""A small clip writer for the fuzz tests (importable by name, unlike a conftest, which pytest loads per folder)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_small_clip(path: Path, *, size: tuple[int, int] = (64, 48), frames: int = 10, fps: int = 5) -> Path:
    """`frames` H.264 frames of a moving gradient at `fps` (constant rate)."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        ramp = np.linspace(0, 255, width).astype(np.int64)[None, :, None]
        for index in range(frames):
            picture = np.broadcast_to((ramp + index * 16) % 256, (height, width, 3)).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")))
        container.mux(stream.encode())
    return path
