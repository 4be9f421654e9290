"""Frame sampling stops at the video's end: no sampled frame at or past it, whatever the clip's length."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from videollm_online.video import open_video


@pytest.mark.parametrize(
    "frames,native_fps,fps",
    [(100, 10, 2), (103, 10, 2), (95, 10, 2), (100, 10, 3), (250, 25, 2), (31, 30, 7.5), (7, 5, 2)],
)
def test_file_sampling_stops_before_the_end(make_clip, frames, native_fps, fps):
    """A 10.0 s clip at 2 fps ends with 9.5 s (never 10.0 or 10.5); 10.3 s ends with 10.0; every slot up to the end
    is there, once."""
    clip = make_clip("clip.mp4", frames=frames, fps=native_fps, size=(64, 48))
    end = frames / native_fps
    with open_video(clip, fps=fps, resolution=32) as stream:
        times = [frame.time for frame in stream]
    expected = math.ceil(end * fps - 1e-9)  # slots i / fps < end
    assert times == pytest.approx([i / fps for i in range(expected)])
    assert times[-1] < end


def test_ten_second_clip_at_two_fps(make_clip):
    clip = make_clip("ten.mp4", frames=100, fps=10, size=(64, 48))
    times = [frame.time for frame in open_video(clip, fps=2, resolution=32)]
    assert len(times) == 20 and times[-1] == 9.5


def test_start_and_image_folders_stop_at_the_end_too(make_clip, tmp_path, pattern):
    clip = make_clip("ten.mp4", frames=100, fps=10, size=(64, 48))
    assert [f.time for f in open_video(clip, fps=2, resolution=32, start=8.0)] == [8.0, 8.5, 9.0, 9.5]
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(7):  # 7 images at 2 images/s: 3.5 s
        Image.fromarray(pattern(k, 40, 30)).save(folder / f"{k:03d}.png")
    times = [f.time for f in open_video(folder, fps=3, resolution=32, image_fps=2)]
    assert times == pytest.approx([i / 3 for i in range(11)])  # 0 .. 3.33 s; 3.5 s and later are past the end
