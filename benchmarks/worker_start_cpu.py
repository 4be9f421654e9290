"""How long `train-vision --world`'s spawned data workers take to start, with the dataset as it is (annotation file
names) and with the annotations themselves pickled into it (as it was until 2026-12-03).

A spawned worker's start blocks the parent until the worker has imported torch and read its pickled copy of the
dataset, unless the copy fits in the pipe's buffer: a large copy makes the workers start one after another.

    videollm-online data synth-world --out w100 --videos 100 --seed 1 --size 256 --video-fps 2 --time-grid 0.5
    videollm-online data preprocess w100/videos --out w100/frames --preset demo-resnet
    python benchmarks/worker_start_cpu.py --world w100 [--workers 3] [--output results/worker_start_cpu.json]
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import sys
import time

import torch
from torch.utils.data import DataLoader

from videollm_online.train.vision_pretrain import RecordedWorldFrames, VisionPretrainConfig, recorded_world
from videollm_online.utils.files import report_json


def start(dataset: RecordedWorldFrames, workers: int) -> dict[str, float]:
    """Seconds until the workers are started (the parent free again) and until the first batch."""
    began = time.monotonic()
    batches = iter(DataLoader(dataset, batch_size=64, num_workers=workers, multiprocessing_context="spawn"))
    started = time.monotonic()
    next(batches)
    first = time.monotonic()
    del batches
    return {"workers_started_s": round(started - began, 2), "first_batch_s": round(first - began, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True, help="a world preprocessed at 192 px (the demo presets')")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    config = VisionPretrainConfig(output_dir="unused", world_dir=args.world, video_size=256, max_steps=1)
    videos = recorded_world(config, 192)
    names = RecordedWorldFrames(videos, config.world_config(), 0, 8)
    annotated = RecordedWorldFrames(videos, config.world_config(), 0, 8)
    annotated.annotations = videos.annotations()  # pickled with the dataset, as before; unused by the workers
    runs: dict[str, list[dict[str, float]]] = {"file names": [], "annotations": []}
    for _ in range(args.rounds):  # alternated, so that the machine's load falls on both alike
        runs["file names"].append(start(names, args.workers))
        runs["annotations"].append(start(annotated, args.workers))
    result = {
        "command": "python benchmarks/worker_start_cpu.py --world " + args.world + f" --workers {args.workers}",
        "machine": {"cpu": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__},
        "videos": len(videos.files),
        "workers": args.workers,
        "pickled_kb": {
            "file names": round(len(pickle.dumps(names)) / 1e3, 1),
            "annotations": round(len(pickle.dumps(annotated)) / 1e3, 1),
        },
        "runs": runs,
    }
    report_json(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
