"""Where a frame step's time goes on the GPU: vision alone, the LLM step alone (graph replay), the host's share.

python benchmarks/profile_step.py                  # 8B sizes on CUDA; prints a table and the top kernels
python benchmarks/profile_step.py --weights fp8    # the same with float8 linear weights (or int8)
"""

from __future__ import annotations

import sys
import time

import torch

sys.path.insert(0, "benchmarks")
from stream_fps import Frames, build  # noqa: E402

from videollm_online.engine import EngineConfig  # noqa: E402
from videollm_online.engine.backend import Feed  # noqa: E402
from videollm_online.engine.batch import BatchEngine  # noqa: E402


def timed(fn, repeat=50):
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat * 1000


def main():
    device = torch.device("cuda")
    model, template = build("--small" in sys.argv, device, torch.bfloat16)
    weights = sys.argv[sys.argv.index("--weights") + 1] if "--weights" in sys.argv else None
    frames = Frames(model)
    print(
        "vision attn:",
        model.frame_encoder.vision_model.config._attn_implementation,
        "llm attn:",
        model.base_llm.config._attn_implementation,
    )
    graphed = Frames(model, side_stream=True)
    for count in (1, 16):
        print(
            f"vision+connector x{count}: eager {timed(lambda n=count: frames.encode(0, n)):.2f} ms, "
            f"graph on its stream {timed(lambda n=count: graphed.encode(0, n)):.2f} ms"
        )
    embeds = frames.encode(0)[0][0]
    for fused in (False, True):  # the plain torch ops, then the fused Triton kernels (engine/kernels.py)
        if weights and not fused:
            continue  # the quantised weights are the fused engine's
        engine = BatchEngine(model, template, max_sessions=1, max_tokens=16384, fused_kernels=fused, weights=weights)
        static = engine.static
        session = engine.open(EngineConfig(threshold=0.0))
        session.push_frame(0.0, embeds)
        label = ("fused kernels" if fused else "torch ops") + (f", {weights} weights" if weights else "")
        for span_tokens in (1000, 8000, 14000):

            def step(tokens=span_tokens, static=static):
                static.lengths[0] = tokens
                static.feed({0: [Feed([5], embeds)]})

            print(f"[{label}] LLM frame step at {span_tokens} tokens (host + graph): {timed(step):.2f} ms")
        static.lengths[0] = 8000
        static.feed({0: [Feed([5], embeds)]})
        key = next(iter(k for k in static._graphs if k[1] == 11 and k[-1] > 8000))
        graph, output = static._graphs[key]
        packed, frame_buffer = static._inputs[key]
        print(f"[{label}] graph replay alone {key}: {timed(graph.replay):.2f} ms")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                static._forward(packed, frame_buffer, key)
            torch.cuda.synchronize()
        print(f"[{label}] kernels of 5 steps")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
        del engine, static, session, graph, output
        torch.cuda.empty_cache()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            frames.encode(0, 1)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))


if __name__ == "__main__":
    main()
