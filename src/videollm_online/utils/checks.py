"""One check for numbers a user can set: finite and in range. Typed configs call it in `__post_init__`, so the
command line, config files, the server's messages and the Python API refuse the same values with the same words."""

from __future__ import annotations

import math
from numbers import Real

MAX_FPS = 60.0
"""Frames per second a model may be fed: more than any source a model is trained on, and at 1e9 a 2 s clip became
10 GB of duplicated frames."""
MIN_FPS = 0.01
"""One frame every 100 s: below it a video gives no frames, and time arithmetic loses its precision."""
MAX_RESOLUTION = 4096
"""Frame side in pixels: a 100000 px letterbox needs 30 GB per frame."""


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> None:
    """Raise ValueError naming `name` unless `value` is a finite number (an int when `integer`) within
    [low, high] (low excluded when `low_open`); None passes when `optional`."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, Real) or (integer and not float(value).is_integer()):
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value!r}")


def check_fps(name: str, value: object, optional: bool = False) -> None:
    """A sampling rate in frames per second: finite, in [MIN_FPS, MAX_FPS]."""
    check_number(name, value, low=MIN_FPS, high=MAX_FPS, optional=optional)
