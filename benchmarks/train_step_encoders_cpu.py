"""One LM-stage training step (forward and backward, LoRA and the encoder trainable, as the recipe's `train` stage)
on the CPU for each demo encoder, with and without gradient checkpointing: whether an encoder or checkpointing makes
the step slow in itself, apart from anything GPU-specific.

    PYTHONPATH=src python benchmarks/train_step_encoders_cpu.py --data-root WORLD
        # WORLD: written by `videollm-online data synth-world` and preprocessed into WORLD/frames (--preset demo-192)

Writes benchmarks/results/train_step_encoders_cpu.json (seconds of each of --repeats steps on one conversation).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from videollm_online.data.frames import FrameStore
from videollm_online.files import read_jsonl, write_json_atomic
from videollm_online.train.dataset import StreamCollator, StreamDataset
from videollm_online.train.trainer import TrainConfig, build_training_model, enable_gradient_checkpointing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--presets", default="demo-192,demo-convnext")
    parser.add_argument("--conversations", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_step_encoders_cpu.json"))
    args = parser.parse_args()
    results = {"command": "python benchmarks/train_step_encoders_cpu.py --data-root WORLD",
               "machine": platform.machine(), "threads": torch.get_num_threads(), "runs": []}
    for preset in args.presets.split(","):
        for checkpointing in (False, True):
            config = TrainConfig(data=str(args.data_root / "conversations.jsonl"),
                                 frames=str(args.data_root / "frames"), output_dir="", model=preset, train_vision=True)
            model, template = build_training_model(config)
            if checkpointing:
                enable_gradient_checkpointing(model)
            model.train()
            dataset = StreamDataset(read_jsonl(config.data), FrameStore(config.frames), template)
            batch = StreamCollator(template)([dataset[i] for i in range(args.conversations)])
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                model(**batch).loss.backward()
                seconds.append(round(time.perf_counter() - started, 2))
            run = {"preset": preset, "gradient_checkpointing": checkpointing,
                   "frames": int(batch["pixel_values"].shape[0]), "step_seconds": seconds}
            print(run, flush=True)
            results["runs"].append(run)
            write_json_atomic(args.out, results)


if __name__ == "__main__":
    main()
