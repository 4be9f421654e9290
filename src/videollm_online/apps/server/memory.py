"""Giving memory back after sessions end.

A session's memory (its KV cache, grown a frame at a time, its decoded frames, its event log) is freed when it
closes, but glibc's allocator keeps freed heap pages mapped in the process (and one arena per thread that ever
allocated: the decoding threads, the model worker), so the server's resident memory stayed at its peak after every
client had left. `MemoryReleaser` waits until sessions have stopped closing for a moment, then collects garbage
(reference cycles of finished sessions) and asks the allocator to return its free pages (`malloc_trim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import sys
import time

log = logging.getLogger("videollm_online.apps.server")


def _malloc_trim():
    """glibc's `malloc_trim`, or None where there is none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Collect garbage, then return the allocator's free pages to the system."""
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


class MemoryReleaser:
    """`schedule()` after a session's resources are freed: `release_memory` runs once sessions have stopped
    closing for `delay` seconds, or at the latest `max_wait` seconds after the first request (steady churn still
    gets it)."""

    def __init__(self, delay: float = 2.0, max_wait: float = 30.0) -> None:
        self.delay = delay
        self.max_wait = max_wait
        self.runs = 0
        self._handle: asyncio.TimerHandle | None = None
        self._first: float | None = None
        self._running: asyncio.Task | None = None

    def schedule(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if self._first is None:
            self._first = now
        if self._handle is not None:
            if now - self._first >= self.max_wait:
                return  # due soon anyway: do not postpone it again
            self._handle.cancel()
        self._handle = loop.call_later(self.delay, self._start)

    def _start(self) -> None:
        self._handle, self._first = None, None
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        started = time.perf_counter()
        with contextlib.suppress(Exception):  # best effort: never the reason a server fails
            await asyncio.to_thread(release_memory)
            self.runs += 1
        log.debug("released memory in %.3f s", time.perf_counter() - started)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
