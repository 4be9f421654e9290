"""Video sources (files, image folders, devices, URLs, Python iterables) decoded ahead in a bounded background queue."""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageOps

from ..utils.errors import UserError
from .letterbox import Letterboxer, to_rgb_array
from .sampling import FfmpegRateSampler, LiveSampler, rescale, to_fraction

__all__ = ["Frame", "FrameStream", "VideoDecodeWarning", "VideoInfo", "VideoSourceError", "open_video"]

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "hls", "mms")
_US = Fraction(1, 1_000_000)


class VideoSourceError(UserError):
    """A video source cannot be opened or read; the message is one line saying what is wrong and what to do."""


class VideoDecodeWarning(RuntimeWarning):
    """Part of a source could not be decoded (corrupt or truncated data); the readable frames are still used."""


@dataclass(frozen=True, eq=False)
class Frame:
    time: float  # video time in seconds of this sampled frame (index / fps)
    index: int  # sampled-frame index
    image: np.ndarray  # (resolution, resolution, 3) uint8 RGB, letterboxed

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.image.shape))
        return f"Frame(time={self.time:.3f}, index={self.index}, image={self.image.dtype}[{shape}])"


@dataclass(frozen=True)
class VideoInfo:
    source: str  # human-readable description of the source
    fps: float | None  # native frame rate, if known
    duration: float | None  # seconds, if known
    width: int | None  # native width, if known
    height: int | None  # native height, if known
    is_live: bool  # live feed: sampled by arrival, buffer drops the oldest frames when full
    codec: str | None = None


class _Stopped(Exception):
    pass


@dataclass
class _Failure:
    error: BaseException


@dataclass
class _Warning:
    message: str


_END = object()
Emit = Callable[[Any], None]


def _averror(err: BaseException) -> str:
    if isinstance(err, av.error.FFmpegError):
        return err.strerror or str(err)
    return str(err) or type(err).__name__


class _Source:
    """Produces :class:`Frame` objects (or :class:`_Warning`) through ``emit`` until exhausted or stopped."""

    info: VideoInfo

    def run(self, emit: Emit, stop: threading.Event) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ContainerSource(_Source):
    """A PyAV container: files and remote files use the ffmpeg ``-r`` sampler, live feeds the drop-only sampler."""

    def __init__(
        self, container: Any, name: str, *, fps: Fraction, resolution: int, start: float, is_live: bool
    ) -> None:
        self.container = container
        self.name = name
        self.fps = fps
        self.resolution = resolution
        self.start = start
        streams = container.streams.video
        if not streams:
            container.close()
            raise VideoSourceError(f"{name} has no video stream (audio-only or not a video)")
        self.stream = stream = streams[0]
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration = None
        if container.duration:
            duration = container.duration / 1e6
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        self.info = VideoInfo(
            source=name,
            fps=float(rate) if rate else None,
            duration=duration,
            width=cc.width or None,
            height=cc.height or None,
            is_live=is_live,
            codec=cc.name,
        )
        self.is_live = is_live
        # no frame threading: it hides decoding errors of truncated files (and adds latency to live feeds)
        self._warned = False

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # pragma: no cover - closing twice or a broken container
            pass

    def _warn(self, emit: Emit, err: BaseException) -> None:
        if not self._warned:
            self._warned = True
            emit(
                _Warning(
                    f"{self.name}: corrupt or truncated video data ({_averror(err)}); skipping what cannot be decoded"
                )
            )

    def _decoded(self, emit: Emit, stop: threading.Event) -> Iterator[av.VideoFrame]:
        try:
            for packet in self.container.demux(self.stream):
                if stop.is_set():
                    raise _Stopped
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as err:
                    self._warn(emit, err)
                    continue
                yield from frames
        except av.error.FFmpegError as err:  # demuxer gave up: treat as the end of the readable part
            self._warn(emit, err)

    def _seek(self) -> None:
        stream = self.stream
        if self.start <= 0 or self.is_live or not stream.time_base:
            return
        target = int(self.start / stream.time_base) + (stream.start_time or 0)
        try:
            self.container.seek(target, stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as err:
            log.warning("%s: cannot seek to %.3fs (%s); decoding from the start", self.name, self.start, err)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        boxer = Letterboxer(self.resolution)
        if self.is_live:
            self._run_live(emit, stop, boxer)
        else:
            self._run_file(emit, stop, boxer)

    def _run_file(self, emit: Emit, stop: threading.Event, boxer: Letterboxer) -> None:
        stream, fps = self.stream, self.fps
        first = math.ceil(self.start * fps - Fraction(1, 10**6)) if self.start > 0 else 0
        sampler: FfmpegRateSampler[av.VideoFrame] = FfmpegRateSampler(
            fps, vscfr=len(self.container.streams) == 1, first_index=first
        )
        start_us = self.container.start_time or 0
        decoded = 0
        last_pts: int | None = None
        last_dur = 0
        reached = end = Fraction(0)  # the latest frame's start and end (s): no sampled frame at or past the end
        pending: collections.deque[tuple[int, av.VideoFrame]] = collections.deque()
        converted: tuple[Any, np.ndarray] | None = None

        def make(index: int, src: av.VideoFrame) -> Frame:
            nonlocal converted
            if converted is not None and converted[0] is src:
                image = converted[1].copy()
            else:
                image = boxer(src)
                converted = (src, image)
            return Frame(time=float(index / fps), index=index, image=image)

        self._seek()
        rate = stream.average_rate or stream.guessed_rate
        for frame in self._decoded(emit, stop):
            decoded += 1
            tb = frame.time_base or stream.time_base
            pts = frame.pts
            if pts is None:
                pts = 0 if last_pts is None else last_pts + last_dur
            # ffmpeg's video_duration_estimate(): container duration, else pts step, else frame rate
            ts_diff = pts - last_pts if last_pts is not None else -1
            duration = frame.duration or 0
            if duration <= 0 or (duration == 1 and ts_diff > 2):
                if ts_diff > 0:
                    duration = ts_diff
                elif rate:
                    duration = max(rescale(1, 1 / Fraction(rate), tb), 1)
                else:
                    duration = max(last_dur, 1)
            last_pts, last_dur = pts, duration
            shifted = pts - rescale(start_us, _US, tb)
            # ffmpeg -r hands out slot i about 1.1 periods early, and repeats the last frame past the video's end:
            # a slot waits until a frame starts at or after its time, and slots past the end are never given.
            reached, end = shifted * tb, (shifted + duration) * tb
            pending.extend(sampler.push(shifted, tb, duration, frame))
            while pending and pending[0][0] <= fps * reached:
                emit(make(*pending.popleft()))
        if self.info.duration:  # the container's length, when the last frame's duration is odd (B-frames)
            end = min(end, max(reached, Fraction(self.info.duration)))
        pending.extend(sampler.flush())
        while pending and pending[0][0] < fps * end:
            emit(make(*pending.popleft()))
        expected = stream.frames or 0
        if not self._warned and self.start <= 0 and 0 < decoded and expected - decoded > max(2, expected // 20):
            self._warned = True
            emit(
                _Warning(
                    f"{self.name}: only {decoded} of {expected} video frames could be decoded "
                    "(truncated or corrupt file)"
                )
            )
        if decoded == 0:
            if self._warned:
                raise VideoSourceError(f"{self.name} has no decodable video frames (file is corrupt or truncated)")
            if self.start > 0 and self.info.duration and self.start >= self.info.duration:
                raise VideoSourceError(
                    f"start={self.start:g}s is past the end of {self.name} ({self.info.duration:.3f}s long)"
                )
            raise VideoSourceError(f"{self.name} has no video frames")

    def _run_live(self, emit: Emit, stop: threading.Event, boxer: Letterboxer) -> None:
        sampler = LiveSampler(self.fps)
        t0_pts: float | None = None
        t0_wall = time.monotonic()
        last_t = 0.0
        decoded = 0
        for frame in self._decoded(emit, stop):
            decoded += 1
            if frame.pts is not None and frame.time_base:
                raw = float(frame.pts * frame.time_base)
                if t0_pts is None or raw - t0_pts < last_t - 1.0:  # first frame, or the feed restarted its clock
                    t0_pts = raw - (last_t + 1 / float(self.fps) if decoded > 1 else 0.0)
                t = raw - t0_pts
            else:
                t = time.monotonic() - t0_wall
            last_t = t
            slot = sampler.push(t)
            if slot is not None:
                emit(Frame(time=slot / float(self.fps), index=slot, image=boxer(frame)))
        if decoded == 0 and not stop.is_set():
            raise VideoSourceError(f"{self.name} delivered no video frames")


IMAGE_EXTENSIONS = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


class _ImageDirSource(_Source):
    """Sorted image files of a folder as a video at ``image_fps``, resampled like ``ffmpeg -framerate ... -r``."""

    def __init__(self, path: Path, *, fps: Fraction, resolution: int, start: float, image_fps: Fraction) -> None:
        self.files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise VideoSourceError(f"{path} contains no image files (expected .jpg/.png/...)")
        self.fps, self.resolution, self.start, self.image_fps = fps, resolution, start, image_fps
        self.name = str(path)
        width = height = None
        try:
            with Image.open(self.files[0]) as im:
                width, height = im.size
        except OSError:
            pass
        self.info = VideoInfo(
            source=self.name,
            fps=float(image_fps),
            duration=float(len(self.files) / image_fps),
            width=width,
            height=height,
            is_live=False,
        )

    def run(self, emit: Emit, stop: threading.Event) -> None:
        fps, tb = self.fps, 1 / self.image_fps
        first = math.ceil(self.start * fps - Fraction(1, 10**6)) if self.start > 0 else 0
        sampler: FfmpegRateSampler[Path] = FfmpegRateSampler(fps, vscfr=True, first_index=first)
        boxer = Letterboxer(self.resolution)
        cache: tuple[Path, np.ndarray] | None = None
        warned = False
        emitted = 0
        skip_before = max(int(self.start * self.image_fps) - 2, 0)
        end = len(self.files) * tb  # no sampled frame at or past the last image's end (ffmpeg -r repeats it)

        def make(index: int, path: Path) -> Frame | None:
            nonlocal cache, warned
            if cache is not None and cache[0] == path:
                return Frame(time=float(index / fps), index=index, image=cache[1].copy())
            try:
                with Image.open(path) as im:
                    rgb = to_rgb_array(ImageOps.exif_transpose(im))
            except (OSError, ValueError) as err:
                if not warned:
                    warned = True
                    emit(_Warning(f"{path}: unreadable image ({err}); skipping it"))
                return None
            image = boxer(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
            cache = (path, image)
            return Frame(time=float(index / fps), index=index, image=image)

        for k, path in enumerate(self.files):
            if stop.is_set():
                raise _Stopped
            if k < skip_before:
                continue
            for index, src in sampler.push(k, tb, 1, path):
                if index >= fps * end:
                    continue
                frame = make(index, src)
                if frame is not None:
                    emit(frame)
                    emitted += 1
        for index, src in sampler.flush():
            if index >= fps * end:
                continue
            frame = make(index, src)
            if frame is not None:
                emit(frame)
                emitted += 1
        if emitted == 0 and self.start <= 0:
            raise VideoSourceError(f"no readable images in {self.name}")


class _IterableSource(_Source):
    """Frames pushed from Python: arrays / tensors / PIL images, optionally as ``(time, image)`` tuples."""

    def __init__(
        self, items: Iterable[Any], *, fps: Fraction, resolution: int, start: float, image_fps: Fraction
    ) -> None:
        self.items = items
        self.fps, self.resolution, self.start, self.image_fps = fps, resolution, start, image_fps
        self.info = VideoInfo(
            source=f"<{type(items).__name__} of frames>",
            fps=float(image_fps),
            duration=None,
            width=None,
            height=None,
            is_live=False,
        )

    def run(self, emit: Emit, stop: threading.Event) -> None:
        first = math.ceil(self.start * self.fps - Fraction(1, 10**6)) if self.start > 0 else 0
        sampler = LiveSampler(self.fps, first_index=first)
        boxer = Letterboxer(self.resolution)
        fps = float(self.fps)
        for k, item in enumerate(self.items):
            if stop.is_set():
                raise _Stopped
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], (int, float, np.number)):
                t, image = float(item[0]), item[1]
            else:
                t, image = float(k / self.image_fps), item
            slot = sampler.push(t)
            if slot is None:
                continue
            try:
                rgb = to_rgb_array(image)
            except (TypeError, ValueError) as err:
                raise VideoSourceError(f"pushed frame #{k} is not an RGB image: {err}") from err
            emit(Frame(time=slot / fps, index=slot, image=boxer(av.VideoFrame.from_ndarray(rgb, format="rgb24"))))


class _Pipe:
    """Producer side of a :class:`FrameStream`, run by the decoding thread (holds no reference to the stream, so an
    abandoned stream is garbage-collected and its thread stopped)."""

    def __init__(self, max_buffered: int, is_live: bool, name: str) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max_buffered)
        self.stop = threading.Event()
        self.is_live = is_live
        self.name = name
        self.produced = 0
        self.dropped = 0

    def put(self, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def emit(self, item: Any) -> None:
        if not isinstance(item, Frame):
            self.put(item)
            return
        if self.is_live:  # keep latency bounded: replace the oldest waiting frame
            while True:
                if self.stop.is_set():
                    raise _Stopped
                try:
                    self.queue.put_nowait(item)
                    break
                except queue.Full:
                    try:
                        self.queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        else:
            self.put(item)
        self.produced += 1

    def run(self, source: _Source) -> None:
        try:
            source.run(self.emit, self.stop)
            final: Any = _END
        except _Stopped:
            final = None
        except VideoSourceError as err:
            final = _Failure(err)
        except Exception as err:  # noqa: BLE001 - surfaced to the consumer as VideoSourceError
            log.debug("decoder thread failed", exc_info=True)
            wrapped = VideoSourceError(f"error while reading {self.name}: {_averror(err)}")
            wrapped.__cause__ = err
            final = _Failure(wrapped)
        finally:
            source.close()
        if final is not None:
            try:
                self.put(final)
            except _Stopped:
                pass


class FrameStream(Iterator[Frame]):
    """Iterator of letterboxed :class:`Frame` objects decoded ahead in a background thread.

    At most ``max_buffered`` frames wait in the queue: a file's decoder blocks when it is full, a live feed drops
    the oldest frame instead (keeping latency low). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, source: _Source, *, max_buffered: int = 64, realtime: bool = False, start: float = 0.0) -> None:
        if max_buffered < 1:
            raise ValueError(f"max_buffered must be >= 1, got {max_buffered}")
        self.info = source.info
        self.max_buffered = max_buffered
        self.realtime = realtime
        self.consumed = 0  # frames returned to the caller so far
        self._start = start
        self._done = False
        self._t0: float | None = None
        self._pipe = _Pipe(max_buffered, source.info.is_live, source.info.source)
        self._thread = threading.Thread(
            target=self._pipe.run, args=(source,), daemon=True, name=f"video-decode:{source.info.source}"
        )
        self._thread.start()

    @property
    def buffered(self) -> int:
        """Number of frames currently waiting in the queue (never more than ``max_buffered``)."""
        return self._pipe.queue.qsize()

    @property
    def produced(self) -> int:
        """Frames the decoding thread has queued so far."""
        return self._pipe.produced

    @property
    def dropped(self) -> int:
        """Frames a live feed dropped because the consumer fell ``max_buffered`` frames behind."""
        return self._pipe.dropped

    @property
    def closed(self) -> bool:
        return self._pipe.stop.is_set()

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def __iter__(self) -> FrameStream:
        return self

    def __next__(self) -> Frame:
        pipe = self._pipe
        if self.realtime and self._t0 is None:
            self._t0 = time.monotonic()
        while not self._done:
            try:
                item = pipe.queue.get(timeout=0.1)
            except queue.Empty:
                if pipe.stop.is_set() or (not self._thread.is_alive() and pipe.queue.empty()):
                    self._done = True
                continue
            if item is _END:
                self._done = True
            elif isinstance(item, _Failure):
                self.close()
                raise item.error
            elif isinstance(item, _Warning):
                warnings.warn(item.message, VideoDecodeWarning, stacklevel=2)
            else:
                self.consumed += 1
                if self.realtime:
                    self._pace(item)
                return item
        self.close()
        raise StopIteration

    def _pace(self, frame: Frame) -> None:
        """Realtime mode: hold a frame until ``frame.time - start`` seconds after the first ``next()``."""
        assert self._t0 is not None
        delay = self._t0 + (frame.time - self._start) - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def close(self) -> None:
        """Stop the decoding thread, release the container and drop buffered frames (idempotent)."""
        self._done = True
        self._pipe.stop.set()
        while True:
            try:
                self._pipe.queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        pipe = getattr(self, "_pipe", None)
        if pipe is not None:
            pipe.stop.set()


def _describe_open_error(name: str, err: BaseException) -> str:
    if isinstance(err, (av.error.InvalidDataError, av.error.EOFError)):
        return f"{name} is not a video FFmpeg can read ({_averror(err)}); check the file is a complete video"
    if isinstance(err, PermissionError):
        return f"permission denied: {name}"
    return f"cannot open {name}: {_averror(err)}"


def _open_container(target: str, name: str, **kwargs: Any) -> Any:
    try:
        return av.open(target, mode="r", **kwargs)
    except (av.error.FFmpegError, OSError) as err:
        raise VideoSourceError(_describe_open_error(name, err)) from err


def _is_url(source: str) -> bool:
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.lower() in NETWORK_SCHEMES


def open_video(
    source: Any,
    *,
    fps: float,
    resolution: int,
    realtime: bool = False,
    max_buffered: int = 64,
    start: float = 0.0,
    image_fps: float | None = None,
    timeout: float = 10.0,
) -> FrameStream:
    """Open a video source and return a :class:`FrameStream` of frames sampled at ``fps`` and letterboxed.

    ``source``: a video file path, a folder of images (sorted by name, played at ``image_fps``, default ``fps``),
    a capture device (``/dev/videoN`` or an int N), a URL (``rtsp://``, ``rtmp://``, ``http(s)://`` incl. HLS
    ``.m3u8``; network operations give up after ``timeout`` seconds), or an iterable of frames (HWC uint8 arrays,
    torch tensors, PIL images or ``(time_seconds, image)`` tuples). Files and image folders are sampled exactly like
    ``ffmpeg -r FPS`` (frame ``i`` at ``i / fps``); live feeds and pushed frames keep the first frame reaching each
    ``i / fps`` slot and drop the rest. ``start`` skips to that video time; ``realtime`` paces frames to the wall
    clock. Raises :class:`VideoSourceError` for unusable sources.
    """
    fps_q = to_fraction(fps)
    resolution = int(resolution)
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if max_buffered < 1:
        raise ValueError(f"max_buffered must be >= 1, got {max_buffered}")
    img_fps = to_fraction(image_fps) if image_fps is not None else fps_q
    src: _Source
    common = {"fps": fps_q, "resolution": resolution, "start": float(start)}

    if isinstance(source, int) and not isinstance(source, bool):
        source = f"/dev/video{source}"
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, bytes):
            text = os.fsdecode(text)
        if text.startswith("file://"):
            text = text[len("file://") :]
        if _is_url(text):
            options = {"rtsp_transport": "tcp"} if text.lower().startswith("rtsp") else {}
            container = _open_container(text, text, timeout=(timeout, timeout), options=options)
            is_live = text.lower().startswith(("rtsp", "rtmp", "udp", "srt", "rtp", "tcp")) or not container.duration
            src = _ContainerSource(container, text, is_live=is_live, **common)
        elif text.startswith("/dev/"):
            if not os.path.exists(text):
                raise VideoSourceError(f"no such capture device: {text} (is the camera connected? see ls /dev/video*)")
            if not os.access(text, os.R_OK):
                raise VideoSourceError(f"permission denied: {text} (add your user to the 'video' group)")
            container = _open_container(text, text, format="v4l2", timeout=(timeout, timeout))
            src = _ContainerSource(container, text, is_live=True, **common)
        else:
            path = Path(text)
            if not path.exists():
                raise VideoSourceError(f"no such file: {text}")
            if path.is_dir():
                src = _ImageDirSource(path, image_fps=img_fps, **common)
            else:
                if path.stat().st_size == 0:
                    raise VideoSourceError(f"{text} is empty (0 bytes); check the file was copied completely")
                container = _open_container(str(path), text)
                src = _ContainerSource(container, text, is_live=False, **common)
    elif isinstance(source, bytes):
        raise VideoSourceError("pass a path or a file name, not raw bytes")
    else:
        items = source
        if isinstance(source, np.ndarray) or type(source).__module__.startswith("torch"):
            if source.ndim == 3:
                items = [source]
            elif source.ndim != 4:
                raise VideoSourceError(f"expected frames of shape (T, H, W, 3), got an array of shape {source.shape}")
        elif isinstance(source, Image.Image):
            items = [source]
        try:
            iter(items)
        except TypeError:
            raise VideoSourceError(
                f"unsupported video source of type {type(source).__name__}: pass a path, URL, "
                "device or an iterable of frames"
            ) from None
        src = _IterableSource(items, image_fps=img_fps, **common)
    return FrameStream(src, max_buffered=max_buffered, realtime=realtime, start=float(start))
