"""The fast engine's attention for one stream's frame step (11 queries a session over a long cache), three ways:
the torch ops (two matmuls and a masked softmax), the matmuls with the fused softmax (the engine before the
split-key kernels), and the split-key kernels (`FusedOps.decode_attention`). Llama-3-8B's shapes (32 layers, 8 kv
heads of 128, groups of 4), bf16, each layer its own cache (so nothing is served from L2), timed as a CUDA graph of
all 32 layers, as the engine replays them; the error of each against float32 attention is reported too.

    python benchmarks/attention_decode.py --out benchmarks/results/attention_decode_h200.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from videollm_online.engine.kernels import FusedOps, TorchOps, visible_keys

LAYERS, KV_HEADS, GROUP, STEPS, HEAD_DIM = 32, 8, 4, 11, 128


def graph_time_ms(fn, repeat: int = 20) -> float:
    """Milliseconds per replay of a CUDA graph of `fn`."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm-up (kernel builds) on the capture stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", default="1024,4096,8192,14336", help="cache lengths read (keys)")
    parser.add_argument("--out", help="JSON results")
    args = parser.parse_args()
    device = torch.device("cuda")
    act = torch.nn.SiLU()
    plain, fused = TorchOps(1e-5, act), FusedOps(1e-5, act, "silu")
    spans = [int(s) for s in args.spans.split(",")]
    longest = max(spans)
    generator = torch.Generator(device=device).manual_seed(0)
    shape = (LAYERS, 1, KV_HEADS, longest, HEAD_DIM)
    k_cache = torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16)
    v_cache = torch.randn(shape, generator=generator, device=device, dtype=torch.bfloat16)
    q = torch.randn(1, KV_HEADS, GROUP * STEPS, HEAD_DIM, generator=generator, device=device) / HEAD_DIM**0.5
    q = q.to(torch.bfloat16)
    variants = {
        "torch ops": lambda k, v, hidden, positions: plain.decode_attention(q, k, v, hidden, positions),
        # TorchOps' matmuls with FusedOps' softmax: the engine's attention before the split-key kernels
        "matmuls + fused softmax": lambda k, v, hidden, positions: TorchOps.decode_attention(
            fused, q, k, v, None, positions
        ),
        "split-key kernels": lambda k, v, hidden, positions: fused.decode_attention(q, k, v, None, positions),
    }
    results = []
    for span in spans:
        positions = (span - STEPS + torch.arange(STEPS, device=device))[None]  # the step's tokens end the cache
        hidden = ~visible_keys(positions, GROUP, span)
        layers = [(k_cache[i, :, :, :span], v_cache[i, :, :, :span]) for i in range(LAYERS)]
        truth = plain.decode_attention(q.float(), layers[0][0].float(), layers[0][1].float(), hidden, positions)
        row = {"span": span, "bytes_read_mb": round(2 * LAYERS * KV_HEADS * span * HEAD_DIM * 2 / 1e6, 1)}
        for name, fn in variants.items():

            def all_layers(fn=fn, layers=layers, hidden=hidden, positions=positions):
                for keys, values in layers:
                    fn(keys, values, hidden, positions)

            ms = graph_time_ms(all_layers)
            error = (fn(*layers[0], hidden, positions).float() - truth).abs().max().item()
            row[name] = {
                "ms_32_layers": round(ms, 4),
                "kv_tb_per_s": round(row["bytes_read_mb"] / ms / 1e3, 2),
                "max_abs_error_vs_fp32": error,
            }
        row["split_vs_fused_softmax"] = round(
            row["matmuls + fused softmax"]["ms_32_layers"] / row["split-key kernels"]["ms_32_layers"], 3
        )
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        import triton

        info = {
            "command": "python " + " ".join(sys.argv),
            "device": torch.cuda.get_device_name(device),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "machine": platform.machine(),
            "shapes": {"layers": LAYERS, "kv_heads": KV_HEADS, "group": GROUP, "steps": STEPS, "head_dim": HEAD_DIM},
            "results": results,
        }
        with open(args.out, "w") as file:
            json.dump(info, file, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
