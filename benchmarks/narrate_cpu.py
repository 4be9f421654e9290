"""Frames/s of `narrate` on a CPU over a 10-minute video at 2 fps, and where the time goes (decode, vision, LLM).

    python benchmarks/narrate_cpu.py                      # tiny and the bundled default model, 10 minutes
    python benchmarks/narrate_cpu.py --minutes 1 --models tiny

It writes a 10-minute H.264 clip once (640x360, 10 fps source) into the cache, then runs the narrate pipeline (the
same code as `videollm-online narrate`) with each model in two scenarios: `silent` (threshold 0: the model never
speaks, pure streaming cost) and `queries` (a question every 30 s, answered with up to 20 tokens). Results go to
benchmarks/results/narrate_cpu.json with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
import transformers

from videollm_online.apps.narrate import narrate_frames
from videollm_online.core.checkpoint import cache_dir, load_model
from videollm_online.engine import EngineConfig
from videollm_online.video import open_video


def synthetic_clip(path: Path, minutes: float, fps: int = 10, size=(640, 360), preset: str | None = None) -> Path:
    """A moving gradient with a bouncing square: cheap to encode, real to decode (`preset`: libx264's, e.g.
    ultrafast for long clips)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": preset} if preset else None)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(minutes * 60 * fps)):
            image = np.stack([(xx + 3 * i) % 256, (yy + i) % 256, np.full_like(xx, (i * 7) % 256)], -1)
            x, y = (37 * i) % (width - 60), (23 * i) % (height - 60)
            image[y : y + 60, x : x + 60] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")))
        container.mux(stream.encode())
    os.replace(tmp, path)
    return path


def run(model_name: str, clip: Path, scenario: str, minutes: float) -> dict:
    model, template, name = load_model(None if model_name == "default" else model_name)
    queries = [(t, "What is happening now?") for t in range(30, int(minutes * 60), 30)] if scenario == "queries" else []
    config = EngineConfig(threshold=0.0, max_new_tokens=20)
    with open_video(str(clip), fps=model.config.frame_fps, resolution=model.config.frame_resolution) as frames:
        started = time.perf_counter()
        events, times = narrate_frames(model, template, frames, queries=queries, config=config)
        wall = time.perf_counter() - started
    summary = times.summary()
    return {
        "model": name,
        "scenario": scenario,
        "wall_s": round(wall, 2),
        "frames_per_second_wall": round(summary["frames"] / wall, 2),
        "turns": len(events),
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["tiny", "default"],
        help="presets, checkpoints, or `default` (the bundled demo model)",
    )
    parser.add_argument("--scenarios", nargs="+", default=["silent", "queries"])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "narrate_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    clip = synthetic_clip(cache_dir() / "bench" / f"clip-{args.minutes:g}min.mp4", args.minutes)
    report = {
        "command": " ".join(["python", "benchmarks/narrate_cpu.py", *sys.argv[1:]]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "video": {"minutes": args.minutes, "source": "640x360 H.264, 10 fps", "sampled_fps": 2},
        "results": [],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for model_name in args.models:
        for scenario in args.scenarios:
            result = run(model_name, clip, scenario, args.minutes)
            print(json.dumps(result), flush=True)
            report["results"].append(result)
            args.output.write_text(json.dumps(report, indent=2) + "\n")  # after each run: a kill keeps the rest
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
