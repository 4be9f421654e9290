"""`render` on long videos: frames/s and peak memory for a 1-minute and a 10-minute clip, with speech.

    python benchmarks/render_long.py                 # 1 and 10 minutes
    python benchmarks/render_long.py --minutes 1 3

Each length runs in its own process (peak RSS is per process), on the 640x360 10 fps H.264 clip that
benchmarks/narrate_cpu.py writes, with a history of one user and one assistant turn every 10 s, spoken (`--speech`).
Streaming shows as a peak memory that does not grow with the video's length. Results go to
benchmarks/results/render_long.json with the machine, versions and command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def one(minutes: float, out_dir: Path) -> dict:
    from narrate_cpu import synthetic_clip

    from videollm_online.apps.render import RenderConfig, render_video
    from videollm_online.apps.speech import default_voice
    from videollm_online.core.checkpoint import cache_dir

    clip = synthetic_clip(cache_dir() / "bench" / f"clip-{minutes:g}min.mp4", minutes)
    turns = []
    for t in range(0, int(minutes * 60), 10):
        turns.append({"role": "user", "content": f"What happens at {t} seconds?", "time": float(t)})
        turns.append(
            {"role": "assistant", "content": "The white square bounces off the edge and keeps moving.", "time": t + 1.0}
        )
    history = out_dir / f"history-{minutes:g}.json"
    history.write_text(json.dumps({"video_path": str(clip), "frame_fps": 2.0, "model": "none", "conversation": turns}))
    default_voice()
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = render_video(history, out_dir / f"render-{minutes:g}.mp4", config=RenderConfig(speech=True))
    seconds = time.perf_counter() - started
    return {
        "minutes": minutes,
        "frames": result.frames,
        "size": f"{result.width}x{result.height}",
        "turns_spoken": result.turns_spoken,
        "seconds": round(seconds, 1),
        "frames_per_second": round(result.frames / seconds, 1),
        "peak_rss_mb_before_render": round(baseline_mb),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "output_mb": round((out_dir / f"render-{minutes:g}.mp4").stat().st_size / 2**20, 1),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # the child process: one length
    parser.add_argument("--work", type=Path, default=Path("outputs/bench-render"))
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "render_long.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        print(json.dumps(one(args.one, args.work)))
        return
    import av

    report = {
        "command": " ".join(["python", "benchmarks/render_long.py", *sys.argv[1:]]),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "av": av.__version__,
        },
        "results": [],
    }
    for minutes in args.minutes:
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(minutes), "--work", str(args.work)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        report["results"].append(result)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
