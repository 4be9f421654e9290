"""Ego4D GoalStep live chat: the LLM-written dialogues (`data synthesize`, or the seed's released
`goalstep_livechat_trainval_filtered_21k.json`) as stream conversations, by the seed's rules.

A dialogue is `{"video_uid", "conversation": [{"role", "content", "time"}]}` and must open with a user turn inside
the video. Up to 20 frames (seeded) are shown before that question; a user turn then follows the last frame at or
before its time, an assistant turn the first frame at or after it. The dialogue stops at the first turn past the
video's end or earlier than the turn before; an assistant turn at the very time of the previous one answers a user
directly or replaces an assistant's text, a user turn at that time ends the dialogue, and an assistant turn that
lands on the previous turn's frame is dropped.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...utils.errors import UserError
from .common import (
    Converted,
    ConvertOptions,
    ceil_frame,
    floor_frame,
    make_row,
    read_json,
    read_json_or_jsonl,
    require_video_frames,
    with_system_prompt,
)

RELEASED_FILE = "goalstep_livechat_trainval_filtered_21k.json"
MAX_WAITING_FRAMES = 20


def dialogue_conversation(
    turns: Sequence[Mapping[str, Any]], fps: float, num_frames: int, rng: random.Random
) -> tuple[list[dict[str, Any]], int] | None:
    """(conversation without system prompt, start frame) of one dialogue, or None when it does not open with a user
    turn inside the video."""
    last_frame = num_frames - 1
    duration = last_frame / fps
    first = turns[0]
    if not (first.get("role") == "user" and 0 < float(first["time"]) <= duration and first.get("content")):
        return None
    frame = floor_frame(float(first["time"]), fps, 0, last_frame)
    waiting = rng.randint(0, min(MAX_WAITING_FRAMES, frame))
    conversation: list[dict[str, Any]] = []
    if waiting:
        conversation.append({"role": "stream", "num_frames": waiting, "learn": waiting - 1})
    conversation.append({"role": "user", "content": first["content"], "time": float(first["time"])})
    start = frame - waiting + 1
    previous_time, previous_frame = float(first["time"]), frame
    for turn in turns[1:]:
        role, content, time = turn["role"], turn["content"], float(turn["time"])
        if time > duration or time < previous_time:
            break
        if time == previous_time:
            if role == "user":
                break
            if conversation[-1]["role"] == "user":
                conversation.append({"role": "assistant", "content": content, "time": time, "learn": True})
            else:
                conversation[-1].update(content=content)
            continue
        if role == "user":
            frame = floor_frame(time, fps, previous_frame, last_frame)
            if frame > previous_frame:
                conversation.append({"role": "stream", "num_frames": frame - previous_frame, "learn": True})
            conversation.append({"role": "user", "content": content, "time": time})
        else:
            frame = ceil_frame(time, fps, previous_frame, last_frame)
            if frame == previous_frame:
                continue  # nothing new seen since the previous turn: dropped, as the seed does
            conversation += [
                {"role": "stream", "num_frames": frame - previous_frame, "learn": True},
                {"role": "assistant", "content": content, "time": time, "learn": True},
            ]
        previous_time, previous_frame = time, frame
    return conversation, start


def _dialogue_files(anno_root: Path) -> list[Path]:
    if anno_root.is_file():
        return [anno_root]
    if (anno_root / RELEASED_FILE).exists():
        return [anno_root / RELEASED_FILE]
    if (anno_root / "livechat").is_dir():  # the seed's generator writes one JSON per dialogue there
        return sorted((anno_root / "livechat").glob("*.json"))
    found = sorted(anno_root.glob("*.jsonl"))
    if found:
        return found
    raise UserError(
        f"no GoalStep dialogues in {anno_root}: expected {RELEASED_FILE}, a livechat/ folder of JSON "
        "dialogues, JSONL written by `videollm-online data synthesize`, or pass the file itself"
    )


def load_dialogues(path: Path) -> list[dict[str, Any]]:
    data = read_json(path) if path.suffix == ".json" else read_json_or_jsonl(path)
    return [data] if isinstance(data, dict) else list(data)


def load_goalstep_livechat(options: ConvertOptions) -> Converted:
    """`ego4d-goalstep-livechat`: rows of the live-chat dialogues (all of them: the seed trains on train + val)."""
    video_frames = require_video_frames(options, "ego4d-goalstep-livechat")
    rng = random.Random(options.seed)
    result = Converted()
    for path in _dialogue_files(options.anno_root):
        for index, dialogue in enumerate(load_dialogues(path)):
            video = dialogue.get("video_uid") or dialogue.get("video")
            turns = dialogue.get("conversation")
            if not isinstance(turns, list) or not video:
                raise UserError(f"{path}: dialogue {index} needs 'video_uid' and a 'conversation' list")
            if not turns:
                result.skipped["empty dialogue"] += 1
                continue
            if video not in video_frames:
                result.skipped["video has no frames (not preprocessed)"] += 1
                continue
            built = dialogue_conversation(turns, options.fps, video_frames[video], rng)
            if built is None:
                result.skipped["does not open with a user turn inside the video"] += 1
                continue
            conversation, start = built
            result.rows.append(
                make_row(
                    video, "ego4d-goalstep-livechat", with_system_prompt(conversation, options.system_prompt), start
                )
            )
    return result
