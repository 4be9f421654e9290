"""Video sources and the frame sampler: frames at a target fps, letterboxed to a square, as in the reference."""

from .letterbox import letterbox, scaled_size
from .stream import Frame, FrameStream, VideoDecodeWarning, VideoInfo, VideoSourceError, open_video

__all__ = [
    "Frame",
    "FrameStream",
    "VideoDecodeWarning",
    "VideoInfo",
    "VideoSourceError",
    "letterbox",
    "open_video",
    "scaled_size",
]
