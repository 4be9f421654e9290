"""The OpenAI-compatible routes driven by the official `openai` client against a real server on loopback: models,
a streamed chat completion over a real video (uploaded as a data URL, or read from an allowed directory), and the
refusals (paths outside the allowed directories, traversal, symlinks, URLs, unknown models, bad tokens, big bodies).
"""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.request

import pytest
from api_helpers import start_server

openai = pytest.importorskip("openai")


def write_clip(path, frames: int = 30, fps: int = 10):
    """A small H.264 clip whose frames change (a moving bar over a gradient)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(frames):
            pixels = np.zeros((64, 96, 3), np.uint8)
            pixels[..., 0] = np.arange(96, dtype=np.uint8)[None] * 2
            pixels[:, (index * 3) % 96 : (index * 3) % 96 + 8] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return path


def video_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def data_url(path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()


def ask(question: str | None, url: str) -> list[dict]:
    content = ([{"type": "text", "text": question}] if question else []) + [video_part(url)]
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory):
    """allowed/clip.mp4 (3 s at 10 fps), and secret.mp4 beside the allowed directory."""
    root = tmp_path_factory.mktemp("videos")
    (root / "allowed").mkdir()
    clip = write_clip(root / "allowed" / "clip.mp4", frames=30, fps=10)
    secret = root / "secret.mp4"
    secret.write_bytes(clip.read_bytes())
    os.symlink(secret, root / "allowed" / "link.mp4")  # inside by name, outside in fact
    return root


@pytest.fixture(scope="module")
def talkative():
    """A tiny random model whose turns are not empty (seed 4 of `make_decisive`: its eos does not come first)."""
    from tiny_models import make_decisive, tiny_model

    model, template = tiny_model()
    make_decisive(model, template, seed=4)
    return model, template


@pytest.fixture(scope="module")
def compat_server(talkative, clip_dirs):
    with start_server(*talkative, allowed_video_dirs=(str(clip_dirs / "allowed"),)) as running:
        yield running


def frame_times(path) -> list[float]:
    """The times of the frames the server watches in a clip (2 fps, the tiny model's rate)."""
    from videollm_online.video import open_video

    with open_video(path, fps=2, resolution=32) as stream:
        return [frame.time for frame in stream]


def client_for(server, api_key: str = "unused", **options) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=120, **options)


def test_models(compat_server):
    models = client_for(compat_server).models.list()
    assert [(model.id, model.object, model.owned_by) for model in models.data] == [("tiny", "model", "videollm-online")]


def test_streamed_and_whole_completions_agree(compat_server, clip_dirs):
    """Threshold 1: the model speaks after every frame, so each frame (3 s at 2 fps) gives a turn; streamed chunk
    by chunk, the content is the same as the whole completion's, and the question's answer is at its time."""
    client = client_for(compat_server)
    messages = ask("What is moving?", data_url(clip_dirs / "allowed" / "clip.mp4"))
    options = {
        "model": "tiny",
        "messages": messages,
        "max_tokens": 4,
        "extra_body": {"threshold": 1.0, "question_time": 1.2},
    }
    chunks = list(client.chat.completions.create(stream=True, **options))
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    times = frame_times(clip_dirs / "allowed" / "clip.mp4")
    assert len(times) >= 6
    assert len(chunks) == 2 + len(times) + 1  # the role chunk, a chunk per turn (frames and the answer), the end

    whole = client.chat.completions.create(**options)
    assert whole.choices[0].finish_reason == "stop" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == streamed
    turns = whole.model_extra["turns"]
    assert whole.model_extra["frames"] == len(times)
    assert streamed.splitlines() == [f"[{turn['video_time']:.1f}s] {turn['text']}" for turn in turns]
    assert all(turn["text"] for turn in turns)
    assert [turn["video_time"] for turn in turns] == sorted([*times, 1.2])  # narration at every frame, the answer


def test_a_path_under_an_allowed_directory(compat_server, clip_dirs):
    url = (clip_dirs / "allowed" / "clip.mp4").as_uri()  # file:///...
    reply = client_for(compat_server).chat.completions.create(
        model="tiny", messages=ask(None, url), extra_body={"threshold": 1.0}, max_tokens=3
    )
    assert reply.model_extra["frames"] == len(frame_times(clip_dirs / "allowed" / "clip.mp4"))
    assert reply.choices[0].message.content.startswith("[0.0s] ")
    same = client_for(compat_server).chat.completions.create(
        model="tiny",
        messages=ask(None, str(clip_dirs / "allowed" / "clip.mp4")),
        extra_body={"threshold": 1.0},
        max_tokens=3,
    )
    assert same.choices[0].message.content == reply.choices[0].message.content


@pytest.mark.parametrize(
    ("where", "status", "code"),
    [
        ("secret.mp4", 403, "video_path_not_allowed"),  # beside the allowed directory
        ("allowed/../secret.mp4", 403, "video_path_not_allowed"),  # traversal
        ("allowed/link.mp4", 403, "video_path_not_allowed"),  # a symlink out of it
        ("/etc/passwd", 403, "video_path_not_allowed"),
        ("allowed/missing.mp4", 404, "video_not_found"),
        ("relative/clip.mp4", 400, "invalid_video_url"),
        ("https://example.com/clip.mp4", 400, "invalid_video_url"),
        ("data:video/mp4;base64,@@@", 400, "invalid_video_url"),
    ],
)
def test_refused_videos(compat_server, clip_dirs, where, status, code):
    if not where.startswith(("/", "relative", "https:", "data:")):
        where = str(clip_dirs) + "/" + where  # an absolute path, `..` kept as written
    with pytest.raises(openai.APIStatusError) as caught:
        client_for(compat_server).chat.completions.create(model="tiny", messages=ask("Hi?", where), stream=True)
    assert caught.value.status_code == status
    error = caught.value.body  # the OpenAI error shape: {"error": {"message", "type", "param", "code"}}
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]
    assert str(clip_dirs / "allowed") not in error["message"] or where.startswith(str(clip_dirs))


def test_an_unreadable_upload_and_bad_requests(compat_server, clip_dirs):
    client = client_for(compat_server)
    not_a_video = "data:video/mp4;base64," + base64.b64encode(b"this is not a video").decode()
    with pytest.raises(openai.BadRequestError, match="cannot be read"):
        client.chat.completions.create(model="tiny", messages=ask("Hi?", not_a_video))
    with pytest.raises(openai.NotFoundError, match="does not exist") as caught:
        client.chat.completions.create(model="gpt-4o", messages=ask("Hi?", not_a_video))
    assert caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="exactly one video_url"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi?"}])
    with pytest.raises(openai.BadRequestError, match="question_time"):
        client.chat.completions.create(
            model="tiny", messages=ask("Hi?", not_a_video), extra_body={"question_time": -1.0}
        )
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=ask("Hi?", not_a_video), max_tokens=0)


def test_token_body_limit_and_no_local_files(talkative, clip_dirs):
    clip = clip_dirs / "allowed" / "clip.mp4"
    with start_server(*talkative, token="s3cret", max_upload_bytes=4096) as server:
        with pytest.raises(openai.AuthenticationError):
            client_for(server, api_key="wrong").models.list()
        client = client_for(server, api_key="s3cret")
        assert client.models.list().data[0].id == "tiny"
        with pytest.raises(openai.APIStatusError) as caught:  # the clip is ~20 kB: over 4096 bytes
            client.chat.completions.create(model="tiny", messages=ask("Hi?", data_url(clip)))
        assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"
        with pytest.raises(openai.PermissionDeniedError, match="reads no local files"):  # no --allowed-video-dir
            client.chat.completions.create(model="tiny", messages=ask("Hi?", str(clip)))


def test_openapi_lists_the_routes(compat_server):
    with urllib.request.urlopen(f"{compat_server.url}/openapi.json", timeout=30) as response:
        document = json.load(response)
    assert {"/health", "/metrics", "/v1/sessions", "/v1/models", "/v1/chat/completions"} <= set(document["paths"])
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/ChatCompletionRequest"
    request = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages", "stream", "question_time"} <= set(request["properties"])
    assert "VideoPart" in document["components"]["schemas"]
    # The WebSocket is not an OpenAPI route; its messages are there as components, for /docs readers and generators.
    realtime = document["components"]["schemas"]["RealtimeClientMessage"]
    assert set(realtime["discriminator"]["mapping"]) == {
        "session.update",
        "conversation.item.create",
        "session.finish",
        "response.create",
    }
    assert "ResponseDone" in document["components"]["schemas"]
    with urllib.request.urlopen(f"{compat_server.url}/docs", timeout=30) as response:
        assert response.status == 200 and b"/openapi.json" in response.read()


def test_the_bundled_model_narrates_a_clip_for_the_openai_client(bundled, tmp_path):
    """The bundled model over a synthetic-world clip: a streamed completion with a question at 1 s."""
    from videollm_online.data.world import WorldConfig, write_world

    write_world(tmp_path, 1, seed=3, config=WorldConfig(fps=4, min_duration=4, max_duration=4), progress=False)
    model, template, name = bundled
    with start_server(model, template, name) as server:
        client = client_for(server)
        served = client.models.list().data[0].id
        assert "/" not in served  # the checkpoint's path is not shown, only its name
        stream = client.chat.completions.create(
            model=served,
            stream=True,
            max_tokens=24,
            extra_body={"question_time": 1.0},
            messages=ask("How many objects are there?", data_url(tmp_path / "videos" / "000000.mp4")),
        )
        content = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    lines = content.splitlines()
    assert lines and all(line.startswith("[") and "s] " in line for line in lines), content
    answer = [line for line in lines if line.startswith("[1.0s] ")]
    assert answer and len(answer[0]) > len("[1.0s] "), content


@pytest.mark.parametrize(("stream", "batched"), [(False, False), (True, False), (True, True)])
def test_a_client_that_leaves_frees_its_slot(talkative, tmp_path, stream, batched):
    """A long clip, a client that hangs up after a moment: the server stops the work, counts the completion as
    disconnected, and its one session slot serves the next request (on the batched worker, the model's one cache
    slot too)."""
    import contextlib
    import socket
    import time

    from test_prometheus_metrics import scrape

    from videollm_online.apps.server import ServerConfig, create_app
    from videollm_online.apps.server.batched import BatchedWorker
    from videollm_online.apps.server.run import BackgroundServer

    clip = write_clip(tmp_path / "long.mp4", frames=600, fps=10)  # 60 s: 120 frames, each followed by a turn
    body = json.dumps(
        {"model": "tiny", "messages": ask(None, data_url(clip)), "stream": stream, "max_tokens": 8, "threshold": 1.0}
    ).encode()
    with contextlib.ExitStack() as stack:
        if batched:
            worker = BatchedWorker(*talkative, "tiny", max_sessions=1, cache_tokens=4096)
            stack.callback(worker.shutdown)
            config = ServerConfig(port=0, max_sessions=1)
            server = stack.enter_context(BackgroundServer(create_app(worker, config=config), config))
        else:
            server = stack.enter_context(start_server(*talkative, max_sessions=1))
        with socket.create_connection((server.config.host, server.port), timeout=30) as connection:
            connection.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.5)
        key = ("videollm_chat_completions_total", (("outcome", "disconnected"),))
        deadline = time.monotonic() + 60
        while scrape(server.url).get(key, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        metrics = scrape(server.url)
        assert metrics.get(key) == 1 and ("videollm_chat_completions_total", (("outcome", "ok"),)) not in metrics
        assert metrics[("videollm_chat_completion_frames_total", ())] < 120  # stopped early
        short = write_clip(tmp_path / "short.mp4", frames=10, fps=10)
        reply = client_for(server).chat.completions.create(model="tiny", messages=ask("Hi?", data_url(short)))
        assert reply.choices[0].finish_reason == "stop"


def test_completions_and_sessions_share_the_session_limit(talkative, tmp_path):
    """A running completion holds one of `max_sessions` slots: with one slot, neither a WebSocket session nor a
    second completion gets in until it ends."""
    from api_helpers import run

    from videollm_online.apps.client import ApiError, AsyncStreamClient

    clip = write_clip(tmp_path / "long.mp4", frames=600, fps=10)
    with start_server(*talkative, max_sessions=1) as server:
        client = client_for(server)
        options = {
            "model": "tiny",
            "messages": ask(None, data_url(clip)),
            "max_tokens": 8,
            "extra_body": {"threshold": 1.0},
        }
        with client.chat.completions.create(stream=True, **options) as stream:
            next(iter(stream))  # the completion is running
            with pytest.raises(openai.RateLimitError, match="limit of 1 sessions") as caught:
                client.chat.completions.create(**options)
            assert caught.value.body["code"] == "session_limit"
            with pytest.raises(ApiError, match="limit of 1 sessions"):
                run(AsyncStreamClient(server.ws_url).connect())


def test_serve_refuses_a_missing_allowed_directory(tmp_path, capsys):
    from videollm_online.apps.cli import main

    assert main(["serve", "--allowed-video-dir", str(tmp_path / "nope"), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "is not a directory" in error and "nope" in error


def test_completions_on_the_batched_worker_say_what_the_serial_one_says(talkative, clip_dirs):
    """Two completions at once on the fast engine (one forward for both per step) give the serial worker's text."""
    from concurrent.futures import ThreadPoolExecutor

    from videollm_online.apps.server import ServerConfig, create_app
    from videollm_online.apps.server.batched import BatchedWorker
    from videollm_online.apps.server.run import BackgroundServer

    model, template = talkative
    options = {
        "model": "tiny",
        "messages": ask("What is moving?", data_url(clip_dirs / "allowed" / "clip.mp4")),
        "max_tokens": 4,
        "extra_body": {"threshold": 1.0, "question_time": 1.2},
    }
    with start_server(model, template) as server:
        serial = client_for(server).chat.completions.create(**options).choices[0].message.content
    worker = BatchedWorker(model, template, "tiny", max_sessions=2, cache_tokens=4096)
    config = ServerConfig(port=0)
    try:
        with BackgroundServer(create_app(worker, config=config), config) as server:

            def complete(_: int) -> str:
                return client_for(server).chat.completions.create(**options).choices[0].message.content

            with ThreadPoolExecutor(2) as pool:
                batched = list(pool.map(complete, range(2)))
    finally:
        worker.shutdown()
    assert serial and batched == [serial, serial]


def test_the_openai_example_streams_the_turns(compat_server, clip_dirs):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "openai_chat_completion.py"
    clip = clip_dirs / "allowed" / "clip.mp4"
    result = subprocess.run(
        [
            sys.executable,
            str(example),
            str(clip),
            "--url",
            compat_server.url,
            "--threshold",
            "1",
            "--ask",
            "1.2:What is moving?",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(frame_times(clip)) + 1 and "[1.2s] " in result.stdout  # a turn a frame, the answer
    assert re.search(r"^tiny: \d+ turns in [\d.]+ s \(finish_reason: stop\)$", result.stderr, re.MULTILINE)
    by_path = subprocess.run(
        [
            sys.executable,
            str(example),
            str(clip),
            "--url",
            compat_server.url,
            "--threshold",
            "1",
            "--ask",
            "1.2:What is moving?",
            "--server-path",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert by_path.returncode == 0 and by_path.stdout == result.stdout, by_path.stderr
    refused = subprocess.run(
        [sys.executable, str(example), str(clip_dirs / "secret.mp4"), "--url", compat_server.url, "--server-path"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert refused.returncode == 2 and "HTTP 403" in refused.stderr and "Traceback" not in refused.stderr
