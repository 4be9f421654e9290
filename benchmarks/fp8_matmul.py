"""Weight-only FP8 and int8 linears (`engine.quant.QuantLinear`: the Triton kernel, autotuned) against bf16
`F.linear` and cuBLASLt's FP8 GEMM (`torch._scaled_mm`, activations quantised per row on the fly: what
`engine.quant` used before) on Llama-3-8B's linear shapes, at the row counts of a reply token (1), a frame step
(11), a full row block (16), a prompt (64) and a 16-frame step (176). Per shape and row count: the time per call
(CUDA-graph replays timed with CUDA events, median of 7 runs of 48 replays, inputs and weights rotated among 4 sets
so the weights do not sit in L2 between calls), the weight bytes read per second, the autotuner's chosen tiles, and
the relative error against a float64 product with the bf16 weights (fresh random inputs).

    python benchmarks/fp8_matmul.py --out results/fp8_matmul_h100.json     # a GPU with FP8 (Ada, Hopper)
    python benchmarks/fp8_matmul.py --quick                                # rows 1, 11, 176; 3 runs a figure
    python benchmarks/fp8_matmul.py --all-configs                          # also every candidate tile config
    python benchmarks/fp8_matmul.py --rows 1,11 --sweep --no-scaled-mm     # a grid of tiles and K splits
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

from videollm_online.engine import quant
from videollm_online.engine.quant import QuantLinear, quantize_fp8
from videollm_online.utils.files import write_json_atomic

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}


def timed(calls: list, repeats: int = 48, runs: int = 7) -> float:
    """Median milliseconds per call, the calls taken in turn, over CUDA-graph replays (each call run once first:
    kernels built and tuned outside the capture)."""
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
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / count)
    return statistics.median(samples)


class ScaledMM:
    """cuBLASLt's FP8 GEMM the way `engine.quant` called it before: weight per channel, input per row quantised
    on each call, rows padded to a multiple of 16."""

    def __init__(self, weight: torch.Tensor):
        q, scale = quantize_fp8(weight)
        self.weight_t, self.scale_b = q.t(), scale.reshape(1, -1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x_q, scale_a = quantize_fp8(x)
        count, pad = x_q.shape[0], -x_q.shape[0] % 16
        if pad:
            x_q = torch.cat([x_q, x_q.new_zeros(pad, x_q.shape[1])])
            scale_a = torch.cat([scale_a, scale_a.new_ones(pad, 1)])
        return torch._scaled_mm(x_q, self.weight_t, scale_a=scale_a, scale_b=self.scale_b, out_dtype=torch.bfloat16)[
            :count
        ]


def candidates(rows: int, sweep: bool) -> list[tuple]:
    """The tile configs to time one by one: the row bucket's autotuning candidates, and with `sweep` (few rows) a
    grid of N tiles, K tiles, K splits and pipeline depths, to choose those candidates from."""
    chosen = quant.CONFIGS[min(quant.row_bucket(rows), 128)]
    if not sweep or rows > quant.SPLIT_ROWS:
        return list(chosen)
    block_m = quant.row_bucket(rows)
    grid = [
        (block_m, block_n, block_k, 8 if block_n == 128 else 4, stages, 0, split)
        for block_n in (32, 64, 128)
        for block_k in (128, 256)
        for split in (1, 2, 4, 8)
        for stages in (3, 4)
    ]
    return list(dict.fromkeys([*chosen, *grid]))


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return round(float((out.double() - reference).norm() / reference.norm()), 5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="rows 1, 11 and 176 only; 3 timing runs a figure")
    parser.add_argument("--rows", help="comma-separated row counts (default 1,11,16,64,176)")
    parser.add_argument(
        "--all-configs",
        action="store_true",
        help="also time every candidate tile config of the row bucket (fp8), not just the chosen one",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="at up to 32 rows, also time a grid of tiles, K splits and pipeline depths (fp8): where CONFIGS come from",
    )
    parser.add_argument("--no-scaled-mm", action="store_true", help="skip torch._scaled_mm")
    args = parser.parse_args()
    device = torch.device("cuda")
    rows_list = (
        [int(r) for r in args.rows.split(",")] if args.rows else [1, 11, 176] if args.quick else [1, 11, 16, 64, 176]
    )
    runs = 3 if args.quick else 7
    fp8_mm = torch.cuda.get_device_capability() >= (8, 9) and hasattr(torch, "_scaled_mm") and not args.no_scaled_mm
    formats = ["fp8", "int8"] if torch.cuda.get_device_capability() >= (8, 9) else ["int8"]
    results: dict = {
        "command": " ".join(["python", "benchmarks/fp8_matmul.py", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "rows": rows_list,
        "shapes": {},
    }
    try:
        import triton

        results["triton"] = triton.__version__
    except ImportError:
        pass
    paths = ["bf16", *formats, *(["scaled_mm"] if fp8_mm else [])]
    total = {path: {rows: 0.0 for rows in rows_list} for path in paths}

    def save() -> None:
        if args.out:
            write_json_atomic(args.out, results)

    for name, (n, k) in SHAPES.items():
        generator = torch.Generator(device=device).manual_seed(0)
        weights = [torch.randn(n, k, device=device, dtype=torch.bfloat16, generator=generator) * 0.02 for _ in range(4)]
        layers = {"bf16": [functools.partial(F.linear, weight=w) for w in weights]}
        for fmt in formats:
            layers[fmt] = [QuantLinear(w, weights=fmt) for w in weights]
            assert layers[fmt][0].use_kernel, f"no {fmt} kernel on this GPU"
        if fp8_mm:
            layers["scaled_mm"] = [ScaledMM(w) for w in weights]
        entry: dict = {"n": n, "k": k}
        for rows in rows_list:
            x = torch.randn(rows, k, device=device, dtype=torch.bfloat16, generator=generator)
            reference = x.double() @ weights[0].double().T
            inputs = [torch.randn(rows, k, device=device, dtype=torch.bfloat16, generator=generator) for _ in range(4)]
            figures: dict = {}
            for path in paths:
                figures[f"error_{path}"] = relative_error(layers[path][0](x), reference)
                ms = timed([functools.partial(layer, x) for x, layer in zip(inputs, layers[path])], runs=runs)
                total[path][rows] += ms
                figures[f"ms_{path}"] = round(ms, 4)
                read = n * k * (2 if path == "bf16" else 1)
                figures[f"weight_tb_per_s_{path}"] = round(read / ms / 1e9, 3)
            for fmt in formats:
                figures[f"speedup_{fmt}"] = round(figures["ms_bf16"] / figures[f"ms_{fmt}"], 3)
                # the kernel against the same quantised weights in float64: only the bf16 output rounding apart
                q = layers[fmt][0]
                exact = x.double() @ (q.weight.double() * q.scale.double()[:, None]).T
                figures[f"kernel_error_{fmt}"] = relative_error(q(x), exact)
                figures[f"config_{fmt}"] = quant.chosen_config(rows, n, k, q.weight.dtype)
            if args.all_configs or args.sweep:
                q = layers["fp8" if "fp8" in formats else "int8"]
                sweep = {}
                for candidate in candidates(rows, args.sweep):
                    config = quant.config_dict(candidate)
                    label = "{BLOCK_M}x{BLOCK_N}x{BLOCK_K}/w{num_warps}/s{num_stages}/split{SPLIT_K}".format(**config)
                    label += "/swap" if config["SWAP"] else ""
                    try:
                        ms = timed(
                            [
                                functools.partial(
                                    quant.weight_only_matmul,
                                    x,
                                    layer.weight,
                                    layer.scale,
                                    config=config,
                                    counters=layer.counters,
                                )
                                for x, layer in zip(inputs, q)
                            ],
                            runs=runs,
                        )
                        sweep[label] = round(ms, 4)
                    except Exception as error:  # a config past this GPU's resources
                        sweep[label] = f"{type(error).__name__}"
                figures["all_configs_ms"] = sweep
                timings = {label: ms for label, ms in sweep.items() if isinstance(ms, float)}
                figures["fastest_config"] = min(timings, key=timings.get) if timings else None
            entry[str(rows)] = figures
            print(name, rows, json.dumps(figures), flush=True)
        results["shapes"][name] = entry
        save()
        del weights, layers
        torch.cuda.empty_cache()
    results["one_layer"] = {
        str(rows): {f"speedup_{path}": round(total["bf16"][rows] / total[path][rows], 3) for path in paths[1:]}
        for rows in rows_list
    }
    results["one_layer_ms"] = {
        path: {str(rows): round(ms, 4) for rows, ms in by_rows.items()} for path, by_rows in total.items()
    }
    print("one_layer", json.dumps(results["one_layer"]))
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
