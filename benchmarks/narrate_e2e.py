"""`narrate` end to end, the way the command line runs it: PyAV decodes a real 10-minute video at 2 fps (on its own
thread), the vision tower + connector, the engine, the events and the history JSON written after every turn. For the
seed's loop, the default engine and the fast engine (frame by frame, `--ahead` frames a step, FP8 weights), in one
run, with random weights at the seed's sizes (Llama-3-8B + SigLIP-L/16-384, bf16, as `stream_fps.py` builds them).

    python benchmarks/narrate_e2e.py                       # a GPU: the seed's sizes
    python benchmarks/narrate_e2e.py --small               # a CPU: a small random model, the same code paths
    python benchmarks/narrate_e2e.py --video clip.mp4      # your own video instead of the generated one

Without `--video` it writes a 10-minute H.264 clip with PyAV (640x360 at 5 fps: a moving gradient and a bouncing
square). Scenarios: `silent` (threshold 0: never a response, the streaming cost; the one to hold against
`stream_fps.py`'s multi-frame `silent` figure) and `queries` (a question every 30 s, between two frames, answered
with up to 20 tokens).
Engines:
  seed        engine/reference.py, the seed's loop: frames decoded, each encoded in line, transformers' dynamic cache,
              one eager forward per frame and per token; turns written to the history at the end
  default     narrate's default engine (StreamSession on transformers' cache), frame by frame
  fast-1      the fast engine frame by frame (--ahead 1)
  fast        the fast engine, --ahead frames a step (narrate's default on a file)
  fast-fp8    the same with --weights fp8
  fast-int8   the same with --weights int8
The seed's loop and the default engine run over the first `--slow-frames` frames (they are ~10x slower at 8B), and
so does `fast@slow` (the fast engine, `--ahead` a step, over those same frames: the like-for-like speed-up, as a
longer stream's cache makes every step dearer); the others over the whole video. Per engine: frames/s over the
wall clock of the whole call (session set-up included) less the fast engine's warm-up (the CUDA graphs captured
before the first frame, once a process: `warmup_s`, and `frames_per_s_with_warmup` with it), the split into decode
(waiting for decoded frames), vision, LLM (CUDA graph captures still made on the way counted apart) and the rest
(history writes, Python), and whether `fast` said exactly what `fast-1` said. Results: JSON with the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import av
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from narrate_cpu import synthetic_clip  # noqa: E402
from stream_fps import LLAMA3_8B, SIGLIP_L_384, SMALL_LLM, SMALL_VISION  # noqa: E402

from videollm_online.apps.narrate import History, narrate_frames  # noqa: E402
from videollm_online.core.checkpoint import build_model  # noqa: E402
from videollm_online.core.config import LiveConfig  # noqa: E402
from videollm_online.engine import EngineConfig, quant, reference_stream  # noqa: E402
from videollm_online.utils.files import write_json_atomic  # noqa: E402
from videollm_online.video import open_video  # noqa: E402

ENGINES = ("seed", "default", "fast-1", "fast", "fast-fp8", "fast-int8")
SLOW = ("seed", "default", "fast@slow")
QUANTISED = {"fast-fp8": "fp8", "fast-int8": "int8"}  # run over the first --slow-frames frames only


def make_video(path: Path, minutes: float, fps: int = 5, size: tuple[int, int] = (640, 360)) -> Path:
    """A real H.264 file (narrate_cpu's clip: a moving gradient with a bouncing square), fast to encode."""
    return synthetic_clip(path, minutes, fps=fps, size=size, preset="ultrafast")


def build(small: bool, device: torch.device, dtype: torch.dtype):
    """The seed's sizes with random weights (`stream_fps.build`), positions raised to 16k so that a 10-minute stream
    (1200 frames of 11 tokens) fits without the memory policy, as `stream_fps.py`'s capacity does."""
    llm, vision = (SMALL_LLM, SMALL_VISION) if small else (LLAMA3_8B, SIGLIP_L_384)
    llm = {**llm, "max_position_embeddings": 16384}
    config = LiveConfig(llm_config=llm, vision_config=vision, frame_resolution=vision["image_size"])
    with torch.device(device):
        model, template = build_model(config, dtype=dtype, device=device)
    return model.eval(), template


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_seed(
    model, template, video: Path, fps: float, max_frames: int, queries, config: EngineConfig, history_path: Path, device
) -> tuple[dict, list]:
    """The seed's loop: decode, encode each frame in line, `reference_stream`, then the history."""
    started = time.perf_counter()
    decode = vision = 0.0
    embeds = []
    times = []
    with torch.inference_mode(), open_video(str(video), fps=fps, resolution=model.config.frame_resolution) as stream:
        frames = iter(stream)
        for _ in range(max_frames):
            tick = time.perf_counter()
            frame = next(frames, None)
            decode += time.perf_counter() - tick
            if frame is None:
                break
            tick = time.perf_counter()
            embeds.append(model.frames_to_embeds([frame.image])[0])
            sync(device)
            vision += time.perf_counter() - tick
            times.append(frame.time)
    tick = time.perf_counter()
    turns = reference_stream(
        model,
        template,
        torch.stack(embeds),
        times,
        queries,
        threshold=config.threshold,
        max_new_tokens=config.max_new_tokens,
    )
    sync(device)
    llm = time.perf_counter() - tick
    history = History(video_path=str(video), frame_fps=fps, model="random", path=history_path)
    history.conversation = [
        {"role": role, "content": template.decode(ids).strip(), "time": round(t, 3)} for t, role, ids in turns
    ]
    history.save()
    wall = time.perf_counter() - started
    summary = {
        "frames": len(times),
        "wall_s": round(wall, 3),
        "frames_per_s": round(len(times) / wall, 2),
        "decode_s": round(decode, 3),
        "vision_s": round(vision, 3),
        "llm_s": round(llm, 3),
        "other_s": round(wall - decode - vision - llm, 3),
        "vision_path": "inline, frame by frame",
        "turns": len(turns),
    }
    return summary, history.conversation


def run_engine(
    model,
    template,
    video: Path,
    fps: float,
    max_frames: int | None,
    queries,
    config: EngineConfig,
    history_path: Path,
    device,
    kind: str,
    ahead: int,
    weights: str | None,
) -> tuple[dict, list]:
    """`narrate`'s own path (`narrate_frames`), as `videollm-online narrate FILE --engine ... --ahead ...` runs it."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    history = History(video_path=str(video), frame_fps=fps, model="random", path=history_path)
    history.save()
    sync(device)
    started = time.perf_counter()
    with open_video(str(video), fps=fps, resolution=model.config.frame_resolution) as stream:
        frames = itertools.islice(stream, max_frames) if max_frames else stream
        # as the command line counts a file's frames
        total = math.ceil(stream.info.duration * fps - 1e-9) if stream.info.duration else max_frames
        expected = min(total, max_frames) if total and max_frames else total
        events, times = narrate_frames(
            model,
            template,
            frames,
            queries=queries,
            config=config,
            history=history,
            engine=kind,
            ahead=ahead,
            weights=weights,
            expected_frames=expected,
        )
    sync(device)
    wall = time.perf_counter() - started
    stages = times.summary()
    # The warm-up (CUDA graphs captured before the first frame, once a process) is reported apart, as a user sees
    # it: a pause before the stream starts, not a slower stream.
    streamed = wall - times.warmup
    summary = {
        "frames": stages["frames"],
        "wall_s": round(streamed, 3),
        "frames_per_s": round(stages["frames"] / streamed, 2),
        "decode_s": stages["decode_s"],
        "vision_s": stages["vision_s"],
        "llm_s": stages["llm_s"],
        "other_s": round(streamed - times.decode - times.vision - times.llm, 3),
        "vision_path": stages["vision_path"],
        "ahead": stages["ahead"],
        "staged": stages["staged"],
        "turns": len(events),
    }
    if stages["warmup_graphs"]:
        summary["warmup_graphs"] = stages["warmup_graphs"]
        summary["warmup_s"] = stages["warmup_s"]
        summary["frames_per_s_with_warmup"] = round(stages["frames"] / wall, 2)
    if stages["graphs_captured"]:
        summary["graphs_captured"] = stages["graphs_captured"]
        summary["capture_s"] = stages["capture_s"]
        summary["frames_per_s_without_captures"] = round(stages["frames"] / (streamed - times.capture), 2)
    if device.type == "cuda":
        summary["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        # what stays held at the end (weights, cache, graphs): the peak includes the bf16 weights one-byte ones
        # replaced, which the command line frees at load
        summary["end_memory_gb"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    return summary, history.conversation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a small random model (CPU-sized)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--video", type=Path, help="a video file (default: a generated 10-minute clip)")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the generated clip")
    parser.add_argument("--fps", type=float, default=2.0, help="frames per second fed to the model")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES[:-1]),
        help=f"comma-separated, of {', '.join(ENGINES)} (default: all but fast-int8)",
    )
    parser.add_argument("--scenarios", default="silent,queries")
    parser.add_argument("--ahead", type=int, default=16)
    parser.add_argument(
        "--slow-frames", type=int, default=120, help="frames for the seed's loop and the default engine (0: all)"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's, e.g. OMP_NUM_THREADS)")
    parser.add_argument("--work", type=Path, default=Path("outputs/narrate_e2e"), help="video and histories")
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/narrate_e2e_<device>.json)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    engines = args.engines.split(",")
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines: {', '.join(sorted(unknown))}")
    if args.threads:
        torch.set_num_threads(args.threads)
    label = "cpu_small" if args.small else device.type
    out = args.out or Path(__file__).parent / "results" / f"narrate_e2e_{label}.json"
    started = time.perf_counter()
    video = args.video or make_video(args.work / f"clip-{args.minutes:g}min.mp4", args.minutes)
    made = time.perf_counter() - started
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        duration = float(container.duration / av.time_base) if container.duration else None
        source = {
            "path": str(video),
            "codec": stream.codec_context.name,
            "width": stream.width,
            "height": stream.height,
            "average_rate": float(stream.average_rate or 0),
            "seconds": duration,
        }
    model, template = build(args.small, device, dtype)
    results: dict = {
        "command": " ".join(["python", "benchmarks/narrate_e2e.py", *sys.argv[1:]]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "dtype": str(dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "av": av.__version__,
        "model": "small random" if args.small else "random Llama-3-8B + SigLIP-L/16-384 sizes",
        "frame_tokens": model.config.frame_num_tokens,
        "video": source,
        "video_written_s": round(made, 2),
        "fps": args.fps,
        "ahead": args.ahead,
        "slow_frames": args.slow_frames,
    }

    def report(name: str, value) -> None:
        results[name] = value
        print(name, json.dumps(value), flush=True)
        write_json_atomic(out, results)

    minutes = (duration or args.minutes * 60) / 60
    scenario_settings = {
        "silent": ([], EngineConfig(threshold=0.0, max_new_tokens=20)),
        "queries": (
            [(30.0 * k - 0.25, "What is happening now?") for k in range(1, int(minutes * 2) + 1)],
            EngineConfig(threshold=0.0, max_new_tokens=20),
        ),
    }
    for scenario in args.scenarios.split(","):
        queries, config = scenario_settings[scenario]
        said = {}
        slow = args.slow_frames or None
        slow_queries = [q for q in queries if slow is None or q[0] < (slow - 1) / args.fps]
        for engine in [*engines, *(["fast@slow"] if slow and "fast" in engines else [])]:
            history_path = args.work / f"history_{scenario}_{engine}.json"
            if engine == "seed":
                summary, said[engine] = run_seed(
                    model, template, video, args.fps, slow or 10**9, slow_queries, config, history_path, device
                )
            else:
                kind = "default" if engine == "default" else "fast"
                ahead = 1 if engine in ("default", "fast-1") else args.ahead
                short = engine in SLOW
                # one-byte weights quantise the model in place; other engines of this run need it as it was
                keep = quant.linears_restored(model.base_llm) if len(engines) > 1 else contextlib.nullcontext()
                with keep:
                    summary, said[engine] = run_engine(
                        model,
                        template,
                        video,
                        args.fps,
                        slow if short else None,
                        slow_queries if short else queries,
                        config,
                        history_path,
                        device,
                        kind,
                        ahead,
                        QUANTISED.get(engine),
                    )
            report(f"{scenario}/{engine}", summary)
            gc.collect()  # the engine's static cache and graphs go with the session
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "fast" in said and "fast-1" in said:
            report(f"{scenario}/fast/same_turns_as_fast-1", said["fast"] == said["fast-1"])
        if "fast" in said and "fast-1" in said:
            report(
                f"{scenario}/fast/speedup_over_fast-1",
                round(results[f"{scenario}/fast"]["frames_per_s"] / results[f"{scenario}/fast-1"]["frames_per_s"], 3),
            )
        for slow_engine in ("seed", "default"):
            if "fast@slow" in said and slow_engine in said:  # over the same frames
                report(
                    f"{scenario}/fast@slow/speedup_over_{slow_engine}",
                    round(
                        results[f"{scenario}/fast@slow"]["frames_per_s"]
                        / results[f"{scenario}/{slow_engine}"]["frames_per_s"],
                        2,
                    ),
                )
        for quantised in [engine for engine in QUANTISED if engine in said and "fast" in said]:
            report(
                f"{scenario}/{quantised}/speedup_over_fast",
                round(
                    results[f"{scenario}/{quantised}"]["frames_per_s"] / results[f"{scenario}/fast"]["frames_per_s"], 3
                ),
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
