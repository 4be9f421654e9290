"""Vision towers side by side on a CPU: each preset's encoder trains with the vision stage's heads and loss on the same
fixed frames, the same steps and batches, and is scored on held-out frames, head by head (`train-vision`'s report).

    python benchmarks/vision_heads_cpu.py                                   # demo-convnext and demo-resnet
    python benchmarks/vision_heads_cpu.py --presets demo-192,demo-resnet --steps 600

The training frames are rendered once from world seed 7 (`--train-frames` spread over 150 episodes), the held-out
ones from the evaluation world's first 50 episodes (seed 2), through the video path (`WorldFrames`). A few hundred
steps are the start of a vision stage, not its end: the figures compare how fast towers learn, not where they end
(the GPU runs: results/vision_encoders_h100.json, results/vision_resnet_h100.json). Writes
benchmarks/results/vision_heads_cpu.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from videollm_online.core.checkpoint import build_model
from videollm_online.core.config import LiveConfig
from videollm_online.core.model import preprocess_frames
from videollm_online.train.vision_pretrain import (
    VisionPretrainConfig,
    VisionPretrainModel,
    WorldFrames,
    _optimizer,
    evaluate,
    heldout_items,
    pretrain_loss,
)
from videollm_online.utils.files import write_json_atomic

HEADS = ("colour", "shape", "size", "count", "pair", "spot", "event", "event_recall", "cell")


def render(world, seed: int, episodes: int, frames: int, resolution: int) -> dict[str, torch.Tensor]:
    dataset = WorldFrames(heldout_items(world, seed, episodes, frames), world, resolution)
    samples = [dataset[i] for i in range(len(dataset))]
    return {key: torch.stack([sample[key] for sample in samples]) for key in ("pixels", "cells", "frame")}


def batches(data: dict[str, torch.Tensor], size: int = 128) -> list[dict[str, torch.Tensor]]:
    return [
        {key: value[start : start + size] for key, value in data.items()}
        for start in range(0, len(data["pixels"]), size)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="demo-convnext,demo-resnet")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--train-frames", type=int, default=3000)
    parser.add_argument("--heldout-frames", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vision_heads_cpu.json"))
    args = parser.parse_args()
    results = {
        "command": "python " + " ".join(sys.argv),
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "runs": {},
    }
    vision = VisionPretrainConfig(
        output_dir="", max_steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate
    )
    world, data = vision.world_config(), {}
    warmup = max(1, args.steps // 20)

    def learning_rate(step: int) -> float:  # linear warm-up, then linear decay to 0 over the steps
        return min(1.0, (step + 1) / warmup) * max(0.0, 1 - step / args.steps)

    for preset in args.presets.split(","):
        torch.manual_seed(0)
        live, _ = build_model(LiveConfig.from_name(preset))
        resolution = live.config.frame_resolution
        if resolution not in data:
            print(f"rendering {args.train_frames} + {args.heldout_frames} frames at {resolution} px", flush=True)
            data[resolution] = (
                render(world, 7, 150, args.train_frames, resolution),
                batches(render(world, vision.heldout_seed, 50, args.heldout_frames, resolution)),
            )
        train, heldout = data[resolution]
        model = VisionPretrainModel(live.frame_encoder)
        model.frame_encoder.requires_grad_(True)
        model.train()
        optimizer = _optimizer(model, vision)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
        generator = torch.Generator().manual_seed(0)  # the same batches for every preset
        run = {"parameters": sum(p.numel() for p in live.frame_encoder.parameters()), "heldout": []}
        started = time.perf_counter()
        for step in range(1, args.steps + 1):
            batch = torch.randint(0, len(train["pixels"]), (args.batch_size,), generator=generator)
            loss, _ = pretrain_loss(
                model,
                preprocess_frames(train["pixels"][batch], live.config),
                train["cells"][batch],
                train["frame"][batch],
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % 100 == 0 or step == args.steps:
                accuracy = evaluate(model, heldout, live.config, torch.device("cpu"), autocast=False)
                entry = {
                    "step": step,
                    "loss": round(loss.item(), 4),
                    **{name: accuracy[name]["accuracy"] for name in HEADS if name in accuracy},
                }
                print(preset, entry, flush=True)
                run["heldout"].append(entry)
        run["train_seconds"] = round(time.perf_counter() - started, 1)
        results["runs"][preset] = run
        write_json_atomic(args.out, results)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
