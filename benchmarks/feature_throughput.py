"""Feature-extraction throughput (frames/s): the vision encoder + the project's pooling (CLS + 3x3), from uint8
frames already on the device (normalisation included), at batch sizes 1, 2, 4, ..., 256.

    python benchmarks/feature_throughput.py --device cpu     # the bundled demo encoder (4-layer SigLIP, 96 px)
    PYTHONPATH=src python benchmarks/feature_throughput.py --device cuda   # + SigLIP-L/16-384, bf16

Encoders: `siglip-l-384` has SigLIP-L/16-384's shape (hidden 1024, 24 layers, 16 heads, MLP 4096, 384 px, patch 16)
with random weights built from its config, so nothing is downloaded (speed does not depend on the weights);
`demo` is the bundled demo model's trained vision tower. On CUDA both run in bf16 with SDPA attention; on the CPU the
demo encoder runs in float32 (SigLIP-L is left out there unless `--encoders` names it). Needs only torch and
transformers (no PyAV). Results go to benchmarks/results/feature_throughput_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # runs from a checkout without installing

from videollm_online.core.config import LiveConfig  # noqa: E402
from videollm_online.core.model import FrameEncoder, preprocess_frames  # noqa: E402

SIGLIP_L_384 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "image_size": 384,
    "patch_size": 16,
}
DEMO_VISION_DIR = Path(__file__).resolve().parents[1] / "src" / "videollm_online" / "assets" / "demo-model" / "vision"


def build_encoder(name: str, device: str, dtype: torch.dtype) -> tuple[FrameEncoder, LiveConfig]:
    from transformers import AutoConfig, SiglipVisionModel

    if name == "siglip-l-384":
        vision_config = AutoConfig.for_model(**SIGLIP_L_384, attn_implementation="sdpa")
        with torch.device(device):
            vision = SiglipVisionModel(vision_config).to(dtype)
        config = LiveConfig.from_name("8b-v1plus")  # frames 384 px, CLS + 3x3 pooled: 10 tokens
    elif name == "demo":
        vision = SiglipVisionModel.from_pretrained(DEMO_VISION_DIR, dtype=dtype, attn_implementation="sdpa").to(device)
        config = LiveConfig.load(DEMO_VISION_DIR.parent)
    else:
        raise SystemExit(f"unknown encoder {name!r}; valid: siglip-l-384, demo")
    return FrameEncoder(vision.eval(), config), config


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(
    encoder: FrameEncoder,
    config: LiveConfig,
    batch: int,
    device: str,
    dtype: torch.dtype,
    min_seconds: float,
    min_iters: int,
) -> dict:
    size = config.frame_resolution
    frames = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)  # (B, R, R, 3)

    def step() -> torch.Tensor:
        return encoder(preprocess_frames(frames, config, device, dtype))  # (B, T, Hv)

    with torch.inference_mode():
        features = step()  # warm-up: kernels, allocator
        step()
        sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        iters, start = 0, time.perf_counter()
        while iters < min_iters or time.perf_counter() - start < min_seconds:
            step()
            iters += 1
        sync(device)
        seconds = time.perf_counter() - start
    result = {
        "batch_size": batch,
        "iterations": iters,
        "seconds": round(seconds, 4),
        "frames_per_second": round(batch * iters / seconds, 2),
        "ms_per_batch": round(1000 * seconds / iters, 3),
        "features_shape": list(features.shape),
    }
    if device.startswith("cuda"):
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--encoders", help="comma-separated: siglip-l-384, demo (default: both on cuda, demo on cpu)")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--min-seconds", type=float, default=None, help="time per batch size (default: 2 cuda, 1 cpu)")
    parser.add_argument("--min-iters", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    names = (
        args.encoders.split(",") if args.encoders else (["siglip-l-384", "demo"] if args.device == "cuda" else ["demo"])
    )
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    min_seconds = args.min_seconds if args.min_seconds is not None else (2.0 if args.device == "cuda" else 1.0)
    batches = [2**k for k in range(args.max_batch.bit_length()) if 2**k <= args.max_batch]
    output = args.output or Path(__file__).resolve().parent / "results" / f"feature_throughput_{args.device}.json"
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }  # other work skews CPU runs
    if args.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name()
    results = {
        "command": " ".join(["python", *sys.argv]),
        "device": args.device,
        "dtype": str(dtype),
        "machine": machine,
        "encoders": {},
    }
    for name in names:
        encoder, config = build_encoder(name, args.device, dtype)
        vision = encoder.vision_model.config
        runs = []
        for batch in batches:
            try:
                run = measure(encoder, config, batch, args.device, dtype, min_seconds, args.min_iters)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                run = {"batch_size": batch, "error": "out of memory"}
            runs.append(run)
            print(f"{name:>13} batch {batch:>3}: {run.get('frames_per_second', run.get('error'))} frames/s", flush=True)
        best = max((r for r in runs if "frames_per_second" in r), key=lambda r: r["frames_per_second"])
        results["encoders"][name] = {
            "vision": {
                "hidden": vision.hidden_size,
                "layers": vision.num_hidden_layers,
                "heads": vision.num_attention_heads,
                "image_size": vision.image_size,
                "patch_size": vision.patch_size,
            },
            "frame_num_tokens": config.frame_num_tokens,
            "runs": runs,
            "best": {"batch_size": best["batch_size"], "frames_per_second": best["frames_per_second"]},
        }
        del encoder
        if args.device == "cuda":
            torch.cuda.empty_cache()
    machine["load_average_at_end"] = os.getloadavg()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, output)
    print(f"results in {output}")


if __name__ == "__main__":
    main()
