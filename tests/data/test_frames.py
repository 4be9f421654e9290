"""`data preprocess` and `data features` at dataset scale: finished outputs skipped, corrupt inputs logged and
skipped, work split by rank and world size (two real torchrun processes), metadata and shapes in the files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from safetensors import safe_open

from videollm_online.apps.cli import main
from videollm_online.data.frames import preprocess_videos


def header(path):
    with safe_open(path, framework="pt") as file:
        key = next(iter(file.keys()))
        return key, tuple(file.get_slice(key).get_shape()), file.metadata()


def sampled_frames(path) -> int:
    """Frames the 2 fps sampler takes from a clip (what `narrate` sees)."""
    from videollm_online.video import open_video

    with open_video(str(path), fps=2, resolution=16) as stream:
        return sum(1 for _ in stream)


@pytest.fixture
def videos(make_clip, tmp_path):
    """Three 2 s clips at 10 fps and one file that is no video."""
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        make_clip(name, frames=20, fps=10, size=(64, 48))
    (tmp_path / "broken.mp4").write_bytes(os.urandom(4096))
    return tmp_path


def test_preprocess_skips_done_and_corrupt(videos, tmp_path, caplog, capsys):
    out = tmp_path / "frames"
    assert main(["data", "preprocess", str(videos), "--out", str(out), "--fps", "2", "--resolution", "16", "-q"]) == 0
    assert "3 written, 0 already done, 1 failed" in capsys.readouterr().err
    assert "broken.mp4" in caplog.text
    key, shape, metadata = header(out / "a.safetensors")
    assert (key, shape) == ("frames", (sampled_frames(videos / "a.mp4"), 16, 16, 3))
    assert metadata == {"fps": "2.0", "resolution": "16", "source": "a.mp4"}
    assert not (out / "broken.safetensors").exists()
    assert main(["data", "preprocess", str(videos), "--out", str(out), "--fps", "2", "--resolution", "16", "-q"]) == 0
    assert "0 written, 3 already done, 1 failed" in capsys.readouterr().err


def test_ranks_share_the_work(videos, tmp_path):
    out = tmp_path / "frames"
    first = preprocess_videos(videos, out, fps=2, resolution=16, rank=0, world_size=2, progress=False)
    assert sorted(p.stem for p in out.glob("*.safetensors")) == ["a"]  # rank 0: a and broken (sorted: a b broken c)
    second = preprocess_videos(videos, out, fps=2, resolution=16, rank=1, world_size=2, progress=False)
    assert first == {"written": 1, "skipped": 0, "failed": 1} and second == {"written": 2, "skipped": 0, "failed": 0}
    assert sorted(p.stem for p in out.glob("*.safetensors")) == ["a", "b", "c"]


def test_torchrun_two_processes(videos, tmp_path):
    out = tmp_path / "frames"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        "-m",
        "videollm_online.apps.cli",
        "data",
        "preprocess",
        str(videos),
        "--out",
        str(out),
        "--fps",
        "2",
        "--resolution",
        "16",
        "-q",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2: 1 written, 0 already done, 1 failed" in result.stderr and "rank 1/2: 2 written" in result.stderr
    assert sorted(p.stem for p in out.glob("*.safetensors")) == ["a", "b", "c"]


def test_features_shape_metadata_and_skips(videos, tmp_path, caplog, capsys):
    frames, features = tmp_path / "frames", tmp_path / "features"
    assert (
        main(["data", "preprocess", str(videos), "--out", str(frames), "--fps", "2", "--resolution", "32", "-q"]) == 0
    )
    (frames / "torn.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    args = ["data", "features", str(frames), "--out", str(features), "--model", "tiny", "--batch-size", "3", "-q"]
    assert main(args) == 0
    assert "3 written, 0 already done, 1 unreadable" in capsys.readouterr().err and "torn" in caplog.text
    key, shape, metadata = header(features / "b.safetensors")
    # (frames, tokens per frame, encoder hidden)
    assert (key, shape) == ("features", (sampled_frames(videos / "b.mp4"), 10, 32))
    assert metadata["fps"] == "2.0" and metadata["resolution"] == "32" and metadata["source"] == "b.mp4"
    assert metadata["encoder"] == "tiny (untrained)" and metadata["encoder_type"] == "siglip_vision_model"
    assert (metadata["encoder_hidden"], metadata["frame_num_tokens"], metadata["dtype"]) == ("32", "10", "float32")
    assert main(args) == 0
    assert "0 written, 3 already done" in capsys.readouterr().err


def test_submitit_launch_with_two_tasks(videos, tmp_path, capsys):
    """The SLURM path, run through submitit's local executor: two tasks, each taking its rank from the job."""
    pytest.importorskip("submitit")
    out = tmp_path / "frames"
    assert (
        main(
            [
                "data",
                "preprocess",
                str(videos),
                "--out",
                str(out),
                "--fps",
                "2",
                "--resolution",
                "16",
                "--slurm-tasks",
                "2",
                "--slurm-local",
                "--slurm-wait",
                "--slurm-cpus-per-task",
                "1",
                "--slurm-folder",
                str(tmp_path / "logs"),
            ]
        )
        == 0
    )
    assert "all 2 tasks finished" in capsys.readouterr().err
    assert sorted(p.stem for p in out.glob("*.safetensors")) == ["a", "b", "c"]
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*_log.err"))
    assert "rank 0/2: 1 written, 0 already done, 1 failed" in logs and "rank 1/2: 2 written" in logs
    assert (
        main(
            [
                "data",
                "preprocess",
                str(videos),
                "--out",
                str(out),
                "--fps",
                "2",
                "--resolution",
                "16",
                "--slurm-tasks",
                "3",
                "--slurm-nodes",
                "2",
            ]
        )
        == 2
    )
    assert "multiple of --slurm-nodes" in capsys.readouterr().err
