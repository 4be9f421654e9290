"""`--threads N` reaches torch; the default is the physical cores this process may use, shared under torchrun."""

import os
import subprocess
import sys

import pytest
import torch

from videollm_online.apps.cli import main
from videollm_online.utils.threads import default_threads, physical_cores, usable_cpus


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_is_the_physical_cores_shared_between_local_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = physical_cores()
    assert 1 <= cores <= usable_cpus() <= (os.cpu_count() or 1)
    assert default_threads() == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun --nproc-per-node 2
    assert default_threads() == max(1, cores // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))  # more processes than cores: one thread each
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins over the count
    assert default_threads() == 3


@pytest.mark.parametrize("command", ["narrate", "eval"])
def test_threads_option_reaches_torch(command, tiny_checkpoint, make_clip, tmp_path, restore_threads, capsys):
    clip = make_clip("clip.mp4", frames=10, fps=10)
    torch.set_num_threads(1)
    if command == "narrate":
        args = ["narrate", str(clip), "--model", str(tiny_checkpoint), "--threads", "2", "-q"]
    else:
        args = ["eval", "--data-root", str(tmp_path / "absent"), "--model", str(tiny_checkpoint), "--threads", "2"]
    main(args)  # eval stops at its missing data, after the threads are set
    assert torch.get_num_threads() == 2


def test_under_torchrun_each_process_takes_its_share(tiny_checkpoint, make_clip):
    clip = make_clip("clip.mp4", frames=10, fps=10)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["LOCAL_WORLD_SIZE"] = "2"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "videollm_online.apps.cli",
            "--verbose",
            "narrate",
            str(clip),
            "--model",
            str(tiny_checkpoint),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"torch uses {max(1, physical_cores() // 2)} CPU threads" in result.stderr
    with_option = subprocess.run(
        [
            sys.executable,
            "-m",
            "videollm_online.apps.cli",
            "--verbose",
            "narrate",
            str(clip),
            "--model",
            str(tiny_checkpoint),
            "--threads",
            "3",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert "torch uses 3 CPU threads" in with_option.stderr


def test_every_streaming_command_takes_threads(capsys):
    for command in ("narrate", "eval", "demo", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--threads N" in capsys.readouterr().out
