"""Training and feature extraction on N processes against one, through torchrun: the multi-GPU check.

    python benchmarks/multi_gpu.py --work outputs/multi-gpu                  # every visible GPU (NCCL), demo model
    python benchmarks/multi_gpu.py --work /tmp/mg --device cpu --model tiny --videos 8 --steps 6 --batch-size 4
                                                                             # 2 CPU processes (gloo): the logic

1. a world of `--videos` synthetic videos (seed 1) with its conversations, and its frames preprocessed once;
2. features: `data features` in one process, then under torchrun with N processes. Every video must be written
   exactly once (the ranks' counts add up to the videos, one file each), and the outputs are compared tensor for
   tensor. Frames/s of each run, the process start and model load included;
3. training: `train` for `--steps` steps in one process with `--batch-size` B, then under torchrun with N processes
   of B / N each (the same global batch, LoRA dropout off), and the two loss curves compared step by step. Samples/s
   of each, from the Trainer's own log.
Results: JSON (`--out`, default benchmarks/results/multi_gpu_<device>.json) with the commands, machine and versions.
NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and its PyTorch / NVSHMEM switches), as shared GPU hosts require.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without installing

from videollm_online.utils.files import write_json_atomic  # noqa: E402

BUNDLED = ROOT / "src" / "videollm_online" / "assets" / "demo-model"
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def run(command: list[str], log: Path) -> tuple[float, str]:
    """Run a command (its output to `log`); its wall time and stderr. A failure stops the benchmark."""
    env = {**os.environ, **NO_MULTICAST, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return elapsed, result.stderr


def rank_counts(stderr: str) -> dict[int, int]:
    """{rank: files written} from the `rank r/N: X written` lines of `data features`."""
    return {int(rank): int(written) for rank, written in re.findall(r"rank (\d+)/\d+: (\d+) written", stderr)}


def compare_features(one: Path, many: Path) -> dict:
    names_one = sorted(p.name for p in one.glob("*.safetensors"))
    names_many = sorted(p.name for p in many.glob("*.safetensors"))
    worst, identical, frames = 0.0, True, 0
    for name in set(names_one) & set(names_many):
        a, b = load_file(one / name)["features"], load_file(many / name)["features"]
        frames += a.shape[0]
        if a.shape != b.shape:
            identical, worst = False, float("inf")
            continue
        identical &= torch.equal(a, b)
        worst = max(worst, (a.float() - b.float()).abs().max().item())
    return {
        "files_one_process": len(names_one),
        "files_many": len(names_many),
        "same_files": names_one == names_many,
        "identical": identical,
        "max_abs_difference": worst,
        "frames": frames,
    }


def losses(run_dir: Path) -> tuple[list[float], dict]:
    history = json.loads((run_dir / "log_history.json").read_text())
    curve = [entry["loss"] for entry in history if "loss" in entry]
    summary = next((entry for entry in reversed(history) if "train_samples_per_second" in entry), {})
    return curve, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the world and the runs (reused)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--processes", type=int, help="default: every visible GPU; 2 on a CPU")
    parser.add_argument("--model", default="demo-192", help="the training start: a preset or a checkpoint")
    parser.add_argument(
        "--features-model",
        help="the encoder of the feature run (default: the bundled demo model on a GPU, --model on a CPU)",
    )
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16, help="the global batch: split over the processes")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    processes = args.processes or (torch.cuda.device_count() if on_gpu else 2)
    if processes < 2:
        sys.exit(f"needs at least 2 processes (found {processes} GPUs); give --processes or --device cpu")
    if args.batch_size % processes:
        sys.exit(f"--batch-size {args.batch_size} does not split over {processes} processes")
    out = args.out or ROOT / "benchmarks" / "results" / f"multi_gpu_{'cuda' if on_gpu else 'cpu'}.json"
    features_model = args.features_model or (str(BUNDLED) if on_gpu else args.model)
    cli = [sys.executable, "-m", "videollm_online.apps.cli"]
    distributed = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        "videollm_online.apps.cli",
    ]
    work, logs = args.work, args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": " ".join(sys.argv),
        "processes": processes,
        "device": torch.cuda.get_device_name() if on_gpu else platform.processor() or platform.machine(),
        "backend": "nccl" if on_gpu else "gloo",
        "torch": torch.__version__,
        "videos": args.videos,
    }

    def report(name: str, value) -> None:
        results[name] = value
        print(name, json.dumps(value), flush=True)
        write_json_atomic(out, results)

    world = work / "world"
    if not (world / "frames").exists():
        run(
            [
                *cli,
                "data",
                "synth-world",
                "--out",
                str(world),
                "--videos",
                str(args.videos),
                "--seed",
                "1",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "--workers",
                str(args.workers),
                "-q",
            ],
            logs / "world.log",
        )
        preset = args.model if not Path(args.model).exists() else "demo-192"
        run(
            [
                *cli,
                "data",
                "preprocess",
                str(world / "videos"),
                "--out",
                str(world / "frames"),
                "--preset",
                preset,
                "--workers",
                str(args.workers),
                "-q",
            ],
            logs / "preprocess.log",
        )

    # Features: one process, then N; every video exactly once, the same tensors.
    device_args = ["--device", "cuda" if on_gpu else "cpu"]
    feature_runs = {}
    for label, launcher in (("one_process", cli), ("torchrun", distributed)):
        target = work / f"features-{label}"
        if target.exists():
            for stale in target.glob("*.safetensors"):
                stale.unlink()  # a rerun measures the work again instead of skipping it
        seconds, stderr = run(
            [
                *launcher,
                "data",
                "features",
                str(world / "frames"),
                "--out",
                str(target),
                "--model",
                features_model,
                *device_args,
                "-q",
            ],
            logs / f"features-{label}.log",
        )
        feature_runs[label] = {"seconds": round(seconds, 2), "written_by_rank": rank_counts(stderr)}
    comparison = compare_features(work / "features-one_process", work / "features-torchrun")
    written = feature_runs["torchrun"]["written_by_rank"]
    for label in feature_runs:
        feature_runs[label]["frames_per_s"] = round(comparison["frames"] / feature_runs[label]["seconds"], 1)
    report(
        "features",
        {
            **feature_runs,
            **comparison,
            "every_video_once": sorted(written) == list(range(processes))
            and sum(written.values()) == args.videos == comparison["files_many"],
            "speedup": round(feature_runs["one_process"]["seconds"] / feature_runs["torchrun"]["seconds"], 2),
        },
    )

    # Training: the same global batch on one process and on N.
    train_runs = {}
    per_process = args.batch_size // processes
    for label, launcher, batch in (("one_process", cli, args.batch_size), ("torchrun", distributed, per_process)):
        target = work / f"train-{label}"
        command = [
            *launcher,
            "train",
            "--data",
            str(world / "conversations.jsonl"),
            "--frames",
            str(world / "frames"),
            "--output-dir",
            str(target),
            "--model",
            args.model,
            "--max-steps",
            str(args.steps),
            "--batch-size",
            str(batch),
            "--logging-steps",
            "1",
            "--save-steps",
            str(10 * args.steps),
            "--seed",
            "0",
            "--lora-dropout",
            "0",
            "--train-vision",
            *(["--bf16"] if on_gpu else []),
        ]
        seconds, _ = run(command, logs / f"train-{label}.log")
        curve, summary = losses(target)
        train_runs[label] = {
            "seconds": round(seconds, 1),
            "losses": curve,
            "train_samples_per_second": summary.get("train_samples_per_second"),
            "train_runtime": summary.get("train_runtime"),
        }
    one, several = train_runs["one_process"]["losses"], train_runs["torchrun"]["losses"]
    differences = [abs(a - b) for a, b in zip(one, several)]
    mean_loss = sum(one) / len(one)
    report(
        "training",
        {
            **train_runs,
            "steps_compared": len(differences),
            "max_abs_loss_difference": round(max(differences), 5),
            "mean_abs_loss_difference": round(sum(differences) / len(differences), 5),
            "mean_loss_one_process": round(mean_loss, 5),
            "throughput_scaling": None
            if not train_runs["one_process"]["train_samples_per_second"]
            else round(
                train_runs["torchrun"]["train_samples_per_second"]
                / train_runs["one_process"]["train_samples_per_second"],
                2,
            ),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
