"""Bad inputs fail with one clear VideoSourceError line (or a warning for partly readable files)."""

from __future__ import annotations

import time

import av
import pytest

from videollm_online.video import VideoDecodeWarning, VideoSourceError, open_video


def read_all(source, **kwargs):
    with open_video(source, fps=kwargs.pop("fps", 5), resolution=kwargs.pop("resolution", 32), **kwargs) as stream:
        return list(stream)


def assert_one_line(err: pytest.ExceptionInfo) -> None:
    message = str(err.value)
    assert message and "\n" not in message


def test_missing_path(tmp_path):
    with pytest.raises(VideoSourceError, match="no such file: .*missing.mp4") as err:
        open_video(tmp_path / "missing.mp4", fps=2, resolution=32)
    assert_one_line(err)


def test_text_file_renamed_mp4(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoSourceError, match="notes.mp4 is not a video") as err:
        open_video(fake, fps=2, resolution=32)
    assert_one_line(err)


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoSourceError, match="empty"):
        open_video(tmp_path / "empty.mp4", fps=2, resolution=32)


def test_truncated_mp4_decodes_what_it_can(make_clip, tmp_path):
    clip = make_clip("whole.mp4", frames=50, container_options={"movflags": "faststart"})
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.warns(VideoDecodeWarning, match="cut.mp4") as record:
        frames = read_all(cut, fps=25)
    assert 0 < len(frames) < 50
    assert len([w for w in record if issubclass(w.category, VideoDecodeWarning)]) == 1  # warned once


def test_zero_frame_video(tmp_path):
    path = tmp_path / "zero.avi"
    with av.open(str(path), "w") as container:  # header and index only, no frame
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoSourceError, match="zero.avi has no video frames") as err:
        read_all(path)
    assert_one_line(err)


def test_unreachable_url_fails_fast():
    started = time.monotonic()
    with pytest.raises(VideoSourceError, match="127.0.0.1:9") as err:
        open_video("http://127.0.0.1:9/x.mp4", fps=2, resolution=32, timeout=3)
    assert time.monotonic() - started < 5
    assert_one_line(err)


def test_missing_capture_device():
    with pytest.raises(VideoSourceError, match="no such capture device: /dev/video99"):
        open_video("/dev/video99", fps=2, resolution=32)


def test_empty_image_folder(tmp_path):
    with pytest.raises(VideoSourceError, match="no image files"):
        open_video(tmp_path, fps=2, resolution=32)
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(VideoSourceError, match="no image files"):
        open_video(tmp_path, fps=2, resolution=32)


def test_unreadable_images_are_skipped_with_a_warning(tmp_path, pattern):
    from PIL import Image

    Image.fromarray(pattern(0, 40, 30)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    with pytest.warns(VideoDecodeWarning, match="b.png"):
        frames = read_all(tmp_path, fps=1)
    assert len(frames) == 1


def test_bad_pushed_frame_and_failing_generator():
    with pytest.raises(VideoSourceError, match="pushed frame #1"):
        read_all([[[[0, 0, 0]]], "not an image"])

    def broken():
        yield [[[0, 0, 0]]]
        raise RuntimeError("camera unplugged")

    with pytest.raises(VideoSourceError, match="camera unplugged"):
        read_all(broken())


def test_bad_arguments():
    with pytest.raises(ValueError):
        open_video([], fps=0, resolution=32)
    with pytest.raises(ValueError):
        open_video([], fps=2, resolution=0)
    with pytest.raises(VideoSourceError, match="unsupported video source"):
        open_video(3.5, fps=2, resolution=32)
