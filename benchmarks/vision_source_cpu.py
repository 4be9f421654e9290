"""How fast the vision stage's two frame sources feed it, per CPU core: frames of random episodes rendered on the fly
(`RandomWorldFrames`) against the recorded frames of a preprocessed world (`RecordedWorldFrames`, `train-vision
--world`), both with their targets, at the `demo-192` resolution.

    python benchmarks/vision_source_cpu.py          # writes benchmarks/results/vision_source_cpu.json

The recorded world is written first into a temporary directory (8 videos of world seed 5, the recipe's video shape,
preprocessed at 192 px); each source then yields 256 frames in this process (one core), after one warm-up frame.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch

from videollm_online.apps.cli import main as cli
from videollm_online.data.world import WorldConfig
from videollm_online.train.vision_pretrain import (
    RandomWorldFrames,
    RecordedWorldFrames,
    VisionPretrainConfig,
    recorded_world,
)

FRAMES = 256


def frames_per_s(dataset) -> float:
    frames = iter(dataset)
    next(frames)
    start = time.perf_counter()
    count = sum(1 for _ in islice(frames, FRAMES))
    return count / (time.perf_counter() - start)


def run() -> dict:
    torch.set_num_threads(1)
    world = WorldConfig(width=256, height=256, fps=2, time_grid=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "world"
        shape = ["--size", "256", "--video-fps", "2", "--time-grid", "0.5", "-q"]
        assert cli(["data", "synth-world", "--out", str(out), "--videos", "8", "--seed", "5", *shape]) == 0
        assert (
            cli(["data", "preprocess", str(out / "videos"), "--out", str(out / "frames"), "--preset", "demo-192", "-q"])
            == 0
        )
        config = VisionPretrainConfig(output_dir=tmp, model="demo-192", max_steps=1, world_dir=str(out))
        world_frames = recorded_world(config, 192)
        rendered = frames_per_s(RandomWorldFrames(world, 192, 0, 8))
        recorded = frames_per_s(RecordedWorldFrames(world_frames, world, 0, 8))
    return {
        "rendered_frames_per_s": round(rendered, 1),
        "recorded_frames_per_s": round(recorded, 1),
        "ratio": round(recorded / rendered, 1),
    }


if __name__ == "__main__":
    results = {
        "command": "python benchmarks/vision_source_cpu.py",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average": os.getloadavg()[0],
        },
        "frames": FRAMES,
        **run(),
    }
    path = Path(__file__).parent / "results" / "vision_source_cpu.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2), file=sys.stderr)
