"""FP8 weights (`engine.quant.Fp8Linear`, torch._scaled_mm) against bf16 `F.linear` on Llama-3-8B's linear shapes:
the error against a float64 reference (fresh random inputs per check) and the time per call at the token counts of
a frame step (11 tokens) and a 16-frame step (176), CUDA-graph replays timed with CUDA events (median of 7 runs of
50 replays, inputs rotated among 4 sets so the weights do not sit in L2 between calls).

    python benchmarks/fp8_matmul.py --out results/fp8_matmul_h100.json       # a GPU with FP8 (Ada, Hopper)
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from videollm_online.engine.quant import Fp8Linear
from videollm_online.files import write_json_atomic

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def timed(calls: list, repeats: int = 48) -> float:
    """Median milliseconds per call, the calls taken in turn, over CUDA-graph replays."""
    for call in calls:
        call()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats // len(calls)):
            for call in calls:
                call()
    count = (repeats // len(calls)) * len(calls)
    samples = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / count)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda")
    results: dict = {
        "command": " ".join(["python", "benchmarks/fp8_matmul.py", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "shapes": {},
    }
    total = {"bf16": {}, "fp8": {}}
    for name, (n, k) in SHAPES.items():
        weights = [torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02 for _ in range(4)]
        layers = [Fp8Linear(w) for w in weights]
        entry = {"per_channel": layers[0].per_channel, "scaled_mm": layers[0].fast}
        x = torch.randn(11, k, device=device, dtype=torch.bfloat16)
        reference = x.double() @ weights[0].double().T
        for label, out in {"bf16": F.linear(x, weights[0]), "fp8": layers[0](x)}.items():
            entry[f"relative_error_{label}"] = round(float((out.double() - reference).norm() / reference.norm()), 5)
        for tokens in (11, 176):
            inputs = [torch.randn(tokens, k, device=device, dtype=torch.bfloat16) for _ in range(4)]
            bf16 = timed([functools.partial(F.linear, x, w) for x, w in zip(inputs, weights)])
            fp8 = timed([functools.partial(layer, x) for x, layer in zip(inputs, layers)])
            entry[f"ms_bf16_{tokens}"], entry[f"ms_fp8_{tokens}"] = round(bf16, 4), round(fp8, 4)
            entry[f"speedup_{tokens}"] = round(bf16 / fp8, 3)
            entry[f"fp8_weight_tb_per_s_{tokens}"] = round(n * k / fp8 / 1e9, 3)
            total["bf16"][tokens] = total["bf16"].get(tokens, 0) + bf16
            total["fp8"][tokens] = total["fp8"].get(tokens, 0) + fp8
        results["shapes"][name] = entry
        print(name, json.dumps(entry), flush=True)
        del weights, layers
    results["one_layer"] = {f"speedup_{t}": round(total["bf16"][t] / total["fp8"][t], 3) for t in (11, 176)}
    print("one_layer", json.dumps(results["one_layer"]))
    if args.out:
        write_json_atomic(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
