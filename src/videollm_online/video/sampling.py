"""Frame-rate samplers: an exact replica of ``ffmpeg -r FPS`` (files) and a drop-only sampler (live feeds)."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Generic, TypeVar

import numpy as np

__all__ = ["FfmpegRateSampler", "LiveSampler", "rescale", "to_fraction"]

T = TypeVar("T")


def to_fraction(fps: float | Fraction | int) -> Fraction:
    """Frame rate as a rational, like ``av_parse_video_rate`` (e.g. 29.97 -> 2997/100, 2 -> 2/1)."""
    value = Fraction(fps).limit_denominator(1_001_000) if not isinstance(fps, Fraction) else fps
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return value


def rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """``av_rescale_q``: ``value * src / dst`` rounded to nearest, halves away from zero."""
    x = Fraction(value) * src / dst
    n, d = x.numerator, x.denominator
    q = (2 * abs(n) + d) // (2 * d)
    return q if n >= 0 else -q


class FfmpegRateSampler(Generic[T]):
    """Decides, frame by frame, what ``ffmpeg -r FPS`` outputs (fftools ``video_sync_process``, CFR/VSCFR mode).

    Feed decoded frames in presentation order with :meth:`push`; each call returns the output frames it completes
    as ``(output_index, payload)`` pairs (output frame ``i`` has time ``i / fps``). :meth:`flush` returns the tail.
    ffmpeg's rule is not "nearest frame": a frame is dropped only once it lags more than 1.1 output periods, so
    when down-sampling output ``i >= 2`` shows roughly the source frame at ``(i - 1.1) / fps`` and output 1 is the
    second source frame. Replicating it keeps the pixels identical to the original preprocessing.
    """

    def __init__(self, fps: float | Fraction, *, vscfr: bool = False, first_index: int = 0) -> None:
        self.fps = to_fraction(fps)
        self.tb_out = 1 / self.fps
        self.vscfr = vscfr
        self.next_pts = int(first_index)
        self.frame_number = 0
        self._prev: T | None = None
        self._have_prev = False
        self._hist = [0, 0, 0]
        # adjust_frame_pts_to_encoder_tb(): extra precision bits for the float pts
        self._extra_bits = min(max(29 - (self.tb_out.denominator.bit_length() - 1), 0), 16)
        self._fine_tb = Fraction(self.tb_out.numerator, self.tb_out.denominator << self._extra_bits)

    def _float_pts(self, pts: int, time_base: Fraction) -> float:
        fine = rescale(pts, time_base, self._fine_tb)
        value = fine / (1 << self._extra_bits)
        if value != round(value):
            value += math.copysign(1.0 / (1 << 17), value)
        return value

    def push(self, pts: int, time_base: Fraction, duration: int, payload: T) -> list[tuple[int, T]]:
        """Register a frame with integer ``pts``/``duration`` in ``time_base`` (pts relative to the file start)."""
        duration_out = float(duration * time_base / self.tb_out)
        sync_ipts = self._float_pts(pts, time_base)
        delta0 = sync_ipts - self.next_pts
        delta = delta0 + duration_out
        nb_frames, nb_prev = 1, 0
        if delta0 < 0 < delta:  # clip a frame that starts before the current output slot
            sync_ipts = float(self.next_pts)
            duration_out += delta0
            delta0 = 0.0
        if self.vscfr and self.frame_number == 0 and delta0 >= 0.5:  # do not duplicate initial frames
            delta = duration_out
            delta0 = 0.0
            self.next_pts = round(sync_ipts)
        if delta < -1.1:
            nb_frames = 0
        elif delta > 1.1:
            nb_frames = round(float(np.float32(delta)))
            if delta0 > 1.1:
                nb_prev = round(float(np.float32(delta0 - 0.6)))
        out: list[tuple[int, T]] = []
        for i in range(nb_frames):
            out.append((self.next_pts, self._prev if (i < nb_prev and self._have_prev) else payload))  # type: ignore
            self.next_pts += 1
            self.frame_number += 1
        self._hist = [nb_prev, *self._hist[:2]]
        self._prev, self._have_prev = payload, True
        return out

    def flush(self) -> list[tuple[int, T]]:
        """End of stream: ffmpeg repeats the last frame by the median of the recent duplication counts."""
        if not self._have_prev or self.frame_number == 0:
            return []
        nb = sorted(self._hist)[1]
        out = [(self.next_pts + i, self._prev) for i in range(nb)]
        self.next_pts += nb
        self.frame_number += nb
        return out  # type: ignore[return-value]


class LiveSampler:
    """Drop-only sampling for live feeds: output slot ``i`` (time ``i / fps``) takes the first frame whose time
    reaches it; extra frames are dropped and slots without a frame are skipped (never duplicated)."""

    def __init__(self, fps: float | Fraction, *, first_index: int = 0) -> None:
        self.fps = float(to_fraction(fps))
        self.next_slot = int(first_index)

    def push(self, time: float) -> int | None:
        """Slot index for a frame at ``time`` seconds, or ``None`` if the frame is dropped."""
        slot = math.floor(time * self.fps + 1e-6)
        if slot < self.next_slot:
            return None
        self.next_slot = slot + 1
        return slot
