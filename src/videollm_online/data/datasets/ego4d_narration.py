"""Ego4D narration streams, from `all_narrations_redacted.json` (Ego4D v2) as the seed builds them.

Each annotator's pass over a video (`_annotation_uid`) is one conversation: its narrations, cleaned of Ego4D's tags
and kept when at least two words ("C verb") remain, sorted by time, each becoming an assistant turn at the first frame
at or after its time. A narration on the frame of the previous one replaces it; a repeat of the previous text is
dropped. The conversation starts at the first narration's frame: that frame, the instruction, then the first
narration. Videos are split as the seed does: a video in any Ego4D benchmark's val set is val, one in a benchmark's
test set (and not val) is test, every other narrated video is train. The refined stream (`refined_narration_stream_
{split}.json`, narrations rewritten by an LLM into second person) is converted the same way with other instructions.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...utils.errors import UserError
from .common import Converted, ConvertOptions, ceil_frame, make_row, read_json, require_video_frames, with_system_prompt

# The Ego4D benchmarks whose val/test videos are held out of narration training, and the key of their video lists.
BENCHMARK_KEYS = {
    "goalstep": "videos",
    "fho_lta": "clips",
    "nlq": "videos",
    "moments": "videos",
    "av": "videos",
    "fho_oscc-pnr": "clips",
    "fho_sta": "annotations",
    "vq": "videos",
}

# Raw narrations say "C" for the camera wearer and other capitals for other people: the instruction says so.
NARRATION_INSTRUCTIONS = (
    "Narrate the video concisely, in real time. Call the camera wearer 'C' and other people by other capital "
    "letters, such as 'X'.",
)
REFINED_NARRATION_INSTRUCTIONS = (
    "Narrate the video concisely, in real time.",
    "Tell me briefly what I am doing, as it happens.",
    "Describe my view in a few words whenever it changes.",
    "Keep telling me, in short sentences, what you see.",
    "Give a short live commentary of my actions.",
    "Follow what I do and describe each action briefly.",
    "What is going on in front of me? Keep me posted, briefly.",
    "Explain in simple words what is happening, as it happens.",
    "Short real-time narration, please.",
    "Watch with me and say in a few words what I do.",
)

_TAGS = re.compile(r"#(?:c|o|unsure)|@c", re.IGNORECASE)


def clean_text(text: str) -> str:
    """Ego4D narration text as the model reads it: tags (#C, #O, #unsure, @c) and stray '#' removed, surrounding
    spaces, commas and full stops trimmed, one full stop added, the first word capitalised, spaces collapsed."""
    text = _TAGS.sub("", text).replace("#", "")
    text = text.strip(".,\n ") + "."
    words = text.split()
    words[0] = words[0].capitalize()
    return " ".join(words)


# ---------------------------------------------------------------------- splits
def split_video_uids(anno_root: Path, all_uids: Sequence[str], split: str) -> list[str]:
    """The narrated videos of one split. A list saved as `narration_stream_video_uids_{split}.json` in the
    annotation root is used as is; otherwise it is derived from the benchmark files (all of them are needed, or
    val/test videos would leak into train)."""
    saved = anno_root / f"narration_stream_video_uids_{split}.json"
    if saved.exists():
        return [uid for uid in read_json(saved) if uid in set(all_uids)]
    missing = [
        name
        for benchmark in BENCHMARK_KEYS
        for name in (f"{benchmark}_val.json", f"{benchmark}_test_unannotated.json")
        if not (anno_root / name).exists()
    ]
    if missing:
        raise UserError(
            f"the {split} split of the narration stream needs the Ego4D benchmark files in {anno_root}; "
            f"missing: {', '.join(missing)} (download the Ego4D v2 annotations, or put a list of video "
            f"uids in {saved.name})"
        )
    val, test = set(), set()
    for benchmark, key in BENCHMARK_KEYS.items():
        val.update(item["video_uid"] for item in read_json(anno_root / f"{benchmark}_val.json")[key])
        test.update(item["video_uid"] for item in read_json(anno_root / f"{benchmark}_test_unannotated.json")[key])
    test -= val
    if split == "train":
        chosen = [uid for uid in all_uids if uid not in val and uid not in test]
    elif split == "val":
        chosen = [uid for uid in all_uids if uid in val]
    else:
        chosen = [uid for uid in all_uids if uid in test]
    return sorted(chosen)


def narration_passes(video: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """One video of `all_narrations_redacted.json` -> annotation uid -> cleaned narrations `{time, text}` by time."""
    cleaned = []
    for narration in video.get("narrations", []):
        text = clean_text(narration.get("text", ""))
        if len(text.split(" ")) >= 2:  # at least "C verb"
            cleaned.append(
                {"time": float(narration["time"]), "text": text, "annotation": narration.get("_annotation_uid", "")}
            )
    cleaned.sort(key=lambda n: n["time"])
    passes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for narration in cleaned:
        passes[narration.pop("annotation")].append(narration)
    return dict(passes)


# ---------------------------------------------------------------------- conversations
def narration_conversation(
    narrations: Sequence[Mapping[str, Any]], fps: float, num_frames: int, instruction: str
) -> tuple[list[dict[str, Any]], int] | None:
    """(conversation without system prompt, start frame) of one pass of time-sorted narrations, or None when none
    fits. The first frame is shown, then the instruction (not learned), then narrations at their ceiled frames."""
    if not narrations:
        return None
    last_frame = num_frames - 1
    start = ceil_frame(narrations[0]["time"], fps, 0, last_frame)
    conversation: list[dict[str, Any]] = []
    previous, previous_text = start - 1, None
    for narration in narrations:
        if previous >= last_frame:
            break
        text = narration["text"]
        if text == previous_text:
            continue
        frame = ceil_frame(narration["time"], fps, 0, last_frame)
        if frame == previous:  # sorted and ceiled: the later narration of the same frame is the closer one
            conversation[-1].update(content=text, time=narration["time"])
        else:
            conversation += [
                {"role": "stream", "num_frames": frame - previous, "learn": True},
                {"role": "assistant", "content": text, "time": narration["time"], "learn": True},
            ]
        previous, previous_text = frame, text
    if not conversation:
        return None
    # The first stream message is the single start frame: the instruction comes after it and it teaches nothing.
    first = {**conversation[0], "learn": False}
    return [first, {"role": "user", "content": instruction}, *conversation[1:]], start


def _streams(
    kind: str,
    passes_by_video: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    options: ConvertOptions,
    instructions: Sequence[str],
) -> Converted:
    video_frames = require_video_frames(options, kind)
    rng = random.Random(options.seed)
    result = Converted()
    for video in sorted(passes_by_video):
        if video not in video_frames:
            result.skipped["video has no frames (not preprocessed)"] += len(passes_by_video[video]) or 1
            continue
        for annotation_uid in sorted(passes_by_video[video]):
            instruction = rng.choice(instructions)
            built = narration_conversation(
                passes_by_video[video][annotation_uid], options.fps, video_frames[video], instruction
            )
            if built is None:
                result.skipped["no narrations"] += 1
                continue
            conversation, start = built
            result.rows.append(
                make_row(
                    video,
                    kind,
                    with_system_prompt(conversation, options.system_prompt),
                    start,
                    annotation_uid=annotation_uid,
                )
            )
    return result


def load_narration_stream(options: ConvertOptions) -> Converted:
    """`ego4d-narration`: rows of the raw narration stream of one split."""
    if options.split not in ("train", "val", "test"):
        raise UserError(f"ego4d-narration has splits train, val and test, not {options.split!r}")
    path = options.anno_root / "all_narrations_redacted.json"
    data = read_json(path)
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise UserError(f"{path}: expected {{'videos': {{video_uid: {{'narrations': [...]}}}}}}")
    uids = split_video_uids(options.anno_root, sorted(videos), options.split)
    passes = {uid: narration_passes(videos[uid]) for uid in uids}
    return _streams("ego4d-narration", passes, options, NARRATION_INSTRUCTIONS)


def load_refined_narration_stream(options: ConvertOptions) -> Converted:
    """`ego4d-refined-narration`: the LLM-refined narrations of one split, from `refined_narration_stream_{split}.json`
    or a directory `refined_narration_stream_{split}/` of `{video_uid}.json` files (annotation uid -> narrations)."""
    file = options.anno_root / f"refined_narration_stream_{options.split}.json"
    folder = options.anno_root / f"refined_narration_stream_{options.split}"
    if file.exists():
        by_video = read_json(file)
    elif folder.is_dir():
        by_video = {path.stem: read_json(path) for path in sorted(folder.glob("*.json"))}
    else:
        raise UserError(
            f"no refined narrations in {options.anno_root}: expected {file.name} or a folder {folder.name}/"
        )
    passes = {}
    for video, by_annotation in by_video.items():
        if not isinstance(by_annotation, dict):
            raise UserError(f"refined narrations of {video}: expected {{annotation_uid: [{{'time', 'text'}}]}}")
        passes[video] = {
            uid: sorted(
                ({"time": float(n["time"]), "text": n["text"]} for n in narrations if str(n.get("text", "")).strip()),
                key=lambda n: n["time"],
            )
            for uid, narrations in by_annotation.items()
        }
    return _streams("ego4d-refined-narration", passes, options, REFINED_NARRATION_INSTRUCTIONS)
