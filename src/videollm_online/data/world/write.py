"""`write_world`: a resumable dataset of rendered episodes and their annotations on disk, and `load_world`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...utils.files import write_json_atomic
from .config import FORMAT, WorldConfig, num_frames
from .generate import _check_seed, generate_episode
from .render import render_episode


@dataclass
class WorldWriteResult:
    """What `write_world` did."""

    ids: list[str]
    written: list[str]
    skipped: list[str]


def episode_seed(seed: int, index: int) -> int:
    """The seed of video `index` of a world written with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_world(
    out_dir: str | os.PathLike,
    num_videos: int,
    seed: int = 0,
    config: WorldConfig | None = None,
    progress: bool = True,
    workers: int = 1,
) -> WorldWriteResult:
    """Write `num_videos` episodes under `out_dir`, resumably.

    Layout: `index.json` = {"format", "seed", "config", "videos": [id, ...]}; per video `videos/{id}.mp4` and
    `annotations/{id}.json` (the episode's annotation plus "id" and "video": {"path", "fps", "width", "height",
    "num_frames"}). Both files are written to a temporary name and renamed; the annotation is written last, so a
    video counts as done when its annotation exists, and done videos are skipped. Re-running with a larger
    `num_videos` extends the world; a different seed or config in the same directory is refused. `workers` > 1
    renders videos in that many processes.
    """
    _check_seed(seed)
    if not isinstance(num_videos, int) or num_videos < 0:
        raise ValueError(f"num_videos must be an int >= 0, got {num_videos!r}")
    config = config or WorldConfig()
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    meta = {"format": FORMAT, "seed": int(seed), "config": config.to_dict()}
    index_path = out / "index.json"
    ids = [f"{i:06d}" for i in range(num_videos)]
    if index_path.exists():
        old = json.loads(index_path.read_text())
        if {k: old.get(k) for k in meta} != meta:
            raise ValueError(
                f"{out} holds a world written with another format, seed or config (format "
                f"{old.get('format')!r}, seed {old.get('seed')!r}); use another directory"
            )
        ids = old["videos"] if len(old["videos"]) > len(ids) else ids
    write_json_atomic(index_path, {**meta, "videos": ids})
    from tqdm import tqdm

    result = WorldWriteResult(ids[:num_videos], [], [])
    todo = []
    for i in range(num_videos):
        vid = ids[i]
        if (out / "annotations" / f"{vid}.json").exists() and (out / "videos" / f"{vid}.mp4").exists():
            result.skipped.append(vid)
        else:
            todo.append((str(out), i, vid, int(seed), config))
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            done = pool.imap_unordered(_write_video, todo)
            result.written += list(
                tqdm(done, total=len(todo), desc="synthetic videos", unit="video", disable=not progress)
            )
    else:
        result.written += [
            _write_video(job) for job in tqdm(todo, desc="synthetic videos", unit="video", disable=not progress)
        ]
    result.written.sort()
    return result


def _write_video(job: tuple[str, int, str, int, WorldConfig]) -> str:
    """Render one video and then its annotation (the annotation marks it done)."""
    out_dir, i, vid, seed, config = job
    out = Path(out_dir)
    video_path, annotation_path = out / "videos" / f"{vid}.mp4", out / "annotations" / f"{vid}.json"
    episode = generate_episode(episode_seed(seed, i), config)
    render_episode(episode, video_path, config)
    annotation = episode.to_annotation()
    video = {
        "path": f"videos/{vid}.mp4",
        "fps": config.fps,
        "width": config.width,
        "height": config.height,
        "num_frames": num_frames(episode.duration, config.fps),
    }
    write_json_atomic(annotation_path, {"format": FORMAT, "id": vid, "video": video, **annotation})
    return vid


def load_world(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The annotations of the finished videos of a world written by `write_world`, in index order."""
    out = Path(out_dir)
    index = json.loads((out / "index.json").read_text())
    paths = [out / "annotations" / f"{vid}.json" for vid in index["videos"]]
    return [json.loads(p.read_text()) for p in paths if p.exists() and (out / "videos" / f"{p.stem}.mp4").exists()]
