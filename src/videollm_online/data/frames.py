"""Preprocessed frames on disk: one safetensors file per video, written once, read by training and evaluation.

`preprocess_videos` samples each video at the model's fps and letterboxes it (the `narrate` sampler, so training
reads exactly what inference sees) into `frames` (N, R, R, 3) uint8; `extract_features` adds the frozen vision
encoder's output (N, T, Hv). Finished outputs are skipped, corrupt videos are logged and skipped, and the work is
split by rank and world size so `torchrun` can share it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils.distributed import shard
from ..utils.errors import UserError
from ..utils.files import write_with

logger = logging.getLogger(__name__)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts", ".m4v")


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def list_videos(video_dir: str | Path) -> list[Path]:
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise UserError(f"no such directory: {video_dir}")
    return sorted(p for p in video_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)


def check_sampling(fps: float, resolution: int) -> None:
    """The frame rate and frame size of preprocessing: finite and bounded (ValueError naming the one at fault)."""
    from ..utils.checks import MAX_RESOLUTION, check_fps, check_number

    check_fps("fps", fps)
    check_number("resolution", resolution, low=16, high=MAX_RESOLUTION, integer=True)


def preprocess_videos(
    video_dir: str | Path,
    out_dir: str | Path,
    *,
    fps: float,
    resolution: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """Sample and letterbox every video of a directory into `out_dir/{stem}.safetensors`; returns counts.
    `rank`/`world_size` split the videos between machines or processes, `workers` processes share a rank's."""
    from tqdm import tqdm

    check_sampling(fps, resolution)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    jobs = []
    for path in shard(list_videos(video_dir), rank, world_size):
        if (out_dir / f"{path.stem}.safetensors").exists():
            counts["skipped"] += 1
        else:
            jobs.append((path, out_dir, fps, resolution))
    bar = {"desc": f"preprocess [rank {rank}]", "unit": "video", "total": len(jobs), "disable": not progress}
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            outcomes = list(tqdm(pool.imap_unordered(_preprocess_one, jobs), **bar))
    else:
        outcomes = [_preprocess_one(job) for job in tqdm(jobs, **bar)]
    for outcome in outcomes:
        counts[outcome] += 1
    return counts


def _preprocess_one(job: tuple[Path, Path, float, int]) -> str:
    from ..video import VideoSourceError, open_video

    path, out_dir, fps, resolution = job
    try:
        with open_video(str(path), fps=fps, resolution=resolution) as stream:
            images = [frame.image for frame in stream]
        if not images:
            raise VideoSourceError(f"{path} has no video frames")
    except VideoSourceError as error:
        logger.warning("skipping %s: %s", path, error)
        return "failed"
    frames = torch.from_numpy(np.stack(images))  # (N, R, R, 3) uint8
    metadata = {"fps": str(fps), "resolution": str(resolution), "source": path.name}
    _save_atomic({"frames": frames}, out_dir / f"{path.stem}.safetensors", metadata)
    return "written"


class FrameStore:
    """Reads per-video frames (`frames`, uint8) or features (`features`) from a directory of safetensors."""

    def __init__(self, directory: str | Path, key: str = "frames"):
        self.directory = Path(directory)
        self.key = key
        if not self.directory.is_dir():
            raise UserError(
                f"no such frames directory: {self.directory} (make it with `videollm-online data preprocess`)"
            )

    def path(self, video: str) -> Path:
        return self.directory / f"{video}.safetensors"

    def metadata(self, video: str) -> dict[str, str]:
        with safe_open(self.path(video), framework="pt") as file:
            return file.metadata() or {}

    def load(self, video: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        path = self.path(video)
        if not path.exists():
            raise FileNotFoundError(f"no preprocessed frames for video {video!r}: {path}")
        with safe_open(path, framework="pt") as file:
            if stop is None:
                return file.get_tensor(self.key)[start:]
            return file.get_slice(self.key)[start:stop]

    def load_indices(self, video: str, indices: Sequence[int]) -> torch.Tensor:
        """Frames `indices` of a video (any order), reading only those."""
        with safe_open(self.path(video), framework="pt") as file:
            part = file.get_slice(self.key)
            return torch.stack([part[i : i + 1][0] for i in indices])

    def num_frames(self, video: str) -> int:
        with safe_open(self.path(video), framework="pt") as file:
            return file.get_slice(self.key).get_shape()[0]


def extract_features(
    frames_dir: str | Path,
    out_dir: str | Path,
    model,
    *,
    batch_size: int = 64,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    encoder_name: str | None = None,
) -> dict[str, int]:
    """Run the model's frozen vision encoder + pooling over preprocessed frames: `features` (N, T, Hv) per video,
    in the encoder's dtype, with the encoder's identity in the metadata (`encoder_name`, e.g. the checkpoint, else
    the config's vision source). A frames file that cannot be read is logged and skipped."""
    from safetensors import SafetensorError
    from tqdm import tqdm

    from ..core.model import preprocess_frames

    source = FrameStore(frames_dir, "frames")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = shard(sorted(p.stem for p in source.directory.glob("*.safetensors")), rank, world_size)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    encoder = model.frame_encoder
    dtype = next(encoder.parameters()).dtype
    vision_config = encoder.vision_model.config
    identity = {
        "encoder": str(encoder_name or model.config.vision or "config"),
        "encoder_type": vision_config.model_type,
        "encoder_hidden": str(encoder.hidden_size),
        "encoder_layers": str(getattr(vision_config, "num_hidden_layers", "")),
        "frame_num_tokens": str(model.config.frame_num_tokens),
        "dtype": str(dtype).removeprefix("torch."),
    }
    for video in tqdm(videos, desc=f"features [rank {rank}]", unit="video", disable=not progress):
        target = out_dir / f"{video}.safetensors"
        if target.exists():
            counts["skipped"] += 1
            continue
        try:
            frames = source.load(video)
            metadata = source.metadata(video)
        except (SafetensorError, OSError, KeyError) as error:
            logger.warning("skipping %s: unreadable frames file (%s)", source.path(video), error)
            counts["failed"] += 1
            continue
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(frames), batch_size):
                pixels = preprocess_frames(frames[start : start + batch_size], model.config, model.device, dtype)
                chunks.append(model.encode_frames(pixels).cpu())  # (n, T, Hv)
        _save_atomic({"features": torch.cat(chunks).contiguous()}, target, {**metadata, **identity})
        counts["written"] += 1
    return counts
