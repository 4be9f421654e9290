"""The vision encoder in the model's dtype (bf16 on a GPU) against `--vision-fp8` (FP8 GEMMs in the encoder layers),
same run: frames/s of the tower + connector replayed as a CUDA graph on its own stream (`FrameEncoderRunner`, what
`narrate` and the server run) at several batch sizes, and how far the FP8 frame embeddings are from the others.

    python benchmarks/vision_fp8.py                 # a GPU (compute capability 8.9+): SigLIP-L/16-384 sizes
    python benchmarks/vision_fp8.py --small         # a CPU: a small SigLIP, torch's CPU FP8 GEMM (no speed-up)

    python benchmarks/vision_fp8.py --small --tower DIR --video clip.mp4   # a trained tower on real frames

By default the weights are random (HF's init at SigLIP-L/16-384's sizes) and so are the pixels: the speed is what a
real checkpoint gets, the error only indicative (trained towers have larger outlier activations than random ones).
`--tower` loads a trained SigLIP / CLIP tower from a Hugging Face directory and `--video` encodes a video's frames
(decoded at 2 fps at the tower's image size) instead. Results: benchmarks/results/vision_fp8_<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

from videollm_online.core.checkpoint import build_model
from videollm_online.core.config import LiveConfig
from videollm_online.core.model import preprocess_frames
from videollm_online.engine.vision import FrameEncoderRunner
from videollm_online.engine.vision_fp8 import quantize_vision_tower
from videollm_online.utils.files import write_json_atomic
from videollm_online.video import open_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stream_fps import SIGLIP_L_384, SMALL_VISION  # noqa: E402  the shapes the engine's benchmarks share

LLM = {  # only the connector's output width matters here: Llama-3-8B's 4096
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 4096,
    "intermediate_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def frames_per_second(runner: FrameEncoderRunner, pixels: torch.Tensor, seconds: float) -> dict:
    """Encode the batch over and over for about `seconds` (after a capture and a warm-up replay)."""
    device = pixels.device
    for _ in range(3):
        runner.encode(pixels)
    sync(device)
    iterations, started = 0, time.perf_counter()
    while True:
        runner.encode(pixels)
        iterations += 1
        if iterations % 8 == 0:
            sync(device)
            if time.perf_counter() - started >= seconds:
                break
    elapsed = time.perf_counter() - started
    return {
        "iterations": iterations,
        "ms_per_batch": round(1000 * elapsed / iterations, 3),
        "frames_per_s": round(pixels.shape[0] * iterations / elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a small SigLIP on the CPU (checks the path runs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,16,32,64", help="frames per encode, comma-separated")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per batch size and format")
    parser.add_argument("--tower", type=Path, help="a trained vision tower (Hugging Face directory) instead")
    parser.add_argument("--video", type=Path, help="encode this video's frames instead of random pixels")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.tower:
        from transformers import AutoConfig

        tower = AutoConfig.from_pretrained(args.tower)
        vision = getattr(tower, "vision_config", None) or tower
        vision = {key: getattr(vision, key) for key in ("hidden_size", "num_hidden_layers", "image_size", "patch_size")}
        config = LiveConfig(llm_config=LLM, vision=str(args.tower), frame_resolution=vision["image_size"])
    else:
        vision = SMALL_VISION if args.small else SIGLIP_L_384
        config = LiveConfig(llm_config=LLM, vision_config=vision, frame_resolution=vision["image_size"])
    with torch.device(device):
        model, _ = build_model(config, dtype=dtype, device=device)
    model.eval()
    fp8_model = copy.deepcopy(model)
    layers = quantize_vision_tower(fp8_model, check_device=device.type == "cuda")
    results: dict = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tower": f"{args.tower or 'random SigLIP'}, hidden {vision['hidden_size']}, {vision['num_hidden_layers']} "
        f"layers, {vision['image_size']} px / {vision['patch_size']}",
        "pixels": str(args.video) if args.video else "random",
        "fp8_layers": layers,
        "runs": [],
    }
    runners = {"model_dtype": FrameEncoderRunner(model), "fp8": FrameEncoderRunner(fp8_model)}
    generator = torch.Generator(device=device).manual_seed(0)
    video_pixels = None
    if args.video:
        with open_video(str(args.video), fps=2.0, resolution=config.frame_resolution) as stream:
            video_pixels = preprocess_frames([frame.image for frame in stream], config, device=device, dtype=dtype)
        results["video_frames"] = len(video_pixels)
    for batch in [int(n) for n in args.batches.split(",")]:
        if video_pixels is not None:  # the video's frames, repeated where a batch wants more
            pixels = video_pixels[torch.arange(batch) % len(video_pixels)]
        else:
            side = vision["image_size"]
            pixels = torch.randn(batch, 3, side, side, generator=generator, device=device).to(dtype)
        run: dict = {"batch": batch}
        with torch.inference_mode():
            embeds = {}
            for name, runner in runners.items():
                out, done = runner.encode(pixels)
                sync(device)
                embeds[name] = out.float()
                run[name] = frames_per_second(runner, pixels, args.seconds)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        reference, quantised = embeds["model_dtype"], embeds["fp8"]
        run["speedup"] = round(run["fp8"]["frames_per_s"] / run["model_dtype"]["frames_per_s"], 3)
        run["relative_error"] = round(float((quantised - reference).norm() / reference.norm()), 5)
        run["min_token_cosine"] = round(
            float(torch.nn.functional.cosine_similarity(quantised, reference, dim=-1).min()), 5
        )
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
        if args.out:
            write_json_atomic(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
