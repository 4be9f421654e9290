"""Bounded read-ahead, prompt shutdown and live-feed dropping of the background decoder."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np

from videollm_online.video import Frame, open_video
from videollm_online.video.stream import _Pipe


def test_queue_stays_bounded_with_a_slow_consumer(make_clip):
    clip = make_clip("long.mp4", frames=60)
    with open_video(clip, fps=25, resolution=32, max_buffered=4) as stream:
        for _ in range(6):
            next(stream)
            time.sleep(0.05)  # slow consumer: the decoder must wait, not run ahead
            assert stream.buffered <= 4
            assert stream.produced - stream.consumed <= 4
        assert stream.produced < 60
        rest = list(stream)
    assert len(rest) == 54


def test_close_mid_stream_stops_the_thread(make_clip, pattern):
    clip = make_clip("close.mp4", frames=60)
    stream = open_video(clip, fps=25, resolution=32, max_buffered=2)
    next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 1.0 and not stream.thread_alive
    assert list(stream) == []
    stream.close()  # idempotent

    endless = (pattern(k % 5, 32, 32) for k in itertools.count())
    with open_video(endless, fps=10, resolution=16, max_buffered=3) as live:
        first = [next(live) for _ in range(5)]
    assert [f.index for f in first] == list(range(5))
    assert not live.thread_alive and live.produced <= 5 + 3 + 1


def test_live_pipe_drops_oldest_when_full():
    pipe = _Pipe(max_buffered=3, is_live=True, name="live")
    image = np.zeros((4, 4, 3), np.uint8)
    for i in range(10):
        pipe.emit(Frame(time=i / 2, index=i, image=image))
    kept = [pipe.queue.get_nowait().index for _ in range(pipe.queue.qsize())]
    assert kept == [7, 8, 9] and pipe.dropped == 7


def test_abandoned_stream_does_not_leak_a_thread(make_clip):
    clip = make_clip("abandon.mp4", frames=40)
    before = threading.active_count()
    stream = open_video(clip, fps=25, resolution=32, max_buffered=2)
    next(stream)
    del stream  # no close(): garbage collection stops the decoder
    deadline = time.monotonic() + 2.0
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() == before
