"""What the server and the web demo give away: tokens and session secrets never reach the logs, responses carry no
absolute paths, the demo serves only its example files (not their directories) and bounds uploads. Real uvicorn
and a real Gradio app on loopback."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
import uuid

import pytest
from api_helpers import image_bytes, run, start_server

from videollm_online.apps.server import protocol as P


def fetch(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def test_tokens_and_secrets_never_reach_the_logs(tiny_decisive, capfd):
    token = "tok-" + uuid.uuid4().hex
    from videollm_online.apps.server import ServerConfig, create_app
    from videollm_online.apps.server.run import BackgroundServer

    config = ServerConfig(port=0, token=token)
    with BackgroundServer(create_app(*tiny_decisive, config=config), config, log_level="info") as server:

        async def session() -> str:
            from websockets.asyncio.client import connect

            async with connect(f"{server.ws_url}/v1/realtime?threshold=0&token={token}") as socket:
                created = json.loads(await socket.recv())
                await socket.send(P.pack_frame(0.0, image_bytes(0)))
                await socket.send(json.dumps({"type": P.FINISH}))
                async for _ in socket:
                    pass
                return created["session"]["secret"]

        secret = run(session())
        assert fetch(f"{server.url}/v1/sessions?token={token}&secret={secret}")[0] == 200
        assert fetch(f"{server.url}/metrics?token={token}")[0] == 200
        assert fetch(f"{server.url}/metrics?token=wrong-{token}")[0] == 401
        assert fetch(f"{server.url}/v1/sessions/x/events?secret={secret}&token={token}")[0] == 404
    out, err = capfd.readouterr()
    logged = out + err
    assert "/v1/sessions?token=REDACTED&secret=REDACTED" in logged  # the requests were logged, blanked
    assert '"WebSocket /v1/realtime?threshold=0&token=REDACTED"' in logged
    assert token not in logged and secret not in logged


def test_no_absolute_paths_in_responses(tiny_decisive):
    model, template = tiny_decisive
    with start_server(model, template, name="/home/someone/private/checkpoints/run-7") as server:
        status, health = fetch(f"{server.url}/health")
        assert status == 200 and json.loads(health)["model"] == "run-7"

        async def created() -> dict:
            from videollm_online.apps.client import AsyncStreamClient

            async with AsyncStreamClient(server.ws_url) as client:
                listed = fetch(f"{server.url}/v1/sessions?secret={client.secret}")[1]
                await client.finish()
                return {"session": client.session, "events": [e async for e in client.events()], "listed": listed}

        seen = run(created())
    assert seen["session"]["model"] == "run-7"
    assert "/home/someone" not in json.dumps(seen) + health


def write_mp4(path, frames: int = 10):
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(frames):
            pixels = np.full((48, 64, 3), index * 20, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def demo(tiny_decisive, tmp_path_factory):
    """The demo with one example video in a directory that also holds other files."""
    pytest.importorskip("gradio")
    from videollm_online.apps import webdemo
    from videollm_online.apps.server.worker import SerialWorker

    folder = tmp_path_factory.mktemp("examples")
    clip = write_mp4(folder / "clip.mp4")
    (folder / "notes.txt").write_text("a sibling file: not an example")
    (folder / "sub").mkdir()
    (folder / "sub" / "secret.txt").write_text("a file below the example's directory")
    worker = SerialWorker(*tiny_decisive, name=str(folder / "checkpoint"))
    app = webdemo.build_demo(worker, examples=[str(clip)])
    app.queue()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, url, _ = webdemo.launch(app, [str(clip)], port=port, max_upload_bytes=4096, prevent_thread_lock=True, quiet=True)
    yield url.rstrip("/"), folder
    app.close()
    worker.shutdown()


def test_the_demo_serves_only_the_example_files(demo):
    url, folder = demo
    assert fetch(f"{url}/gradio_api/file={folder / 'clip.mp4'}")[0] == 200
    for other in (folder / "notes.txt", folder / "sub" / "secret.txt", folder):
        status, body = fetch(f"{url}/gradio_api/file={other}")
        assert status in (403, 404), (other, status)
        assert "not an example" not in body and "below the example" not in body
    status, config = fetch(f"{url}/config")
    assert status == 200 and str(folder) not in config  # neither the examples' directory nor the checkpoint's


def test_the_demo_bounds_uploads(demo):
    url, _ = demo

    def upload(size: int) -> int:
        boundary = "videollm-" + uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="v.mp4"\r\n'
                f"Content-Type: video/mp4\r\n\r\n"
            ).encode()
            + b"\0" * size
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return fetch(
            f"{url}/gradio_api/upload", data=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )[0]

    assert upload(1000) == 200
    assert upload(10_000) == 413
