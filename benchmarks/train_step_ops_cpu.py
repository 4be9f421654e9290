"""How many operator events one training step of the bundled demo model dispatches, at two batch sizes: if the
count does not grow with the batch, a step is bound by per-op overhead and a larger batch is the cheap speed-up.

    PYTHONPATH=src python benchmarks/train_step_ops_cpu.py --data-root outputs/heldout --frames FRAMES_DIR
        # FRAMES_DIR: `videollm-online data preprocess outputs/heldout/videos --out FRAMES_DIR --preset demo-192`

One forward and backward (the bundled model, LoRA and vision trainable, as the recipe's LM stage) under the torch
profiler (CPU activities); writes benchmarks/results/train_step_ops_cpu.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from videollm_online.core.checkpoint import default_model
from videollm_online.data.frames import FrameStore
from videollm_online.train.dataset import StreamCollator, StreamDataset
from videollm_online.train.trainer import TrainConfig, build_training_model
from videollm_online.utils.files import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("outputs/heldout"))
    parser.add_argument("--frames", type=Path, required=True)
    parser.add_argument("--batches", default="1,2")
    args = parser.parse_args()
    config = TrainConfig(
        data=str(args.data_root / "conversations.jsonl"),
        frames=str(args.frames),
        output_dir="",
        model=default_model(),
        train_vision=True,
    )
    model, template = build_training_model(config)
    dataset = StreamDataset(read_jsonl(config.data), FrameStore(args.frames), template)
    collate = StreamCollator(template)
    counts = {}
    for size in (int(b) for b in args.batches.split(",")):
        batch = collate([dataset[i % len(dataset)] for i in range(size)])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(**batch).loss.backward()
        counts[size] = len(prof.events())
        print(f"batch {size}: {counts[size]} operator events", flush=True)
    out = Path(__file__).parent / "results" / "train_step_ops_cpu.json"
    out.write_text(
        json.dumps({"command": "python benchmarks/train_step_ops_cpu.py", "events_by_batch": counts}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
