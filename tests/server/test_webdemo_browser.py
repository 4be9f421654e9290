"""The web demo in a real headless Chromium (Debian's, driven by Playwright), over the bundled model.

Each part of the page a user meets is checked where the user meets it: the examples (synthetic-world videos that
play when picked) and their suggested questions, one bubble per turn with its time, the frames/s and lag readout,
the talkativeness slider, start over, the downloads (history JSON, rendered video), the webcam control and the
note shown for video the model was not trained on. Screenshots of the page before and after a question are saved
(pytest's tmp dir, and a copy in outputs/webdemo-screenshots/, git-ignored)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (make system-deps installs it)", allow_module_level=True)
pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TURN = re.compile(r"\[\d+\.\ds\] \S")
WAIT_MS = 240_000  # generous: the CPU is shared with the rest of the suite
SCREENSHOTS = Path(__file__).resolve().parents[2] / "outputs" / "webdemo-screenshots"


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
    from videollm_online.apps import webdemo
    from videollm_online.apps.server.worker import SerialWorker

    model, template, name = bundled
    examples = webdemo.example_videos(tmp_path_factory.mktemp("demo-cache"))
    worker = SerialWorker(model, template, name)
    demo = webdemo.build_demo(worker, examples=examples, max_new_tokens=24)
    demo.queue(default_concurrency_limit=None)
    _, url, _ = webdemo.launch(
        demo, examples, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True
    )  # as `videollm-online demo` does: only the example files are served
    yield url, examples
    demo.close()
    worker.shutdown()


@pytest.fixture(scope="module")
def browser(demo_url, tmp_path_factory):
    clip = write_y4m(Path(demo_url[1][0]), tmp_path_factory.mktemp("camera") / "clip.y4m")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                *CHROMIUM_FLAGS,
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-video-capture={clip}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, demo_url):
    context = browser.new_context(
        permissions=["camera"], viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    page = context.new_page()
    page.outside_requests = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))
            else page.outside_requests.append(request.url)
        ),
    )
    page.goto(demo_url[0])
    page.wait_for_selector("#chat", timeout=WAIT_MS)
    yield page
    context.close()


def screenshot(page, tmp_path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)
    return path


def bubbles(page) -> list[str]:
    return page.locator('#chat [data-testid="bot"], #chat [data-testid="user"]').all_inner_texts()


def wait_for_turns(page, count: int, finished: bool = False) -> list[str]:
    """At least `count` assistant bubbles with a time stamp (`finished`: whole turns, not one still being said,
    which ends in an ellipsis)."""
    page.wait_for_function(
        """([count, pattern, finished]) => [...document.querySelectorAll('#chat [data-testid="bot"]')]
              .filter(node => new RegExp(pattern).test(node.innerText)
                              && !(finished && node.innerText.trim().endsWith('…'))).length >= count""",
        arg=[count, TURN.pattern, finished],
        timeout=WAIT_MS,
    )
    return bubbles(page)


def status(page) -> str:
    return page.locator("#status").inner_text()


def pick_example(page, index: int = 0) -> None:
    page.locator("#examples button, #examples td, #examples .gallery-item").nth(index).click()


def test_an_example_plays_when_picked_and_a_question_is_answered(page, demo_url, tmp_path):
    assert "demo model (synthetic world)" in page.locator("#intro").inner_text()
    assert str(Path(demo_url[1][0]).parents[3]) not in page.content()  # no install or cache path on the page
    pick_example(page)
    # It plays by itself: no click on the player.
    page.wait_for_function(
        "(() => { const v = document.querySelector('#demo-video video');"
        " return v && !v.paused && v.currentTime > 0.5; })()",
        timeout=WAIT_MS,
    )
    turns = wait_for_turns(page, 1, finished=True)
    # One bubble per turn, each with its time; a world video: no note about other video.
    assert all(len(TURN.findall(text)) == 1 for text in turns), turns
    assert not page.locator("#note").is_visible()
    # The live readout: the model's pace and how far behind the player it is.
    page.wait_for_function(
        "/[1-9]\\d*\\.\\d frames\\/s|0\\.[1-9] frames\\/s/.test(document.querySelector('#status').innerText)",
        timeout=WAIT_MS,
    )
    assert re.search(r"model at \d+\.\d s, \d+\.\d s behind", status(page)), status(page)
    # The example's own questions are offered; clicking one asks it at the current time.
    suggestions = page.locator("#suggestions").inner_text()
    assert "What did I just do?" in suggestions and "Summarise what happened so far." in suggestions
    before = screenshot(page, tmp_path, "webdemo-before-question")
    asked = len(bubbles(page))
    page.locator("#suggestions").get_by_text("How many objects are there?").click()
    page.wait_for_function(
        """([pattern, asked]) => {
            const rows = [...document.querySelectorAll('#chat [data-testid="user"], #chat [data-testid="bot"]')];
            const at = rows.findIndex(n => n.innerText.includes('How many objects are there?'));
            return at >= asked - 1 && rows.slice(at + 1).some(n => new RegExp(pattern).test(n.innerText)
                && n.innerText.includes('There ') && !n.innerText.trim().endsWith('…')); }""",
        arg=[TURN.pattern, asked],
        timeout=WAIT_MS,
    )
    after = screenshot(page, tmp_path, "webdemo-after-question")
    assert before.stat().st_size > 10_000 and after.stat().st_size > 10_000
    assert page.outside_requests == []  # offline: nothing fetched from anywhere but the demo server


def test_labels_reset_and_downloads(page, demo_url):
    slider = page.locator("#threshold")
    assert "How talkative" in slider.inner_text() and "Higher: it speaks more often" in slider.inner_text()
    assert page.get_by_role("tab", name="Webcam (live)").is_visible()
    assert not page.locator("#speech").is_visible()  # no empty audio player before there is speech
    assert "Tips" in page.locator("#tips").inner_text()
    page.locator("#question textarea").fill("What did I just do?")  # a question also works with typing
    pick_example(page, 1)
    wait_for_turns(page, 1, finished=True)  # a turn still being said is not in the history yet
    number = page.locator("#threshold input[type=number]")
    number.fill("0.5")
    number.press("Enter")
    page.wait_for_function("document.querySelector('#status').innerText.includes('threshold 0.500')", timeout=WAIT_MS)

    page.locator("#download").click()
    links = page.locator("#downloads a[download], #downloads a[href]")
    links.first.wait_for(timeout=WAIT_MS)
    hrefs = {
        Path(href.split("?")[0]).name: href
        for href in (links.nth(i).get_attribute("href") for i in range(links.count()))
    }
    assert "videollm-online-history.json" in hrefs and "videollm-online-conversation.mp4" in hrefs, hrefs
    base = demo_url[0].rstrip("/")
    url = hrefs["videollm-online-history.json"]
    history = json.loads(urllib.request.urlopen(url if url.startswith("http") else base + url, timeout=30).read())
    assert history["model"] == "demo model (synthetic world)"
    assert history["conversation"] and all(set(turn) == {"role", "content", "time"} for turn in history["conversation"])

    page.locator("#reset").click()
    page.wait_for_function(
        "document.querySelectorAll('#chat [data-testid=\"bot\"]').length === 0 || "
        "document.querySelector('#status').innerText.includes('0 frames skipped')",
        timeout=WAIT_MS,
    )
    wait_for_turns(page, 1)  # the model goes on watching from where the player is


def test_webcam_streams_and_notes_what_the_model_knows(page):
    page.get_by_role("tab", name="Webcam (live)").click()
    page.locator('#demo-webcam [title="grant webcam access"] button').click()
    button = page.locator("#demo-webcam button[aria-label='capture photo'], #demo-webcam button.capture-button")
    button.first.wait_for(timeout=WAIT_MS)
    assert "Start streaming to the model" in page.locator("#demo-webcam").inner_text()
    button.first.click(timeout=WAIT_MS)
    wait_for_turns(page, 1)
    page.wait_for_function("document.querySelector('#status').innerText.includes('source: webcam')", timeout=WAIT_MS)
    page.locator("#note").wait_for(state="visible", timeout=WAIT_MS)  # a webcam is not the synthetic world
    assert "trained on the synthetic world" in page.locator("#note").inner_text()
    assert page.outside_requests == []


def test_uploaded_video_of_another_world_gets_the_note(page, make_clip):
    clip = make_clip("real.mp4", frames=40, fps=10, size=(128, 96))
    page.locator("#demo-video input[type=file]").set_input_files(str(clip))
    page.locator("#note").wait_for(state="visible", timeout=WAIT_MS)
    assert "videollm-online download chenjoya/videollm-online-8b-v1plus" in page.locator("#note").inner_text()


def test_importing_the_demo_loads_neither_gradio_nor_a_model():
    code = (
        "import sys, videollm_online.apps.webdemo, videollm_online.apps.client, videollm_online.apps.server; "
        "print(sorted(m for m in ('gradio', 'fastapi', 'uvicorn', 'transformers.models.llama.modeling_llama') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_spoken_responses_reach_the_page(page, demo_url):
    from videollm_online.apps import speech

    if not speech.tts_available():
        pytest.skip("the tts extra is not installed")
    page.locator("#speak input[type=checkbox]").check()
    pick_example(page, 2)
    wait_for_turns(page, 1)
    # The newest finished response, voiced offline, is handed to the page's player, which appears with it.
    page.locator("#speech").wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_function(
        """() => [...document.querySelectorAll('#speech audio, #speech a[download]')]
              .some(node => (node.src || node.href || '').length > 0)""",
        timeout=WAIT_MS,
    )
    assert page.outside_requests == []
