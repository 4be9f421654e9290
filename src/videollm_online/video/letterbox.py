"""Letterboxing to a square, pixel-identical to the reference ffmpeg ``scale,pad`` chain."""

from __future__ import annotations

import math
import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image

__all__ = ["Letterboxer", "letterbox", "scaled_size", "to_rgb_array"]


def _rescale_rnd(a: int, b: int, c: int) -> int:
    """``av_rescale(a, b, c)``: a * b / c rounded to nearest, halves away from zero (non-negative inputs)."""
    return (a * b + c // 2) // c


def scaled_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Size after ``scale='if(gt(iw,ih),RES,-2)':'if(gt(iw,ih),-2,RES)'`` (long side RES, short side even)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid image size {width}x{height}")
    if width > height:
        w, h = resolution, _rescale_rnd(resolution, height, width * 2) * 2
    else:
        w, h = _rescale_rnd(resolution, width, height * 2) * 2, resolution
    # ffmpeg would fail on a 0-sized side or on a side longer than the pad (odd RES); clamp instead.
    return min(max(w, 1), resolution), min(max(h, 1), resolution)


def _rotation_filters(rotation: int) -> list[tuple[str, str | None]]:
    """Filters ffmpeg's autorotate inserts for a display matrix rotating ``rotation`` degrees counterclockwise."""
    theta = -float(round(rotation))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return [("transpose", "clock")]
    if abs(theta - 180) < 1:
        return [("hflip", None), ("vflip", None)]
    if abs(theta - 270) < 1:
        return [("transpose", "cclock")]
    if abs(theta) > 1:
        return [("rotate", f"{theta:f}*PI/180")]
    return []


class Letterboxer:
    """Converts ``av.VideoFrame`` objects to letterboxed RGB arrays with a cached libavfilter graph.

    The graph is ``[autorotate] -> scale (bicubic) -> pad (centred, black) -> format=rgb24``, the same chain the
    ffmpeg CLI builds for the reference command, so the pixels are bit-identical to it. Not thread-safe: use one
    instance per thread.
    """

    def __init__(self, resolution: int, *, apply_rotation: bool = True) -> None:
        if int(resolution) <= 0:
            raise ValueError(f"resolution must be positive, got {resolution}")
        self.resolution = int(resolution)
        self.apply_rotation = apply_rotation
        self._key: tuple[Any, ...] | None = None
        self._graph: av.filter.Graph | None = None

    def _build(self, frame: av.VideoFrame, rotation: int) -> None:
        res = self.resolution
        rot = _rotation_filters(rotation) if self.apply_rotation else []
        width, height = frame.width, frame.height
        if rot and rot[0][0] == "transpose":
            width, height = height, width
        w, h = scaled_size(width, height, res)
        graph = av.filter.Graph()
        nodes = [
            graph.add_buffer(
                width=frame.width,
                height=frame.height,
                format=frame.format,
                time_base=frame.time_base or Fraction(1, 1_000_000),
            )
        ]
        for name, args in rot:
            nodes.append(graph.add(name, args))
        nodes.append(graph.add("scale", f"{w}:{h}:flags=bicubic"))
        nodes.append(graph.add("pad", f"{res}:{res}:(ow-iw)/2:(oh-ih)/2:color=#000000"))
        nodes.append(graph.add("format", "rgb24"))
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes)
        graph.configure()
        self._graph = graph

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rotation = frame.rotation if self.apply_rotation else 0
        key = (frame.width, frame.height, frame.format.name, rotation)
        if key != self._key:
            self._build(frame, rotation)
            self._key = key
        assert self._graph is not None
        self._graph.push(frame)
        out = self._graph.pull()
        arr = out.to_ndarray()
        if arr.shape != (self.resolution, self.resolution, 3):  # pragma: no cover - defensive
            raise RuntimeError(f"letterbox produced {arr.shape}")
        return arr


def to_rgb_array(image: Any) -> np.ndarray:
    """Any HWC numpy array, CHW/HWC torch tensor or PIL image -> contiguous (H, W, 3) uint8 RGB array."""
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, av.VideoFrame):
        arr = image.to_ndarray(format="rgb24")
    else:
        is_tensor = type(image).__module__.startswith("torch")
        if is_tensor:
            tensor = image.detach().cpu()
            if tensor.ndim == 3 and tensor.shape[0] in (1, 3, 4) and tensor.shape[-1] not in (1, 3, 4):
                tensor = tensor.permute(1, 2, 0)
            arr = tensor.numpy()
        else:
            arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"expected an HWC RGB image, got array of shape {arr.shape}")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating):
                scale = 255.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 1.0
                arr = np.clip(np.nan_to_num(arr) * scale + 0.5, 0, 255)
            else:
                arr = np.clip(arr, 0, 255)
            arr = arr.astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, axis=-1)
        elif arr.shape[-1] == 4:
            arr = arr[..., :3]
    return np.ascontiguousarray(arr)


_local = threading.local()


def letterbox(image: Any, resolution: int) -> np.ndarray:
    """Bicubic-scale ``image`` so its long side is ``resolution`` and pad it centred with black to a square.

    ``image`` may be an HWC uint8 RGB numpy array (gray and RGBA are converted), a CHW or HWC torch tensor, a PIL
    image or an ``av.VideoFrame``. Returns a new ``(resolution, resolution, 3)`` uint8 RGB array, identical to what
    ``ffmpeg -sws_flags bicubic -vf "scale=...,pad=..."`` produces for the same RGB picture.
    """
    if isinstance(image, av.VideoFrame):
        frame = image
    else:
        frame = av.VideoFrame.from_ndarray(to_rgb_array(image), format="rgb24")
    cache: dict[int, Letterboxer] = getattr(_local, "cache", None) or {}
    _local.cache = cache
    boxer = cache.get(int(resolution))
    if boxer is None:
        if len(cache) > 8:
            cache.clear()
        boxer = cache[int(resolution)] = Letterboxer(int(resolution))
    return boxer(frame)
