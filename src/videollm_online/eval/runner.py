"""`videollm-online eval` on a synthetic world: the streaming metrics on its conversations, and event recall and
precision of what the engine says when it narrates each video.

A world directory is what `data synth-world` writes (annotations/, videos/, conversations.jsonl). Each video is
sampled once at the model's fps and resolution (the `narrate` sampler); its frames feed both the teacher-forced
metrics of its conversations and a live `StreamSession` run whose turns are matched against the ground-truth
narrations (within `window` seconds, normalised sentences).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..engine import EngineConfig, StreamSession
from ..errors import UserError
from ..files import read_jsonl
from ..model import LiveModel
from ..text import StreamTemplate
from ..video import open_video
from .metrics import aggregate, evaluate_conversation, event_match


def evaluate_world(
    model: LiveModel, template: StreamTemplate, root: str | Path, *, limit: int | None = None,
    threshold: float | None = None, window: float = 1.0, max_new_tokens: int = 32, progress: bool = True,
) -> dict:
    from tqdm import tqdm

    root = Path(root)
    if not (root / "conversations.jsonl").exists() or not (root / "annotations").is_dir():
        raise UserError(f"{root} is not a synthetic world: write one with `videollm-online data synth-world`")
    rows = read_jsonl(root / "conversations.jsonl")
    videos = sorted({row["video"] for row in rows})[:limit]
    fps = model.config.frame_fps
    threshold = model.config.frame_token_interval_threshold if threshold is None else threshold
    results, matches = [], []
    with torch.inference_mode():
        for video in tqdm(videos, desc="eval", unit="video", disable=not progress):
            with open_video(str(root / "videos" / f"{video}.mp4"), fps=fps,
                            resolution=model.config.frame_resolution) as stream:
                images = [frame.image for frame in stream]
            embeds = torch.cat([model.frames_to_embeds(images[i : i + 32]) for i in range(0, len(images), 32)])
            for row in (r for r in rows if r["video"] == video):
                needed = sum(m.get("num_frames", 0) for m in row["conversation"] if m["role"] == "stream")
                results.append(evaluate_conversation(model, template, row["conversation"], embeds[:needed], fps=fps,
                                                     threshold=threshold))
            session = StreamSession(model, template, EngineConfig(threshold=threshold, max_new_tokens=max_new_tokens))
            said = []
            for index, frame_embeds in enumerate(embeds):
                said += [(e.video_time, e.text) for e in session.push_frame(index / fps, frame_embeds)]
            annotation = json.loads((root / "annotations" / f"{video}.json").read_text())
            matches.append(event_match(said, [(n["time"], n["text"]) for n in annotation["narrations"]],
                                       window=window))
    metrics = aggregate(results).to_dict()
    matched = sum(m.num_matched for m in matches)
    predicted = sum(m.num_predicted for m in matches)
    reference = sum(m.num_reference for m in matches)
    metrics.update({
        "event_recall": matched / reference if reference else 0.0,
        "event_precision": matched / predicted if predicted else 0.0,
        "turns_said": predicted, "narrations": reference, "videos": len(videos), "threshold": threshold,
        "window_s": window,
    })
    return metrics
