"""What every dataset loader shares: its options, its result (rows plus skip counts), the seed's time-to-frame rules,
and how many frames each video has.

A row is what training reads (`videollm_online.train.dataset`): `{"video", "kind", "conversation", "start_frame",
"end_frame"}`, where the conversation's stream messages consume the frames `start_frame .. end_frame - 1` of the
video, in order. Times are snapped to frames in integer arithmetic: frame k shows time k / fps, and a video of N
frames ends at (N - 1) / fps, as the seed's `duration` does.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...utils.errors import UserError
from ..streaming import DEFAULT_SYSTEM_PROMPT, num_stream_frames

# Float times such as 0.7 * 10 = 7.000000000000001 must not ceil to the next frame.
_EPS = 1e-6


@dataclass
class ConvertOptions:
    """Options every loader accepts; a loader ignores those that do not apply to it."""

    anno_root: Path
    """Directory holding the dataset's annotation files."""
    split: str = "train"
    """The split to convert: train, val or test."""
    fps: float = 2.0
    """Frame rate of the preprocessed frames the conversations index."""
    seed: int = 0
    """Seeds every random choice (instructions, waiting frames), so a conversion is reproducible."""
    video_frames: Mapping[str, int] | None = None
    """Frames available per video id at `fps`; videos missing here are skipped. None: the loader needs none."""
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    """The system message of every conversation (None: none)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Loader-specific options (e.g. a benchmark name)."""

    def __post_init__(self) -> None:
        from ...utils.checks import check_fps

        self.anno_root = Path(self.anno_root)
        check_fps("fps", self.fps)
        if self.split not in ("train", "val", "test", "trainval"):
            raise ValueError(f"unknown split {self.split!r}; valid splits: train, val, test, trainval")


@dataclass
class Converted:
    """Rows of one conversion and, by reason, the annotations that gave no row."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


Loader = Callable[[ConvertOptions], Converted]


# ---------------------------------------------------------------------- time -> frame
def ceil_frame(time: float, fps: float, low: int, high: int) -> int:
    """The first frame at or after `time`, clamped to [low, high] (the seed's ceil_time_by_fps, in frames)."""
    return min(max(math.ceil(time * fps - _EPS), low), high)


def floor_frame(time: float, fps: float, low: int, high: int) -> int:
    """The last frame at or before `time`, clamped to [low, high] (the seed's floor_time_by_fps, in frames)."""
    return min(max(math.floor(time * fps + _EPS), low), high)


def with_system_prompt(conversation: list[dict[str, Any]], system_prompt: str | None) -> list[dict[str, Any]]:
    """Prepend the system prompt, and make a stream that a user turn follows learn silence on all its frames but the
    last. Why: the seed learns `]\\n` there too, which teaches the model to speak at a frame where only the user
    does; the project's format (`data.streaming`) never learns to speak before a user turn."""
    for i, message in enumerate(conversation[:-1]):
        if message["role"] == "stream" and conversation[i + 1]["role"] == "user":
            learn = message.get("learn", False)
            limit = message["num_frames"] - 1
            message["learn"] = limit if learn is True else min(int(learn), limit)
    return ([{"role": "system", "content": system_prompt}] if system_prompt is not None else []) + conversation


def stream_frames(conversation: list[dict[str, Any]]) -> int:
    return sum(m["num_frames"] for m in conversation if m["role"] == "stream")


def make_row(
    video: str, kind: str, conversation: list[dict[str, Any]], start_frame: int, **extra: Any
) -> dict[str, Any]:
    return {
        "video": video,
        "kind": kind,
        "conversation": conversation,
        "start_frame": start_frame,
        "end_frame": start_frame + stream_frames(conversation),
        **extra,
    }


# ---------------------------------------------------------------------- files
def read_json(path: Path) -> Any:
    if not path.exists():
        raise UserError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except IsADirectoryError as error:
        raise UserError(f"{path} is a directory, not a JSON file") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from error


def read_json_or_jsonl(path: Path) -> list[Any]:
    """A JSON list, or JSON lines, as a list."""
    if path.suffix == ".jsonl":
        from ...utils.files import read_jsonl

        return read_jsonl(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path} must hold a JSON list")
    return data


def require_video_frames(options: ConvertOptions, dataset: str) -> Mapping[str, int]:
    if options.video_frames is None:
        raise UserError(
            f"{dataset} needs each video's length: pass --frames DIR (preprocessed frames or features) "
            f"or --video-metadata FILE (Ego4D's ego4d.json, or a JSON map of video id to seconds)"
        )
    return options.video_frames


# ---------------------------------------------------------------------- video lengths
def frames_from_store(directory: str | Path) -> dict[str, int]:
    """Frames per video of a `data preprocess` / `data features` directory (read from the file headers only)."""
    from safetensors import safe_open

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"no such frames directory: {directory}")
    counts = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(path, framework="pt") as file:
            key = "frames" if "frames" in file.keys() else "features"
            counts[path.stem] = file.get_slice(key).get_shape()[0]
    return counts


def frames_from_metadata(path: str | Path, fps: float) -> dict[str, int]:
    """Frames per video at `fps` from durations in seconds: Ego4D's `ego4d.json` (`videos[].duration_sec`) or a JSON
    map `{video_id: seconds}`. A video of D seconds gives the frames the sampler takes from it: times below D."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        durations = {
            v["video_uid"]: float(v["duration_sec"])
            for v in data["videos"]
            if "video_uid" in v and v.get("duration_sec")
        }
    elif isinstance(data, dict) and all(isinstance(v, (int, float)) for v in data.values()):
        durations = {str(k): float(v) for k, v in data.items()}
    else:
        raise UserError(
            f"{path}: expected Ego4D metadata ({{'videos': [{{'video_uid', 'duration_sec'}}]}}) or a "
            "JSON map of video id to seconds"
        )
    return {video: num_stream_frames(seconds, fps) for video, seconds in durations.items() if seconds > 0}
