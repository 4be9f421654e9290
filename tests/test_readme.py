"""The README's Python example runs as written, against the bundled default model."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_python_example():
    assert any("StreamSession" in block for block in python_blocks())


def test_readme_python_example_runs(make_clip, tmp_path, monkeypatch, capsys):
    pytest.importorskip("gguf")
    make_clip("clip.mp4", frames=40, fps=10, size=(128, 96))  # 4 s; the example asks its question at 3 s
    monkeypatch.chdir(tmp_path)
    (block,) = [b for b in python_blocks() if "StreamSession" in b]
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert "[3.0s] user: What is on the table?" in printed
    assert any(line.startswith("[3.0s] assistant: ") for line in printed)
