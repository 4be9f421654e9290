"""Streaming speed of the fast engine against the seed's loop, at the seed's sizes with random weights.

    python benchmarks/stream_fps.py                  # H100: Llama-3-8B + SigLIP-L/16-384 sizes, bf16, all parts
    python benchmarks/stream_fps.py --small          # a CPU: small random model, the same code paths

Scenarios (DESIGN.md section 6): `silent` (every frame is 10 tokens plus the interval token, never a response) and
`narrate` (a forced 20-token response after every 20th frame). Each frame is a random 384x384 image through the
vision tower and connector, so vision is in the timing. Parts:
  reference   the seed's loop: transformers' dynamic cache, one eager forward per frame and per token, vision in line
  single      the fast engine, one stream: static cache, CUDA graphs, vision on its own CUDA stream one frame ahead
  unfused     the same single-stream run with the layers' small operations as plain torch ops instead of the fused
              Triton kernels (engine/kernels.py): what the kernels bring, measured in the same run
  fp8         the same single-stream run with float8 e4m3 linear weights (`engine.quant`: weight-only, the Triton
              kernel; the LM head in bf16): speed-up over `single` and whether the events agree
  int8        the same with int8 linear weights (the same kernel and per-channel scheme)
  multi       the multi-frame mode (a file): `--ahead` frames per forward, rolled back where a response starts;
              its events are compared with the frame-by-frame run
  streams     N concurrent silent streams batched in one engine (`--streams 16,32,64`: one run each); aggregate
              frames/s, p50/p99 frame latency
  keep-up     the largest N whose streams each still get >= 2 frames/s (caches filled to a fixed window)
  endless     a 2-hour stream at 2 fps through the memory policy, memory sampled along the way
Results: benchmarks/results/stream_fps_<device>.json (frames/s, p50/p99 per-frame latency, response tokens/s, peak
GPU memory, machine and versions).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from videollm_online.core.checkpoint import build_model
from videollm_online.core.config import LiveConfig
from videollm_online.engine import EngineConfig, StreamSession, kernels
from videollm_online.engine.batch import BatchEngine
from videollm_online.engine.quant import WEIGHT_FORMATS, linears_restored, quantize_linears
from videollm_online.engine.static import MemoryPolicy
from videollm_online.engine.vision import FrameEncoderRunner
from videollm_online.engine.vision_fp8 import quantize_vision_tower
from videollm_online.utils.files import write_json_atomic

LLAMA3_8B = {
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "rope_theta": 500000.0,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
SIGLIP_L_384 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 16,
}
SMALL_LLM = {
    "model_type": "llama",
    "vocab_size": 2048,
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
}
SMALL_VISION = {
    "model_type": "siglip_vision_model",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 64,
    "patch_size": 16,
}


class Scheduled(StreamSession):
    """Responds after every `every`-th frame (None: never), whatever the model says: the benchmark's workload."""

    every: int | None = None

    def wants_response(self, result) -> bool:
        return self.every is not None and self.num_frames % self.every == 0


def scheduled(every: int | None) -> type[Scheduled]:
    return type("Scheduled", (Scheduled,), {"every": every})


class Frames:
    """Normalised random frames on the device, and the vision tower + connector run on them: in line (the seed's
    way) or through the engine's `FrameEncoderRunner` (own stream, CUDA graphs: frame i+1 encoded during frame i)."""

    def __init__(self, model, distinct: int = 32, side_stream: bool = False):
        self.model = model
        resolution = model.config.frame_resolution
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (distinct, resolution, resolution, 3), dtype=torch.uint8, generator=generator)
        from videollm_online.core.model import preprocess_frames

        dtype = next(model.frame_encoder.parameters()).dtype
        self.pixels = preprocess_frames(images, model.config, device=model.device, dtype=dtype)
        self.runner = FrameEncoderRunner(model) if side_stream else None

    @torch.inference_mode()
    def encode(self, start: int, count: int = 1):
        """Embeddings (count, T, H) of frames start..start+count-1, and an event to wait on (or None)."""
        index = torch.arange(start, start + count) % len(self.pixels)
        if self.runner is None:
            return self.model.embed_frames(self.model.encode_frames(self.pixels[index])), None
        return self.runner.encode(self.pixels[index])


def ready(encoded) -> torch.Tensor:
    """Embeddings from `Frames.encode`, usable on the current stream."""
    embeds, done = encoded
    if done is not None:
        torch.cuda.current_stream().wait_event(done)
    return embeds


def release(device) -> None:
    """Free what a finished part held (sessions and their token hooks form reference cycles)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def percentiles(latencies: list[float]) -> dict:
    values = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(values, 50)), 2), "p99_ms": round(float(np.percentile(values, 99)), 2)}


def summary(num_frames: int, elapsed: float, latencies: list[float], token_times: list[list[float]], device) -> dict:
    result = {
        "frames": num_frames,
        "seconds": round(elapsed, 3),
        "frames_per_s": round(num_frames / elapsed, 2),
        **percentiles(latencies),
    }
    spans = [(len(times) - 1, times[-1] - times[0]) for times in token_times if len(times) > 1]
    if spans:
        result["response_tokens_per_s"] = round(sum(n for n, _ in spans) / sum(s for _, s in spans), 1)
        result["responses"] = len(token_times)
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def track_tokens(session: StreamSession) -> list[list[float]]:
    """Wall-clock times of each response's tokens, through the session's token hook."""
    responses: list[list[float]] = []
    last_frames = [-1]

    def on_token(_token: int) -> None:
        if session.num_frames != last_frames[0]:
            responses.append([])
            last_frames[0] = session.num_frames
        responses[-1].append(time.perf_counter())

    session.on_token = on_token
    return responses


def run_frames(session: StreamSession, frames: Frames, num_frames: int, fps: float, device) -> tuple[dict, list]:
    """Frame by frame, vision one frame ahead."""
    token_times = track_tokens(session)
    latencies, events = [], []
    sync(device)
    started = time.perf_counter()
    upcoming = frames.encode(0)
    for index in range(num_frames):
        frame_started = time.perf_counter()
        embeds, done = upcoming
        if index + 1 < num_frames:
            upcoming = frames.encode(index + 1)
        if done is not None:
            torch.cuda.current_stream().wait_event(done)
        events += session.push_frame(index / fps, embeds[0])
        latencies.append(time.perf_counter() - frame_started)
    sync(device)
    return summary(num_frames, time.perf_counter() - started, latencies, token_times, device), events


def run_multi(session: StreamSession, frames: Frames, num_frames: int, fps: float, ahead: int, device):
    """The multi-frame mode: chunks of `ahead` frames encoded in one batch (the next chunk while this one runs)."""
    token_times = track_tokens(session)
    latencies, events = [], []
    sync(device)
    started = time.perf_counter()
    upcoming = frames.encode(0, min(ahead, num_frames))
    for start in range(0, num_frames, ahead):
        chunk_started = time.perf_counter()
        count = min(ahead, num_frames - start)
        embeds, done = upcoming
        if start + ahead < num_frames:
            upcoming = frames.encode(start + ahead, min(ahead, num_frames - start - ahead))
        if done is not None:
            torch.cuda.current_stream().wait_event(done)
        times = [(start + i) / fps for i in range(count)]
        events += session.push_frames(times, embeds, ahead=ahead)
        latencies += [(time.perf_counter() - chunk_started)] * count
    sync(device)
    return summary(num_frames, time.perf_counter() - started, latencies, token_times, device), events


def same_events(a: list, b: list) -> dict:
    pairs = list(zip(a, b))
    same = sum(x.frame_index == y.frame_index and x.token_ids == y.token_ids for x, y in pairs)
    timing = sum(x.frame_index == y.frame_index for x, y in pairs)
    return {
        "events": [len(a), len(b)],
        "identical": same,
        "same_frame": timing,
        "all_identical": len(a) == len(b) == same,
    }


def part_streams(
    model,
    template,
    frames: Frames,
    num_streams: int,
    num_frames: int,
    fps: float,
    max_tokens: int,
    device,
    prefill_to: int | None = None,
    attention_programs: int | None = None,
    weights: str | None = None,
) -> dict:
    """N silent streams in lockstep: each step gives every stream its next frame (vision batched over streams)."""
    engine = BatchEngine(
        model,
        template,
        max_sessions=num_streams,
        max_tokens=max_tokens,
        max_step_tokens=max(256, model.config.frame_num_tokens + 1),
        attention_programs=attention_programs,
        weights=weights,
    )
    engine.static.warmup([(num_streams, model.config.frame_num_tokens + 1, 1)], max_tokens)
    sessions = [engine.open(EngineConfig(threshold=0.0), scheduled(None)) for _ in range(num_streams)]
    for session in sessions:  # the first frame (system prompt + frame) outside the timing
        session.push_frame(0.0, ready(frames.encode(0))[0])
        if prefill_to:  # timing at a full window without streaming through it first: the cache holds filler
            engine.static.lengths[session.backend.slot] = prefill_to
    latencies = []
    sync(device)
    started = time.perf_counter()
    upcoming = frames.encode(0, num_streams)
    for index in range(1, num_frames):
        step_started = time.perf_counter()
        embeds, done = upcoming
        if index + 1 < num_frames:
            upcoming = frames.encode(index * num_streams, num_streams)
        if done is not None:
            torch.cuda.current_stream().wait_event(done)
        for session, frame in zip(sessions, embeds):
            engine.submit_frame(session, index / fps, frame)
        while engine.busy():
            engine.step()
        latencies.append(time.perf_counter() - step_started)
    sync(device)
    elapsed = time.perf_counter() - started
    total = num_streams * (num_frames - 1)
    result = {
        "streams": num_streams,
        "frames": total,
        "seconds": round(elapsed, 3),
        "aggregate_frames_per_s": round(total / elapsed, 1),
        "per_stream_frames_per_s": round((num_frames - 1) / elapsed, 2),
        **percentiles(latencies),
    }
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del engine, sessions
    release(device)
    return result


def part_endless(
    model, template, frames: Frames, hours: float, fps: float, max_tokens: int, ahead: int, device
) -> dict:
    engine = BatchEngine(
        model,
        template,
        max_sessions=1,
        max_tokens=max_tokens,
        policy=MemoryPolicy(),
        max_step_tokens=max(256, ahead * (model.config.frame_num_tokens + 1)),
    )
    step = model.config.frame_num_tokens + 1
    engine.static.warmup([(1, 1, 1), (1, step, 1), (1, 16, 1), (1, ahead * step, ahead)], max_tokens)
    session = engine.open(EngineConfig(max_new_tokens=20), scheduled(200))
    num_frames = int(hours * 3600 * fps)
    samples = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    events = 0
    for start in range(0, num_frames, ahead):
        count = min(ahead, num_frames - start)
        embeds, done = frames.encode(start, count)
        if done is not None:
            torch.cuda.current_stream().wait_event(done)
        events += len(session.push_frames([(start + i) / fps for i in range(count)], embeds, ahead=ahead))
        if (start // ahead) % max(1, 1200 // ahead) == 0 and device.type == "cuda":
            samples.append(
                {
                    "frame": start + count,
                    "allocated_gb": round(torch.cuda.memory_allocated() / 2**30, 3),
                    "cache_tokens": session.num_tokens,
                }
            )
    sync(device)
    elapsed = time.perf_counter() - started
    result = {
        "video_hours": hours,
        "frames": num_frames,
        "seconds": round(elapsed, 1),
        "frames_per_s": round(num_frames / elapsed, 1),
        "responses": events,
        "cache_tokens_max": max_tokens,
        "tokens_dropped": engine.static.evictions[0],
        "memory_samples": samples,
    }
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        allocated = [s["allocated_gb"] for s in samples[1:]]
        result["allocated_gb_min_max_after_start"] = [min(allocated), max(allocated)] if allocated else None
    return result


def build(small: bool, device: torch.device, dtype: torch.dtype):
    llm, vision = (SMALL_LLM, SMALL_VISION) if small else (LLAMA3_8B, SIGLIP_L_384)
    config = LiveConfig(llm_config=llm, vision_config=vision, frame_resolution=vision["image_size"])
    with torch.device(device):  # random init on the device: fast at 8B
        model, template = build_model(config, dtype=dtype, device=device)
    return model.eval(), template


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a small random model (CPU-sized)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=1200, help="frames per scenario (1200 = 10 min at 2 fps)")
    parser.add_argument(
        "--reference-frames",
        type=int,
        default=300,
        help="frames for the (slow) reference loop; its frames/s is over these first frames",
    )
    parser.add_argument("--ahead", type=int, default=16, help="frames per forward in the multi-frame mode")
    parser.add_argument("--streams", default="16", help="streams part: stream counts, comma-separated (e.g. 16,32,64)")
    parser.add_argument(
        "--stream-frames",
        type=int,
        help="streams part: frames per stream (default: --frames); each "
        "stream's cache holds them all, so fewer let more streams fit a GPU's memory",
    )
    parser.add_argument(
        "--weights",
        choices=WEIGHT_FORMATS,
        default=None,
        help="every fast-engine part on float8 / int8 linear weights (the `fp8` and `int8` parts compare them anyway)",
    )
    parser.add_argument(
        "--vision-fp8",
        action="store_true",
        help="every part with the vision tower's encoder layers as FP8 GEMMs (`engine.vision_fp8`)",
    )
    parser.add_argument("--keep-up", default="16,32,64,128,192", help="stream counts tried for the 2 fps test")
    parser.add_argument("--keep-up-window", type=int, default=2048, help="cache tokens per stream in that test")
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument(
        "--parts",
        default="reference,unfused,single,fp8,multi,streams,keep-up,endless",
        help="unfused: the single-stream run on the plain torch ops instead of the fused kernels",
    )
    parser.add_argument(
        "--attention-programs",
        default="",
        help="streams part: programs the split-key attention aims for, comma-separated values run "
        "one after another (default: one run at the multiprocessor count)",
    )
    parser.add_argument("--scenarios", default="silent,narrate", help="of the single-stream parts, in this order")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    parts = set(args.parts.split(","))
    fps = 2.0
    model, template = build(args.small, device, dtype)
    if args.weights:  # as the command line does at load: every part on the one-byte weights
        quantize_linears(model.base_llm, args.weights)
    if args.vision_fp8:
        quantize_vision_tower(model, check_device=device.type == "cuda")
    frames_inline = Frames(model)
    frames_ahead = Frames(model, side_stream=True)
    # A 10-minute stream without dropping: every frame, plus each forced response's prompt, text and eos.
    capacity = args.frames * (model.config.frame_num_tokens + 1) + (args.frames // 20 + 1) * 64 + 1024
    results: dict = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": "small random" if args.small else "random Llama-3-8B + SigLIP-L/16-384 sizes",
        "frame_tokens": model.config.frame_num_tokens,
        "fused_kernels": kernels.fused_by_default(device),
        "weights": args.weights or "model dtype",
        "vision": "fp8 GEMMs" if args.vision_fp8 else "model dtype",
    }

    def report(name: str, value) -> None:
        results[name] = value
        print(name, json.dumps(value), flush=True)
        if args.out:
            write_json_atomic(args.out, results)

    def solo_session(
        config: EngineConfig, every: int | None, fused_kernels: bool | None = None, weights: str | None = args.weights
    ):
        """One stream on the fast engine, its CUDA graphs captured for every span of the run."""
        step = model.config.frame_num_tokens + 1
        engine = BatchEngine(
            model,
            template,
            max_sessions=1,
            max_tokens=capacity,
            fused_kernels=fused_kernels,
            max_step_tokens=max(256, args.ahead * step),
            weights=weights,
            frames_per_step=args.ahead,
        )
        engine.static.warmup([(1, 1, 1), (1, step, 1), (1, 16, 1), (1, args.ahead * step, args.ahead)], capacity)
        return engine, engine.open(config, scheduled(every))

    def timed_frames(session: StreamSession) -> dict:
        """Frame by frame over the run's frames, after a short warm-up (captures of the remaining shapes)."""
        run_frames(session, frames_ahead, 40, fps, device)
        session.reset()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        return run_frames(session, frames_ahead, args.frames, fps, device)[0]

    workloads = {"silent": (None, EngineConfig(threshold=0.0)), "narrate": (20, EngineConfig(max_new_tokens=20))}
    solo_events = {}
    for scenario in args.scenarios.split(","):
        every, config = workloads[scenario]
        if "reference" in parts:
            session = scheduled(every)(model, template, config)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            report(f"reference/{scenario}", run_frames(session, frames_inline, args.reference_frames, fps, device)[0])
            reference_events = session.events
        if "unfused" in parts and device.type == "cuda":
            engine, session = solo_session(config, every, fused_kernels=False)
            report(f"unfused/{scenario}", timed_frames(session))
            unfused_events = list(session.events)
            del engine, session
            release(device)
        if "single" in parts or "multi" in parts:
            engine, session = solo_session(config, every)
        if "single" in parts:
            report(f"single/{scenario}", timed_frames(session))
            solo_events[scenario] = list(session.events)
            if "unfused" in parts and device.type == "cuda":
                report(
                    f"single/{scenario}/vs_unfused",
                    {
                        **same_events(solo_events[scenario], unfused_events),
                        "speedup": round(
                            results[f"single/{scenario}"]["frames_per_s"]
                            / results[f"unfused/{scenario}"]["frames_per_s"],
                            3,
                        ),
                    },
                )
            if "reference" in parts:
                count = sum(e.frame_index < args.reference_frames for e in solo_events[scenario])
                report(f"single/{scenario}/vs_reference", same_events(solo_events[scenario][:count], reference_events))
        for fmt in [fmt for fmt in WEIGHT_FORMATS if fmt in parts and args.weights != fmt]:
            with linears_restored(model.base_llm):  # the engine quantises the model in place; later parts need bf16
                quant_engine, quant_session = solo_session(config, every, weights=fmt)
                report(f"{fmt}/{scenario}", timed_frames(quant_session))
            if scenario in solo_events:
                report(
                    f"{fmt}/{scenario}/vs_single",
                    {
                        **same_events(list(quant_session.events), solo_events[scenario]),
                        "speedup": round(
                            results[f"{fmt}/{scenario}"]["frames_per_s"]
                            / results[f"single/{scenario}"]["frames_per_s"],
                            3,
                        ),
                    },
                )
            del quant_engine, quant_session
            release(device)
        if "multi" in parts:
            session.reset()
            run_multi(session, frames_ahead, 4 * args.ahead, fps, args.ahead, device)  # warm-up
            session.reset()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            summary_, events = run_multi(session, frames_ahead, args.frames, fps, args.ahead, device)
            report(f"multi/{scenario}", summary_)
            if scenario in solo_events:
                report(f"multi/{scenario}/vs_single", same_events(events, solo_events[scenario]))
        if "single" in parts or "multi" in parts:
            del engine, session
        release(device)
    if "streams" in parts:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        stream_frames = args.stream_frames or args.frames
        stream_capacity = stream_frames * (model.config.frame_num_tokens + 1) + 1024  # silent: frames only
        for count in [int(n) for n in args.streams.split(",")]:
            for programs in [int(n) for n in args.attention_programs.split(",") if n] or [None]:
                name = f"streams/{count}" + (f"/attention_programs={programs}" if programs else "")
                try:
                    result = part_streams(
                        model,
                        template,
                        frames_ahead,
                        count,
                        stream_frames,
                        fps,
                        stream_capacity,
                        device,
                        attention_programs=programs,
                        weights=args.weights,
                    )
                except torch.OutOfMemoryError:
                    result = {"streams": count, "frames_per_stream": stream_frames, "error": "out of GPU memory"}
                    release(device)
                report(name, {**result, "frames_per_stream": stream_frames, "cache_tokens": stream_capacity})
    if "keep-up" in parts:
        sweep = []
        for count in [int(n) for n in args.keep_up.split(",")]:
            try:
                window = args.keep_up_window
                result = part_streams(
                    model,
                    template,
                    frames_ahead,
                    count,
                    30,
                    fps,
                    window,
                    device,
                    prefill_to=window - 400,
                    weights=args.weights,
                )
            except torch.OutOfMemoryError:
                sweep.append({"streams": count, "error": "out of GPU memory"})
                torch.cuda.empty_cache()
                break
            result["keeps_up_with_2_fps"] = result["per_stream_frames_per_s"] >= 2.0
            sweep.append(result)
            report("keep_up", {"window_tokens": args.keep_up_window, "runs": sweep})
            if not result["keeps_up_with_2_fps"]:
                break
        ok = [run["streams"] for run in sweep if run.get("keeps_up_with_2_fps")]
        report(
            "keep_up",
            {
                "window_tokens": args.keep_up_window,
                "runs": sweep,
                "largest_streams_keeping_up": max(ok) if ok else None,
            },
        )
    if "endless" in parts:
        max_tokens = model.base_llm.config.max_position_embeddings
        report("endless", part_endless(model, template, frames_ahead, args.hours, fps, max_tokens, args.ahead, device))
        llm = model.base_llm.config
        head_dim = getattr(llm, "head_dim", None) or llm.hidden_size // llm.num_attention_heads
        per_token = 2 * llm.num_hidden_layers * llm.num_key_value_heads * head_dim * model.dtype.itemsize
        free = torch.cuda.mem_get_info()[0] if device.type == "cuda" else None
        report(
            "without_policy",
            {
                "max_tokens_positions": max_tokens,
                "max_frames_positions": max_tokens // (model.config.frame_num_tokens + 1),
                "max_minutes_positions": round(max_tokens / (model.config.frame_num_tokens + 1) / fps / 60, 1),
                "kv_bytes_per_token": per_token,
                "max_minutes_free_memory": None
                if free is None
                else round(free / per_token / (model.config.frame_num_tokens + 1) / fps / 60, 1),
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
