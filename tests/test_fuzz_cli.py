"""Bad command lines, as a careless or hostile user types them (issue 29's list): each gets one clear error line
and exit 2 (or, where the issue allows it, a correct result), no traceback, no partial output, and its inputs are
left byte for byte as they were.

Each case builds its small bad input in a fresh copy of a shared input folder (a 2 s clip, a tiny checkpoint, a
history, a one-video synthetic world, preprocessed frames and training rows). Most run `cli.main` in this process
(a subprocess costs ~2 s of imports each); the cases marked `sub` run `python -m videollm_online.apps.cli` for real, one
or more per command. Checks that must fire before any weights load do, which keeps the whole file fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clips import write_clip
from videollm_online.apps.cli import main

ERROR_PREFIX = "videollm-online"


# ---------------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def template_inputs(tmp_path_factory, tiny_checkpoint) -> Path:
    """The inputs every case starts from, made once; each case works on its own copy."""
    root = tmp_path_factory.mktemp("fuzz-inputs")
    write_clip(root / "clip.mp4", size=(64, 48), frames=10, fps=5)  # 2 s
    (root / "videos").mkdir()
    shutil.copy(root / "clip.mp4", root / "videos" / "v.mp4")
    history = {
        "video_path": str(root / "clip.mp4"),
        "frame_fps": 2.0,
        "model": "tiny",
        "conversation": [
            {"role": "user", "content": "What now?", "time": 0.0},
            {"role": "assistant", "content": "A pattern moves.", "time": 0.5},
        ],
    }
    (root / "hist.json").write_text(json.dumps(history))
    # a one-video synthetic world (for eval), as `data synth-world` writes it
    assert (
        main(
            [
                "data",
                "synth-world",
                "--out",
                str(root / "world"),
                "--videos",
                "1",
                "--seed",
                "2",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "--min-duration",
                "4",
                "--max-duration",
                "6",
                "-q",
            ]
        )
        == 0
    )
    # preprocessed frames: 6 frames of video `v` at the tiny preset's 32 px, and at 192 px
    for name, size in (("frames", 32), ("frames192", 192)):
        (root / name).mkdir()
        pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, size, size, 3), dtype=np.uint8))
        save_file(
            {"frames": pixels},
            root / name / "v.safetensors",
            metadata={"fps": "2", "resolution": str(size), "source": "v.mp4"},
        )
    row = {
        "video": "v",
        "start_frame": 0,
        "conversation": [
            {"role": "stream", "num_frames": 2, "learn": True},
            {"role": "assistant", "content": "Hello.", "learn": True},
        ],
    }
    (root / "rows.jsonl").write_text(json.dumps(row) + "\n")
    (root / "conv.json").write_text(json.dumps(row["conversation"]))
    (root / "ckpt").symlink_to(tiny_checkpoint)
    return root


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# ---------------------------------------------------------------------- the cases
@dataclass
class Case:
    id: str
    argv: str
    """Arguments, split on spaces; {in}: the case's input folder, {out}: an empty output folder, {ckpt}: the tiny
    checkpoint."""
    message: str | None = None
    """A piece of the error line (case-insensitive); None with `ok`: the command must succeed."""
    setup: Callable[[Path], None] | None = None
    """Builds the case's bad input in {in}."""
    ok: Callable[[Path, Path, str], None] | None = None
    """Where a correct result is fine: checks it (in, out, stdout)."""
    absent: list[str] = field(default_factory=list)
    """Paths (formatted like argv) that must not exist afterwards: no partial output."""
    sub: bool = False
    """Run as a real subprocess (`python -m videollm_online.apps.cli`)."""
    skip_if: Callable[[], str | None] | None = None


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)

    return make


def mkdir(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).mkdir(parents=True, exist_ok=True)


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        for step in steps:
            step(root)

    return make


def rows(*items: dict) -> Callable[[Path], None]:
    return write("bad.jsonl", "".join(json.dumps(item) + "\n" for item in items))


def stream_row(**changes) -> dict:
    row = {
        "video": "v",
        "start_frame": 0,
        "conversation": [
            {"role": "stream", "num_frames": 2, "learn": True},
            {"role": "assistant", "content": "Hello.", "learn": True},
        ],
    }
    row.update(changes)
    return row


def history_with(text: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        data = json.loads((root / "hist.json").read_text())
        data["conversation"][-1]["content"] = text
        (root / "long.json").write_text(json.dumps(data))

    return make


def corrupt_annotation(root: Path) -> None:
    annotation = next((root / "world" / "annotations").glob("*.json"))
    annotation.write_text(annotation.read_text()[:40])


def with_cuda() -> str | None:
    return "a CUDA device is here" if torch.cuda.is_available() else None


def no_video9() -> str | None:
    return "/dev/video9 exists here" if Path("/dev/video9").exists() else None


NARRATE = "narrate {in}/clip.mp4 --model {ckpt} -q --max-new-tokens 4"
RENDER = "render {in}/hist.json -q"
EVAL = "eval --data-root {in}/world --model {ckpt} --limit 1 -q"
CONVERT = "data convert --dataset robustness --anno-root {in}"
SYNTH = "data synth-world --videos 1 --size 64 --video-fps 2 --min-duration 3 --max-duration 4 -q"
PREPROCESS = "data preprocess {in}/videos --fps 2 --resolution 32 -q"
TRAIN = "train --data {in}/rows.jsonl --frames {in}/frames --model tiny --max-steps 1 --batch-size 1"
TOKENIZE = "data tokenize {in}/conv.json --preset tiny"

# Unwritable outputs: an existing directory where a file goes (or a file where a directory goes), a path under a
# file, and /proc. All are refused before any work starts.
UNWRITABLE = []
for command, option, kind, base in [
    ("narrate", "-o", "file", NARRATE),
    ("render", "-o", "file", RENDER),
    ("eval", "-o", "file", EVAL),
    ("convert", "--out", "file", CONVERT),
    ("synth-world", "--out", "dir", SYNTH),
    ("preprocess", "--out", "dir", PREPROCESS),
    ("train", "--output-dir", "dir", TRAIN),
]:
    suffix = ".mp4" if command == "render" else ".json"
    wrong_kind = (
        (f"{{out}}/taken{suffix}", mkdir("../out/taken" + suffix))
        if kind == "file"
        else ("{out}/taken", write("../out/taken", "a file, not a directory"))
    )
    for label, path, setup, message in [
        (
            "existing-" + ("dir" if kind == "file" else "file"),
            *wrong_kind,
            "is a directory" if kind == "file" else "is a file",
        ),
        ("under-a-file", f"{{in}}/clip.mp4/sub/x{suffix}", None, "clip.mp4 is a file"),
        ("proc", f"/proc/x{suffix}", None, "not writable"),
    ]:
        UNWRITABLE.append(
            Case(
                f"{command}-out-{label}",
                f"{base} {option} {path}",
                message,
                setup=setup,
                sub=command in ("eval", "train") and label == "proc",
            )
        )

CASES = UNWRITABLE + [
    # narrate: numbers out of range, a device that is not here
    Case("narrate-fps-inf", NARRATE + " --fps inf", "fps"),
    Case("narrate-fps-nan", NARRATE + " --fps nan", "fps", sub=True),
    Case("narrate-fps-tiny", NARRATE + " --fps 1e-9", "fps"),
    Case("narrate-fps-huge", NARRATE + " --fps 1e9", "fps"),
    Case("narrate-max-new-tokens-0", NARRATE + " --max-new-tokens 0", "max-new-tokens"),
    Case("narrate-max-new-tokens-neg", NARRATE + " --max-new-tokens -5", "max-new-tokens"),
    Case("narrate-device-cuda", NARRATE + " --device cuda", "cuda", skip_if=with_cuda),
    Case("narrate-query-at-nan", NARRATE + " --query-at nan:hi -o {out}/h.json", "query-at", absent=["{out}/h.json"]),
    Case("narrate-query-at-inf", NARRATE + " --query-at inf:hi -o {out}/h.json", "query-at", absent=["{out}/h.json"]),
    Case(
        "more-narrate-query-not-utf8", NARRATE + " --query caf\udce9 -o {out}/h.json", "utf-8", absent=["{out}/h.json"]
    ),  # found while writing these tests, beyond the list
    Case("narrate-output-is-input", NARRATE + " -o {in}/clip.mp4", "same file"),
    Case("narrate-speech-dir-file", NARRATE + " --speech-dir {in}/hist.json", "speech-dir"),
    Case(
        "narrate-dev-video9",
        "narrate /dev/video9 --model {ckpt} -q -o {out}/h.json",
        "/dev/video9",
        absent=["{out}/h.json"],
        skip_if=no_video9,
    ),
    Case(
        "narrate-unreachable-url",
        "narrate http://127.0.0.1:9/x.mp4 --model {ckpt} -q -o {out}/h.json",
        "127.0.0.1",
        absent=["{out}/h.json"],
    ),
    Case(
        "narrate-cache-tokens-1",
        NARRATE + " --cache-tokens 1 -o {out}/h.json",
        "cache-tokens",
        absent=["{out}/h.json"],
        sub=True,
    ),
    # render
    Case("render-video-is-output", RENDER + " --video {in}/clip.mp4 -o {in}/clip.mp4", "same file"),
    Case(
        "render-history-is-output",
        "render {in}/hist.json --video {in}/clip.mp4 -o {in}/hist.json -q",
        "same file",
        sub=True,
    ),
    Case("render-panel-size-huge", RENDER + " --panel-size 1000000 -o {out}/r.mp4", "panel", absent=["{out}/r.mp4"]),
    Case(
        "render-one-long-word",
        "render {in}/long.json -q -o {out}/r.mp4",
        setup=history_with("x" * 4000),
        ok=lambda i, o, out: _is_video(o / "r.mp4"),
    ),
    # data tokenize
    Case("tokenize-directory", "data tokenize {in}/videos --preset tiny", "videos"),
    Case("tokenize-binary", "data tokenize {in}/clip.mp4 --preset tiny", "clip.mp4", sub=True),
    Case(
        "tokenize-list-of-ints",
        "data tokenize {in}/bad.json --preset tiny",
        "bad.json",
        setup=write("bad.json", "[1, 2]"),
    ),
    Case("tokenize-bad-tokenizer-missing", TOKENIZE + " --tokenizer {in}/no-such-tokenizer", "tokenizer"),
    Case("tokenize-bad-tokenizer-file", TOKENIZE + " --tokenizer {in}/hist.json", "tokenizer"),
    Case("tokenize-preset-nosuch", "data tokenize {in}/conv.json --preset nosuch", "nosuch"),
    Case(
        "tokenize-num-frames-huge",
        "data tokenize {in}/bad.json --preset tiny",
        "num_frames",
        setup=write("bad.json", json.dumps([{"role": "stream", "num_frames": 1_000_000_000}])),
    ),
    Case(
        "tokenize-content-null",
        "data tokenize {in}/bad.json --preset tiny",
        "content",
        setup=write("bad.json", json.dumps([{"role": "user", "content": None}])),
    ),
    # data synth-world
    Case("synth-world-stream-fps-0", SYNTH + " --out {out}/w --stream-fps 0", "stream-fps", absent=["{out}/w"]),
    Case(
        "synth-world-stream-fps-nan",
        SYNTH + " --out {out}/w --stream-fps nan",
        "stream-fps",
        absent=["{out}/w"],
        sub=True,
    ),
    # data convert
    Case(
        "convert-wrong-shape",
        "data convert --dataset ego4d-narration --anno-root {in}/anno --out {out}/o.jsonl",
        "all_narrations_redacted.json",
        setup=write("anno/all_narrations_redacted.json", "[1, 2]"),
        absent=["{out}/o.jsonl"],
        sub=True,
    ),
    Case("convert-fps-nan", CONVERT + " --out {out}/o.jsonl --fps nan", "fps", absent=["{out}/o.jsonl"]),
    Case(
        "convert-robustness-frames-file",
        CONVERT + " --out {out}/o.jsonl --frames {in}/hist.json",
        "hist.json",
        absent=["{out}/o.jsonl"],
    ),
    # data preprocess
    Case(
        "preprocess-preset-nosuch",
        "data preprocess {in}/videos --out {out}/f --preset nosuch",
        "nosuch",
        absent=["{out}/f"],
    ),
    Case(
        "preprocess-fps-nan",
        "data preprocess {in}/videos --out {out}/f --fps nan --resolution 32",
        "fps",
        absent=["{out}/f"],
    ),
    Case(
        "preprocess-fps-huge",
        "data preprocess {in}/videos --out {out}/f --fps 1e9 --resolution 32",
        "fps",
        absent=["{out}/f"],
    ),
    Case(
        "preprocess-resolution-negative",
        "data preprocess {in}/videos --out {out}/f --fps 2 --resolution -64",
        "resolution",
        absent=["{out}/f"],
    ),
    Case(
        "preprocess-resolution-huge",
        "data preprocess {in}/videos --out {out}/f --fps 2 --resolution 100000",
        "resolution",
        absent=["{out}/f"],
        sub=True,
    ),
    # eval
    Case(
        "eval-wrong-shaped-conversations",
        EVAL,
        "conversations.jsonl",
        setup=write("world/conversations.jsonl", '{"video": 5, "conversation": "nope"}\n'),
    ),
    Case("eval-corrupt-annotation", EVAL, "annotations", setup=corrupt_annotation),
    Case("eval-empty-conversations", EVAL, "conversations.jsonl", setup=write("world/conversations.jsonl", "")),
    Case("eval-window-nan", EVAL + " --window nan", "window"),
    # train
    Case("train-data-directory", TRAIN + " --output-dir {out}/t --data {in}/videos", "videos", absent=["{out}/t"]),
    Case(
        "train-data-empty",
        TRAIN + " --output-dir {out}/t --data {in}/bad.jsonl",
        "bad.jsonl",
        setup=write("bad.jsonl", ""),
        absent=["{out}/t"],
    ),
    Case(
        "train-rows-empty-objects",
        TRAIN + " --output-dir {out}/t --data {in}/bad.jsonl",
        "bad.jsonl:1",
        setup=rows({}, {}),
        absent=["{out}/t"],
    ),
    Case(
        "train-unknown-video",
        TRAIN + " --output-dir {out}/t --data {in}/bad.jsonl",
        "nosuch",
        setup=rows(stream_row(video="nosuch")),
        absent=["{out}/t"],
    ),
    Case(
        "train-too-many-frames",
        TRAIN + " --output-dir {out}/t --data {in}/bad.jsonl",
        "frames",
        setup=rows(stream_row(conversation=[{"role": "stream", "num_frames": 1_000_000_000, "learn": True}])),
        absent=["{out}/t"],
    ),
    Case(
        "train-frames-empty-dir",
        TRAIN + " --output-dir {out}/t --frames {in}/empty",
        "empty",
        setup=mkdir("empty"),
        absent=["{out}/t"],
    ),
    Case(
        "train-learning-rate-nan", TRAIN + " --output-dir {out}/t --learning-rate nan", "learning", absent=["{out}/t"]
    ),
    Case("train-max-time-nan", TRAIN + " --output-dir {out}/t --max-time-minutes nan", "max_time", absent=["{out}/t"]),
    Case(
        "train-start-frame-negative",
        TRAIN + " --output-dir {out}/t --data {in}/bad.jsonl",
        "start_frame",
        setup=rows(stream_row(start_frame=-5)),
        absent=["{out}/t"],
    ),
    Case(
        "train-frames-wrong-size-for-preset",
        "train --data {in}/rows.jsonl --frames {in}/frames192 --model demo --max-steps 1 --output-dir {out}/t",
        "192",
        absent=["{out}/t"],
        sub=True,
    ),
]


def _is_video(path: Path) -> None:
    import av

    with av.open(str(path)) as container:
        assert container.streams.video and container.streams.video[0].frames > 0


def run(argv: list[str], sub: bool, capsys) -> tuple[int, str, str]:
    if sub:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "videollm_online.apps.cli", *argv],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        return done.returncode, done.stdout, done.stderr
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_command_line(case: Case, template_inputs: Path, tmp_path: Path, capsys) -> None:
    if case.skip_if and (reason := case.skip_if()):
        pytest.skip(reason)
    inputs, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(template_inputs, inputs, symlinks=True)
    out.mkdir()
    if case.setup:
        case.setup(inputs)
    before = file_hashes(inputs)
    names = {"in": inputs, "out": out, "ckpt": template_inputs / "ckpt"}
    argv = [part.format(**names) for part in case.argv.split()]
    code, stdout, stderr = run(argv, case.sub, capsys)

    assert "Traceback" not in stderr, stderr
    if case.ok is not None:
        assert code == 0, stderr
        case.ok(inputs, out, stdout)
    else:
        assert code == 2, (code, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX) and ": error:" in line]
        assert len(errors) == 1, stderr
        assert stderr.strip().splitlines()[-1] == errors[0], stderr  # the error is the last word
        assert len(stderr.strip().splitlines()) <= 3, stderr  # a warning at most beside it, no usage block
        assert case.message.lower().replace("_", "-") in errors[0].lower().replace("_", "-"), errors[0]
        assert stdout == "", stdout
    for path in case.absent:
        assert not Path(path.format(**names)).exists(), f"{path} left behind"
    assert file_hashes(inputs) == before, "an input file was changed"
    if case.ok is None:  # nothing new in the output folder either (what a case set up there stays)
        assert sorted(p.name for p in out.iterdir()) in ([], ["taken"], ["taken.json"], ["taken.mp4"]), list(
            out.iterdir()
        )


# ---------------------------------------------------------------------- the same checks through the Python API
def _train_config(**changes):
    from videollm_online.train.trainer import TrainConfig

    return TrainConfig(data="d.jsonl", frames="f", output_dir="o", **changes)


def _live_config(**changes):
    from videollm_online.core.config import LiveConfig

    return LiveConfig.from_name("tiny", **changes)


def _render_config(**changes):
    from videollm_online.apps.render import RenderConfig

    return RenderConfig(**changes)


def _convert_options(**changes):
    from videollm_online.data.datasets import ConvertOptions

    return ConvertOptions(anno_root=".", **changes)


def _world_conversations(**changes):
    from videollm_online.data.streaming import world_conversations

    return world_conversations([], **changes)


@pytest.mark.parametrize(
    "build, changes",
    [
        (_live_config, {"frame_fps": float("nan")}),
        (_live_config, {"frame_resolution": 10**6}),
        (_train_config, {"learning_rate": float("nan")}),
        (_train_config, {"max_time_minutes": float("inf")}),
        (_train_config, {"warmup_ratio": -0.5}),
        (_render_config, {"panel_size": 1_000_000}),
        (_convert_options, {"fps": 1e9}),
        (_world_conversations, {"fps": float("nan")}),
    ],
)
def test_typed_configs_refuse_what_the_command_line_refuses(build, changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        build(**changes)


def test_a_tokenized_null_content_is_refused_not_read_as_none():
    from videollm_online.core.config import LiveConfig
    from videollm_online.core.text import StreamTemplate, build_tiny_tokenizer

    template = StreamTemplate(build_tiny_tokenizer(), LiveConfig.from_name("tiny"))
    with pytest.raises(ValueError, match="string content"):
        template.tokenize([{"role": "user", "content": None}])


def test_a_4000_character_word_wraps_by_characters():
    from videollm_online.apps.render import ConversationPanel

    panel = ConversationPanel(300, 200, 14)
    lines = panel.wrap("x" * 4000)
    assert "".join(lines) == "x" * 4000 and len(lines) > 10
    limit = panel.width - 2 * panel.margin
    assert all(panel.font.getlength(line) <= limit for line in lines)
    assert all(panel.font.getlength(line + "x") > limit for line in lines[:-1])  # each line as full as it can be


# ---------------------------------------------------------------------- the speech thread
def _tts_or_skip():
    from videollm_online.apps import speech

    if not speech.tts_available():
        pytest.skip("the tts extra is not installed")
    return speech


def test_a_failing_speech_thread_says_so_and_takes_no_more(tmp_path):
    speech = _tts_or_skip()
    blocked = tmp_path / "a-file"
    blocked.write_text("WAV files cannot go under a file")
    queue = speech.SpeechQueue(play=False, wav_dir=blocked)
    assert queue.say("Hello there.", 0.5)
    queue.close()
    assert isinstance(queue.error, OSError)
    assert not queue.say("And again.", 1.0)
    assert (
        queue.describe().startswith("speech: failed after 0 responses spoken")
        and "responses spoken," not in queue.describe()
    )


def test_narrate_ends_with_one_line_when_the_speech_thread_fails(template_inputs, tmp_path, capsys):
    _tts_or_skip()
    video = next((template_inputs / "world" / "videos").glob("*.mp4"))  # the bundled model narrates a world video
    wavs = tmp_path / "wavs"
    for index in range(4):  # each WAV the thread could write is taken by a directory: writing the first one fails
        for half_seconds in range(14):
            (wavs / f"turn-{index:04d}-{half_seconds / 2:.1f}s.wav").mkdir(parents=True)
    code = main(["narrate", str(video), "--speech-dir", str(wavs), "-o", str(tmp_path / "h.json")])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("videollm-online: error: speech stopped after 0 responses"), err
    assert sum(": error:" in line for line in lines) == 1
    assert not any("responses spoken," in line for line in lines), err  # the summary does not claim speech
    assert json.loads((tmp_path / "h.json").read_text())["conversation"]  # what was said before is kept


def test_preprocess_in_which_every_video_fails_exits_non_zero(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    code = main(
        ["data", "preprocess", str(videos), "--out", str(tmp_path / "frames"), "--fps", "2", "--resolution", "32", "-q"]
    )
    err = capsys.readouterr().err
    assert code == 1 and "0 written" in err and "1 failed" in err and "Traceback" not in err
    assert not list((tmp_path / "frames").glob("*.safetensors"))


@pytest.mark.parametrize(
    "changes",
    [{"max_new_tokens": float("nan")}, {"max_new_tokens": 10**9}, {"max_new_tokens": 2.5}, {"threshold": float("nan")}],
)
def test_engine_config_refuses_what_no_session_can_run(changes):
    from videollm_online.engine import EngineConfig

    with pytest.raises(ValueError, match=next(iter(changes))):
        EngineConfig(**changes)
