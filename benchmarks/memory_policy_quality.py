"""What the bounded-memory policy costs in quality: the demo model narrating held-out world videos with its whole
stream in the cache, and with the cache capped (attention sink + most recent tokens, the fast engine's policy).

    python benchmarks/memory_policy_quality.py --data-root outputs/heldout --videos 10 --cache-tokens 256,512

Reported per setting: event recall / precision (the `eval --dataset world` matching), turns said, and the share of
the uncapped run's turns said identically (same frame, same text) under the cap. Results:
benchmarks/results/memory_policy_quality.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from videollm_online.core.checkpoint import load_model
from videollm_online.engine import EngineConfig, open_session
from videollm_online.eval.events import same_event
from videollm_online.eval.metrics import event_match
from videollm_online.utils.files import write_json_atomic
from videollm_online.video import open_video


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("outputs/heldout"))
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--cache-tokens", default="256,512")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_policy_quality.json"))
    args = parser.parse_args()
    model, template, name = load_model(args.model)
    fps = model.config.frame_fps
    config = EngineConfig(max_new_tokens=32)
    videos = sorted(p.stem for p in (args.data_root / "videos").glob("*.mp4"))[: args.videos]
    settings = [None, *[int(n) for n in args.cache_tokens.split(",")]]
    said: dict[int | None, list[list[tuple[float, str]]]] = {s: [] for s in settings}
    references, stream_tokens = [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for video in videos:
            with open_video(
                str(args.data_root / "videos" / f"{video}.mp4"), fps=fps, resolution=model.config.frame_resolution
            ) as stream:
                images = [frame.image for frame in stream]
            embeds = model.frames_to_embeds(images)
            annotation = json.loads((args.data_root / "annotations" / f"{video}.json").read_text())
            references.append([(n["time"], n["text"]) for n in annotation["narrations"]])
            for setting in settings:
                session = open_session(model, template, config, "fast", setting)
                turns = []
                for index, frame in enumerate(embeds):
                    turns += [(e.video_time, e.text.strip()) for e in session.push_frame(index / fps, frame)]
                said[setting].append(turns)
                if setting is None:
                    stream_tokens.append(session.num_tokens)
            print(video, {str(s): len(said[s][-1]) for s in settings}, flush=True)
    results = {
        "command": " ".join(sys.argv),
        "model": name,
        "videos": len(videos),
        "stream_tokens_uncapped_mean": sum(stream_tokens) / len(stream_tokens),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": {},
    }
    for setting in settings:
        matches = [
            event_match(turns, reference, window=1.0, same=same_event)
            for turns, reference in zip(said[setting], references)
        ]
        matched = sum(m.num_matched for m in matches)
        predicted = sum(m.num_predicted for m in matches)
        total = sum(m.num_reference for m in matches)
        uncapped = [set(turns) for turns in said[None]]
        identical = sum(len(set(turns) & base) for turns, base in zip(said[setting], uncapped))
        results["settings"]["uncapped" if setting is None else f"cache_{setting}_tokens"] = {
            "event_recall": round(matched / total, 4) if total else 0.0,
            "event_precision": round(matched / predicted, 4) if predicted else 0.0,
            "turns_said": predicted,
            "same_as_uncapped": round(identical / max(1, sum(len(b) for b in uncapped)), 4),
        }
    write_json_atomic(args.out, results)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
