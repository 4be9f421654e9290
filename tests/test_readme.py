"""The README's examples run as written against the bundled default model: its Python example, and its command lines
in order (those that need a GPU, the network or a server that runs until stopped are left out, by rule below)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_HERE = {"demo", "serve", "download"}  # run until stopped, or need the network
CONVERSATION = [
    {"role": "system", "content": "Narrate."},
    {"role": "stream", "num_frames": 2, "learn": True},
    {"role": "assistant", "content": "You move the red circle.", "learn": True},
]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def command_lines() -> list[list[str]]:
    """Every `videollm-online ...` line of the README's sh blocks (continuations joined, comments cut), as argv."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] == "videollm-online":
                commands.append(argv[1:])
    return commands


def runnable(argv: list[str]) -> bool:
    return argv[0] not in NOT_HERE and "cuda" not in argv


def test_readme_has_a_python_example():
    assert any("StreamSession" in block for block in python_blocks())


def test_readme_command_lines_cover_the_main_commands():
    ran = {argv[0] for argv in command_lines() if runnable(argv)}
    assert {"data", "narrate", "render", "eval", "train"} <= ran
    assert {argv[0] for argv in command_lines()} >= {"demo", "serve", "download"}  # shown, run elsewhere


def test_readme_command_lines_run(tmp_path):
    pytest.importorskip("gguf")
    (tmp_path / "conversation.json").write_text(json.dumps(CONVERSATION))
    for argv in filter(runnable, command_lines()):
        result = subprocess.run(
            [sys.executable, "-m", "videollm_online.apps.cli", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"videollm-online {shlex.join(argv)}\n{result.stderr[-2000:]}"
        if argv[0] == "narrate":
            assert "[10.0s] User: How many objects are there?" in result.stdout
            assert re.search(r"\[10\.0s\] Assistant: There ", result.stdout), result.stdout
    assert (tmp_path / "narrated.mp4").stat().st_size > 0
    assert (tmp_path / "runs" / "demo" / "final").is_dir()
    assert json.loads((tmp_path / "metrics.json").read_text())
    # The checkpoint example loads what `train` above wrote and saves it again (pushing needs the network).
    (block,) = [b for b in python_blocks() if "save_pretrained" in b]
    local = "\n".join(line for line in block.splitlines() if "push_to_hub" not in line)
    subprocess.run([sys.executable, "-c", local], cwd=tmp_path, check=True, timeout=300)
    assert (tmp_path / "my-checkpoint" / "README.md").read_text().startswith("---")


def test_readme_python_example_runs(make_clip, tmp_path, monkeypatch, capsys):
    pytest.importorskip("gguf")
    make_clip("clip.mp4", frames=40, fps=10, size=(128, 96))  # 4 s; the example asks its question at 3 s
    monkeypatch.chdir(tmp_path)
    (block,) = [b for b in python_blocks() if "StreamSession" in b]
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert "[3.0s] user: What is on the table?" in printed
    assert any(line.startswith("[3.0s] assistant: ") for line in printed)
