"""The web demo in a real headless Chromium (Debian's, driven by Playwright): an uploaded video and a fake webcam
fed from a clip, both with the bundled model's turns appearing in the page. The threshold is 1 (the model speaks
after every frame it watches) so that turns come quickly and surely; what they say is the model's own."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (make system-deps installs it)", allow_module_level=True)
pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
TURN = re.compile(r"\[\d+\.\ds\] \S")
WAIT_MS = 180_000  # generous: the CPU is shared with the rest of the suite


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_y4m(source: Path, target: Path, frames: int = 100) -> Path:
    """The first frames of a clip as a raw YUV4MPEG2 file: what Chromium's fake camera plays (in a loop)."""
    import av

    with av.open(str(source)) as src, av.open(str(target), "w", format="yuv4mpegpipe") as out:
        decoded = src.decode(video=0)
        first = next(decoded)
        stream = out.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        for index, frame in enumerate([first, *decoded]):
            if index >= frames:
                break
            out.mux(stream.encode(frame.reformat(format="yuv420p")))
        out.mux(stream.encode())
    return target


@pytest.fixture(scope="module")
def demo_url(bundled, tmp_path_factory):
    from videollm_online import webdemo
    from videollm_online.server.backend import SerialBackend

    model, template, name = bundled
    examples = webdemo.example_videos(tmp_path_factory.mktemp("demo-cache"))
    backend = SerialBackend(model, template, name)
    demo = webdemo.build_demo(backend, examples=examples, threshold=1.0, max_new_tokens=12)
    demo.queue(default_concurrency_limit=None)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **webdemo.launch_options())
    yield url, examples
    demo.close()
    backend.shutdown()


@pytest.fixture(scope="module")
def browser(demo_url, tmp_path_factory):
    clip = write_y4m(Path(demo_url[1][0]), tmp_path_factory.mktemp("camera") / "clip.y4m")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=[*CHROMIUM_FLAGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                  f"--use-file-for-fake-video-capture={clip}", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, demo_url):
    context = browser.new_context(permissions=["camera"])
    page = context.new_page()
    page.outside_requests = []
    page.on("request", lambda request: None if request.url.startswith(
        ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) else page.outside_requests.append(request.url))
    page.goto(demo_url[0])
    page.wait_for_selector("#chat", timeout=WAIT_MS)
    yield page
    context.close()


def bot_turns(page) -> list[str]:
    return [text for text in page.locator('#chat [data-testid="bot"]').all_inner_texts() if TURN.search(text)]


def wait_for_turns(page, count: int) -> list[str]:
    page.wait_for_function(
        """([count, pattern]) => [...document.querySelectorAll('#chat [data-testid="bot"]')]
              .filter(node => new RegExp(pattern).test(node.innerText)).length >= count""",
        arg=[count, TURN.pattern], timeout=WAIT_MS)
    return bot_turns(page)


def test_upload_flow(page, demo_url):
    page.locator("#demo-video input[type=file]").set_input_files(demo_url[1][0])
    page.wait_for_selector("#demo-video video", timeout=WAIT_MS)
    page.wait_for_function("document.querySelector('#demo-video video').readyState >= 2", timeout=WAIT_MS)
    page.evaluate("(() => { const v = document.querySelector('#demo-video video'); v.muted = true; v.play(); })()")
    turns = wait_for_turns(page, 2)
    assert all(TURN.search(turn) for turn in turns)
    page.wait_for_function("document.querySelector('#status').innerText.includes('source: video')", timeout=WAIT_MS)

    # A question at the current playback time: it shows at once, and an answer follows it.
    page.locator("#question textarea").fill("How many objects are there?")
    page.locator("#question textarea").press("Enter")
    page.wait_for_function(
        """(pattern) => {
            const rows = [...document.querySelectorAll('#chat [data-testid="user"], #chat [data-testid="bot"]')];
            const asked = rows.findIndex(n => n.innerText.includes('How many objects are there?'));
            return asked >= 0 && rows.slice(asked + 1).some(n => new RegExp(pattern).test(n.innerText)); }""",
        arg=TURN.pattern, timeout=WAIT_MS)
    # The slider takes effect at once: the session reports the new threshold.
    threshold = page.locator("#threshold input[type=number]")
    threshold.fill("0.5")
    threshold.press("Enter")
    page.wait_for_function("document.querySelector('#status').innerText.includes('threshold 0.500')",
                           timeout=WAIT_MS)
    assert page.outside_requests == []  # offline: nothing fetched from anywhere but the demo server


def test_webcam_flow(page):
    page.get_by_role("tab", name="Webcam").click()
    page.locator('#demo-webcam [title="grant webcam access"] button').click()
    page.locator('#demo-webcam button[aria-label="capture photo"]').click(timeout=WAIT_MS)  # start streaming
    turns = wait_for_turns(page, 2)
    assert all(TURN.search(turn) for turn in turns)
    page.wait_for_function("document.querySelector('#status').innerText.includes('source: webcam')",
                           timeout=WAIT_MS)
    assert page.outside_requests == []


def test_importing_the_demo_loads_neither_gradio_nor_a_model():
    code = ("import sys, videollm_online.webdemo, videollm_online.client, videollm_online.server; "
            "print(sorted(m for m in ('gradio', 'fastapi', 'uvicorn', 'transformers.models.llama.modeling_llama') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_spoken_responses_reach_the_page(page, demo_url):
    from videollm_online import speech

    if not speech.tts_available():
        pytest.skip("the tts extra is not installed")
    page.locator("#speak input[type=checkbox]").check()
    page.locator("#demo-video input[type=file]").set_input_files(demo_url[1][0])
    page.wait_for_selector("#demo-video video", timeout=WAIT_MS)
    page.wait_for_function("document.querySelector('#demo-video video').readyState >= 2", timeout=WAIT_MS)
    page.evaluate("(() => { const v = document.querySelector('#demo-video video'); v.muted = true; v.play(); })()")
    wait_for_turns(page, 1)
    # The newest finished response, voiced offline, is handed to the page's player as a WAV file.
    page.wait_for_function(
        """() => [...document.querySelectorAll('#speech audio, #speech a[download]')]
              .some(node => (node.src || node.href || '').length > 0)""", timeout=WAIT_MS)
    assert page.outside_requests == []
