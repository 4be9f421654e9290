"""LM-stage training steps (forward and backward, LoRA and the encoder trainable, as the recipe's `train` stage) for
each demo encoder, with and without gradient checkpointing: whether an encoder or checkpointing makes a step slow.

    PYTHONPATH=src python benchmarks/train_step_encoders.py --data-root WORLD                 # a CPU, 1 conversation
    PYTHONPATH=src python benchmarks/train_step_encoders.py --data-root WORLD --device cuda --conversations 16 \\
        --also-unchunked                                                                   # a GPU, bf16 autocast
        # WORLD: written by `videollm-online data synth-world` and preprocessed into WORLD/frames (--preset demo-192)

Every step takes the next `--conversations` conversations, so the number of frames differs from step to step as in
training. `--also-unchunked` repeats each run with the encoder taking all frames in one call (no fixed-size chunks,
see `LiveModel.encode_frames`), to show what the chunks save where each new input shape is costly (GPU convolution
libraries). Writes benchmarks/results/train_step_encoders_<device>.json (seconds of each step; the first is warm-up).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

import videollm_online.core.model as model_module
from videollm_online.data.frames import FrameStore
from videollm_online.train.dataset import StreamCollator, StreamDataset
from videollm_online.train.trainer import TrainConfig, build_training_model, enable_gradient_checkpointing
from videollm_online.utils.files import read_jsonl, write_json_atomic


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--presets", default="demo-192,demo-convnext")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--conversations", type=int, default=1, help="conversations a step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--also-unchunked", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    out = args.out or Path(f"benchmarks/results/train_step_encoders_{device.type}.json")
    results = {
        "command": "python " + " ".join(sys.argv),
        "machine": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "runs": [],
    }
    chunk = model_module.ENCODER_CHUNK
    for preset in args.presets.split(","):
        for checkpointing in (False, True):
            for chunked in (True, False) if args.also_unchunked else (True,):
                model_module.ENCODER_CHUNK = chunk if chunked else 1 << 30
                config = TrainConfig(
                    data=str(args.data_root / "conversations.jsonl"),
                    frames=str(args.data_root / "frames"),
                    output_dir="",
                    model=preset,
                    train_vision=True,
                )
                model, template = build_training_model(config)
                if checkpointing:
                    enable_gradient_checkpointing(model)
                model.to(device).train()
                dataset = StreamDataset(read_jsonl(config.data), FrameStore(config.frames), template)
                collate = StreamCollator(template)
                seconds, frames = [], []
                for step in range(args.steps):
                    first = step * args.conversations
                    batch = collate([dataset[(first + i) % len(dataset)] for i in range(args.conversations)])
                    batch = {name: value.to(device) for name, value in batch.items()}
                    sync(device)
                    started = time.perf_counter()
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                        loss = model(**batch).loss
                    loss.backward()
                    sync(device)
                    seconds.append(round(time.perf_counter() - started, 3))
                    frames.append(int(batch["pixel_values"].shape[0]))
                run = {
                    "preset": preset,
                    "gradient_checkpointing": checkpointing,
                    "encoder_chunks": chunked,
                    "frames": frames,
                    "step_seconds": seconds,
                }
                print(run, flush=True)
                results["runs"].append(run)
                write_json_atomic(out, results)
                del model
    model_module.ENCODER_CHUNK = chunk


if __name__ == "__main__":
    main()
