"""Does speech keep `narrate --realtime` real-time? Frame lag with and without `--speak`, bundled model, CPU.

    python benchmarks/narrate_speech.py                   # 3 runs of each, interleaved
    python benchmarks/narrate_speech.py --repeats 1 --fps 1 --threads 1

It writes a held-out synthetic world video once (`videollm-online data synth-world --videos 1 --seed 2 --video-fps 2
--time-grid 0.5`), then narrates it paced to the wall clock (the same pipeline as `narrate --realtime`: one frame at
a time through the vision encoder and the session) with the speech queue off and on, alternating. A frame's lag is
how late it is done (vision + LLM + its turns handed out) after its wall-clock due time (start + its video time).
With speech on, each assistant turn is handed to `SpeechQueue.say` as it completes, as `--speak` does; the queue
synthesises on its own thread (ONNX Runtime, 1 thread) and plays on the default output device when there is one.
Results go to benchmarks/results/narrate_speech.json with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from videollm_online.apps.narrate import narrate_frames
from videollm_online.apps.speech import SpeechQueue, default_voice
from videollm_online.core.checkpoint import cache_dir, load_model
from videollm_online.engine import EngineConfig
from videollm_online.video import open_video


def world_video() -> Path:
    out = cache_dir() / "bench" / "speech-world"
    video = out / "videos" / "000000.mp4"
    if not video.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "videollm_online.apps.cli",
                "data",
                "synth-world",
                "--out",
                str(out),
                "--videos",
                "1",
                "--seed",
                "2",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "-q",
            ],
            check=True,
        )
    return video


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(model, template, video: Path, fps: float, speak: bool) -> dict:
    speaker = SpeechQueue(default_voice()) if speak else None
    due: list[float] = []
    lags: list[float] = []
    t0: list[float] = []

    def timed(frames):
        for frame in frames:
            if not t0:  # FrameStream paces from its first next(), which is now
                t0.append(time.monotonic() - frame.time)
            due.append(t0[0] + frame.time)
            yield frame

    def on_event(event) -> None:
        if speaker is not None and event.role == "assistant":
            speaker.say(event.text, event.video_time)

    def on_frame(count: int) -> None:
        lags.append(time.monotonic() - due[count - 1])

    with open_video(str(video), fps=fps, resolution=model.config.frame_resolution, realtime=True) as frames:
        events, times = narrate_frames(
            model,
            template,
            timed(frames),
            config=EngineConfig(max_new_tokens=64),
            on_event=on_event,
            on_frame=on_frame,
            batch_size=1,
            live=True,
        )
    result = {
        "speak": speak,
        "frames": len(lags),
        "turns": len(events),
        "lag_mean_s": round(statistics.fmean(lags), 3),
        "lag_p50_s": round(percentile(lags, 0.5), 3),
        "lag_p95_s": round(percentile(lags, 0.95), 3),
        "lag_max_s": round(max(lags), 3),
        "lag_last_s": round(lags[-1], 3),
        **{f"stage_{k}": v for k, v in times.summary().items()},
    }
    if speaker is not None:
        playing = speaker.player is not None
        speaker.close(drain=True)
        stats = speaker.stats
        result.update(
            {
                "speech_said": stats.said,
                "speech_dropped": stats.dropped,
                "speech_audio_s": round(stats.audio_seconds, 2),
                "speech_synth_s": round(stats.synth_seconds, 2),
                "speech_ready_delay_max_s": round(max(stats.ready_delays, default=0.0), 3),
                "playback": "default output device" if playing else f"none ({speaker.no_playback_reason})",
            }
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fps", type=float, default=None, help="frames/s fed to the model (default: the model's)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's own). On a shared machine 1 is far steadier: torch's "
        "OpenMP threads stall when other processes hold the cores",
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "narrate_speech.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    video = world_video()
    model, template, name = load_model()
    fps = args.fps or model.config.frame_fps
    import onnxruntime

    report = {
        "command": " ".join(["python", "benchmarks/narrate_speech.py", *sys.argv[1:]]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "onnxruntime": onnxruntime.__version__,
            "piper_tts": importlib.metadata.version("piper-tts"),
        },
        "model": name,
        "video": {"source": "synth-world seed 2, video 0", "sampled_fps": fps},
        "results": [],
    }
    default_voice()  # loaded once, outside the timed runs (as `narrate --speak` loads it before streaming)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for repeat in range(args.repeats):
        for speak in (False, True):  # interleaved: a noisy neighbour on the machine hits both alike
            load_before = os.getloadavg()[0]
            result = {
                "repeat": repeat,
                **run(model, template, video, fps, speak),
                "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
            print(json.dumps(result), flush=True)
            report["results"].append(result)
            args.output.write_text(json.dumps(report, indent=2) + "\n")
    for speak in (False, True):
        rows = [r for r in report["results"] if r["speak"] is speak]
        report[f"summary_speak_{str(speak).lower()}"] = {
            "lag_mean_s": round(statistics.fmean(r["lag_mean_s"] for r in rows), 3),
            "lag_p95_s_max": max(r["lag_p95_s"] for r in rows),
            "lag_max_s": max(r["lag_max_s"] for r in rows),
        }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k.startswith("summary")}))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
