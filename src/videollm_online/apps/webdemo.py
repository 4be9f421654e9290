"""The web demo (`videollm-online demo`): a Gradio page over the same worker as the API.

Upload a video (or pick an example) and press play, or turn on the webcam; ask questions in the chat box at any
moment; the assistant's turns appear as they are generated, each stamped with its video time. The page keeps the
model in step with the viewer: every half second the browser reports the player's current time, and the frames up
to that time (at the model's fps) are fed, so what the model sees is what the viewer sees; if the model falls
behind, older frames are skipped rather than queued. The page shows the model's pace (frames/s) and how far it is
behind the player, keeps one bubble per turn, and offers the history (and a rendered video) for download. Importing
this module loads no model and no Gradio.
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.policy import LIVE_MAX_NEW_TOKENS
from ..engine import EngineConfig
from . import speech
from .server.worker import Worker, public_name

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


# Starts the player once a new video is in it (muted, as browsers allow without a click): examples play when picked.
PLAY_JS = """() => {
  let tries = 0;
  const start = () => {
    const video = document.querySelector('#demo-video video');
    if (video && video.currentSrc && video.readyState >= 2) { video.muted = true; video.play().catch(() => {}); }
    else if (tries++ < 100) { setTimeout(start, 100); }
  };
  start();
}"""
FPS_WINDOW_S = 5.0
"""The frames/s readout counts the frames the model finished in this many recent seconds."""
TALKATIVE_LABEL = "How talkative the model is"
TALKATIVE_INFO = (
    "The model stays silent after a frame when it is at least this sure there is nothing to say. "
    "Higher: it speaks more often; lower: only when it is sure. Takes effect at once."
)


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


def in_time_order(turns: list[Turn]) -> list[Turn]:
    """The chat in video-time order. A question is added when it is asked, at the player's time, while the model,
    behind the player, may still say turns about earlier frames: those go above it. A turn without a time (the note
    of a rewind) stays where it is and orders the turns on each side of it apart; equal times keep the order they
    came in (a question, then its answer)."""
    ordered: list[Turn] = []
    segment: list[Turn] = []
    for turn in turns:
        if turn.video_time is None:
            ordered += sorted(segment, key=lambda t: t.video_time) + [turn]
            segment = []
        else:
            segment.append(turn)
    return ordered + sorted(segment, key=lambda t: t.video_time)


class DemoSession:
    """One viewer's stream: the video they watch (or their webcam), the engine session, and the chat."""

    def __init__(self, worker: Worker, threshold: float | None, max_new_tokens: int) -> None:
        self.worker = worker
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
        self.player_time: float | None = None
        self._finished: collections.deque[float] = collections.deque()  # monotonic times frames were done
        self.note: str | None = None  # the one-line note about what this model can watch, when it applies
        self.speak = False
        self._voiced = 0  # finished assistant turns already handed to speech (or passed over while speech was off)
        self._start_engine()

    # ------------------------------------------------------------------ engine
    def _start_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = self.worker.open(EngineConfig(threshold=self._threshold, max_new_tokens=self.max_new_tokens))
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
        future = self.engine.submit_frame(video_time, image, lambda ids: self._on_token(generation, ids, video_time))
        future.add_done_callback(lambda f: self._on_done(generation, f, video_time))

    def _submit_finish(self) -> None:
        generation = self.generation
        self.in_flight += 1
        self.last_feed = time.monotonic()
        at = self.model_time
        future = self.engine.submit_finish(lambda ids: self._on_token(generation, ids, at))
        future.add_done_callback(lambda f: self._on_done(generation, f, None))

    def _on_token(self, generation: int, token_ids: list[int], video_time: float | None = None) -> None:
        text = self.engine.decode(token_ids) if self.engine is not None else ""
        with self.lock:
            if generation != self.generation:
                return
            if len(token_ids) == 1 or not self._open_turns:
                turn = Turn("assistant", "", video_time, done=False)  # its time: the frame it answers
                self._open_turns.append(turn)
                self.turns.append(turn)
            self._open_turns[-1].text = text.rstrip("\ufffd")

    def _on_done(self, generation: int, future, frame_time: float | None) -> None:
        if future.cancelled():
            return  # the worker is shutting down: this runs inside its shutdown, under its lock; submit nothing
        with self.lock:
            if generation != self.generation:
                return
            self.in_flight -= 1
            if frame_time is not None:
                self.model_time = frame_time
                self._finished.append(time.monotonic())
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
            self._finished.clear()
            self.player_time = None
            self.mode = "video" if path else None
            self._path = path
            self.note = self._source_note(path) if path else None
            if path:
                self._open_frames(0.0)

    def _source_note(self, path: str | None) -> str | None:
        from ..core.bundled import not_world_note

        return not_world_note(self.worker.name, path)

    def reset(self) -> None:
        """Forget the conversation and start the model over from where the player (or the webcam) is now."""
        with self.lock:
            self._start_engine()
            self.turns.clear()
            self.frames_fed = self.frames_skipped = 0
            self._finished.clear()
            self._voiced = 0
            if self.mode == "video" and self._path:
                self._close_frames()
                self._open_frames(self.player_time or 0.0)

    def _open_frames(self, start: float) -> None:
        from ..video import open_video

        self._frames = open_video(
            self._path, fps=self.worker.frame_fps, resolution=self.worker.frame_resolution, start=max(0.0, start)
        )
        self._iter = iter(self._frames)
        self._next = next(self._iter, None)

    def _close_frames(self) -> None:
        if self._frames is not None:
            self._frames.close()
        self._frames = self._iter = self._next = None

    def tick(self, playback_time: float | None) -> None:
        """The player is at `playback_time` (>= 0 while playing; -1 - t while paused at t; None: no player)."""
        with self.lock:
            if self.mode == "video" and playback_time is not None:
                self.player_time = playback_time if playback_time >= 0 else -1 - playback_time
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
        from ..video.letterbox import letterbox
        from ..video.sampling import LiveSampler

        if image is None or self.engine is None:
            return
        with self.lock:
            if self.mode != "webcam":
                self._close_frames()
                self._start_engine()
                self.turns.clear()
                self.frames_fed = self.frames_skipped = 0
                self._finished.clear()
                self.mode = "webcam"
                self.note = self._source_note(None)
                self._camera_started = time.monotonic()
                self._sampler = LiveSampler(self.worker.frame_fps)
            video_time = time.monotonic() - self._camera_started
            if self._sampler.push(video_time) is None:
                return
            if self.in_flight >= MAX_IN_FLIGHT:
                self.frames_skipped += 1
                return
            self._submit_frame(video_time, letterbox(image, self.worker.frame_resolution))

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
            fresh = finished[self._voiced :]
            self._voiced = len(finished)
            return fresh[-1].text if fresh and self.speak else None

    def messages(self) -> list[dict]:
        with self.lock:
            return [turn.message() for turn in in_time_order(self.turns)]

    def frames_per_second(self) -> float:
        """Frames the model finished per second over the last few seconds (0 while nothing flows)."""
        with self.lock:
            now = time.monotonic()
            while self._finished and now - self._finished[0] > FPS_WINDOW_S:
                self._finished.popleft()
            return len(self._finished) / FPS_WINDOW_S

    def lag(self) -> float | None:
        """Seconds the model is behind what the viewer sees (None before its first frame)."""
        with self.lock:
            if self.model_time is None:
                return None
            if self.mode == "webcam":
                return max(0.0, time.monotonic() - self._camera_started - self.model_time)
            if self.player_time is None:
                return None
            return max(0.0, self.player_time - self.model_time)

    def status(self) -> str:
        with self.lock:
            source = {"video": "video", "webcam": "webcam"}.get(self.mode or "", "no video yet")
            watched = f"{self.model_time:.1f} s" if self.model_time is not None else "-"
            lag = self.lag()
            behind = f"{lag:.1f} s behind" if lag is not None else "- behind"
            return (
                f"source: {source} · model at {watched}, {behind} · {self.frames_per_second():.1f} frames/s · "
                f"{self.frames_skipped} frames skipped · threshold {self.threshold:.3f}"
            )

    def history(self) -> dict:
        """The conversation in the history format `narrate --output` writes (and `render` reads)."""
        with self.lock:
            source = self._path if self.mode == "video" and self._path else ("webcam" if self.mode else "")
            conversation = [
                {"role": turn.role, "content": turn.text, "time": round(turn.video_time or 0.0, 3)}
                for turn in self.turns
                if turn.done and turn.text and not turn.text.startswith("(")
            ]
            return {
                "video_path": source,
                "frame_fps": float(self.worker.frame_fps),
                "model": self.worker.name,
                "conversation": conversation,
            }

    def write_history(self, directory: str | Path) -> Path:
        from ..utils.files import write_json_atomic

        path = Path(directory) / "videollm-online-history.json"
        write_json_atomic(path, self.history())
        return path

    def can_render(self) -> bool:
        """A rendered video needs a video file (not the webcam) and at least one turn."""
        with self.lock:
            return self.mode == "video" and bool(self._path) and bool(self.history()["conversation"])

    def render(self, directory: str | Path) -> Path:
        """The video with the conversation beside it (`videollm-online render`)."""
        from .render import RenderConfig, render_video

        history = self.write_history(directory)
        out = Path(directory) / "videollm-online-conversation.mp4"
        render_video(history, out, config=RenderConfig(source_audio=True))
        return out


# ---------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    """A video of the held-out synthetic world (seed 2, never trained on) and questions the bundled model answers
    well on it (tried: it says what was just done and sums up what happened; its counts are mostly, not always,
    right)."""

    index: int
    task: str
    questions: tuple[str, ...]

    @property
    def filename(self) -> str:
        return f"world-{self.index:03d}.mp4"


EXAMPLES = (
    Example(
        2, "clear the table", ("What did I just do?", "Summarise what happened so far.", "How many objects are there?")
    ),
    Example(
        8,
        "paint three shapes yellow",
        ("What did I just do?", "How many shapes can you see?", "Summarise what happened so far."),
    ),
    Example(
        16,
        "stack the blocks",
        ("What did I just do?", "How many objects are there?", "Can you sum up what I have done so far?"),
    ),
    Example(25, "put the circle into the box", ("What did I just do?", "Summarise what happened so far.")),
)
EXAMPLE_WORLD = {"seed": 2, "fps": 10, "time_grid": 0.5, "min_duration": 20, "max_duration": 30}
GENERIC_QUESTIONS = ("What did I just do?", "How many objects are there?", "Summarise what happened so far.")


def example_videos(cache: Path | None = None) -> list[str]:
    """The example videos, rendered once into the cache (a few hundred KB each): synthetic-world videos of
    different tasks, the world the bundled model knows."""
    from ..core.checkpoint import cache_dir
    from ..data.world import WorldConfig, episode_seed, generate_episode, render_episode

    out = (cache or cache_dir()) / "demo-examples" / "world-seed-2"
    config = WorldConfig(
        fps=EXAMPLE_WORLD["fps"],
        time_grid=EXAMPLE_WORLD["time_grid"],
        min_duration=EXAMPLE_WORLD["min_duration"],
        max_duration=EXAMPLE_WORLD["max_duration"],
    )
    paths = []
    for example in EXAMPLES:
        path = out / example.filename
        if not path.exists():
            render_episode(generate_episode(episode_seed(EXAMPLE_WORLD["seed"], example.index), config), path, config)
        paths.append(str(path))
    return paths


def example_for(path: str | None) -> Example | None:
    name = Path(path).name if path else None
    return next((example for example in EXAMPLES if example.filename == name), None)


def questions_for(path: str | None) -> tuple[str, ...]:
    example = example_for(path)
    return example.questions if example else GENERIC_QUESTIONS


TIPS = """- This model was trained on a synthetic world of coloured shapes on a table (the examples). It narrates what
  you do there and answers questions about it; on other video what it says means little. For real video run the released
  model on a GPU: `videollm-online download chenjoya/videollm-online-8b-v1plus`, then
  `videollm-online demo --model chenjoya/videollm-online-8b-v1plus --device cuda`.
- Pick an example: it plays, and the model speaks when something happens. Ask at any moment: type, or click a
  suggested question. Each turn is stamped with its video time.
- **How talkative**: the model stays silent after a frame when it is at least this sure there is nothing to say, so
  a higher value makes it speak more often.
- The line under the chat shows the model's pace (frames/s) and how far it is behind the player; when it falls
  behind, it skips frames rather than queue them.
- **Start over** forgets the conversation; **Download** gives the conversation as JSON (and, for a video, the video
  with the conversation beside it)."""


# ---------------------------------------------------------------------- speech
def speech_clip(text: str) -> tuple[int, np.ndarray]:
    """A response as audio for the page's player: (sample rate, int16 samples)."""
    samples, rate = speech.synthesize(text)
    return rate, (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)


# ---------------------------------------------------------------------- the page
class _DemoEvents:
    """What the page's events do, each on the browser tab's `DemoSession` (made on the tab's first event)."""

    def __init__(self, worker: Worker, threshold: float, max_new_tokens: int) -> None:
        self.worker, self.threshold, self.max_new_tokens = worker, threshold, max_new_tokens

    def new_session(self) -> DemoSession:
        return DemoSession(self.worker, self.threshold, self.max_new_tokens)

    def note_update(self, session: DemoSession):
        import gradio as gr

        if session.note == getattr(session, "note_shown", None):
            return gr.skip()
        session.note_shown = session.note
        return gr.update(
            value=f"**Note:** {session.note[len('note: ') :]}" if session.note else "", visible=bool(session.note)
        )

    def on_video(self, session: DemoSession | None, path: str | None):
        import gradio as gr

        session = session or self.new_session()
        session.load_video(path)
        suggestions = gr.Dataset(samples=[[q] for q in questions_for(path)])
        return session, session.messages(), session.status(), self.note_update(session), suggestions

    def on_tick(self, session: DemoSession | None, playback_time: float | None):
        import gradio as gr

        if session is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        session.tick(playback_time)
        text = session.take_speech()
        audio = gr.update(value=speech_clip(text), visible=True) if text else gr.skip()
        return session.messages(), session.status(), audio, self.note_update(session)

    def on_speak(self, session: DemoSession | None, value: bool):
        session = session or self.new_session()
        session.speak = bool(value)
        return session

    def on_ask(self, session: DemoSession | None, text: str, playback_time: float | None):
        session = session or self.new_session()
        session.ask(text, playback_time)
        return session, "", session.messages()

    def on_suggestion(self, session: DemoSession | None, sample: list | str, playback_time: float | None):
        text = sample[0] if isinstance(sample, (list, tuple)) else sample
        session, _, messages = self.on_ask(session, text, playback_time)
        return session, messages

    def on_threshold(self, session: DemoSession | None, value: float):
        if session is not None:
            session.set_threshold(value)
        return session

    def on_webcam(self, session: DemoSession | None, image: Any):
        session = session or self.new_session()
        session.webcam_frame(image)
        return session

    def on_reset(self, session: DemoSession | None):
        session = session or self.new_session()
        session.reset()
        return session, session.messages(), session.status()

    def on_download(self, session: DemoSession | None):
        import gradio as gr

        if session is None or not session.history()["conversation"]:
            saying = session is not None and any(not turn.done for turn in session.turns)
            gr.Info(
                "The first turn is still being said: download again in a moment."
                if saying
                else "Nothing to download yet: play a video or ask a question first."
            )
            return gr.skip()
        directory = tempfile.mkdtemp(prefix="videollm-online-")
        files = [str(session.write_history(directory))]
        if session.can_render():
            try:
                files.append(str(session.render(directory)))
            except Exception as error:  # rendering is a bonus: the history is there either way
                gr.Warning(f"The video could not be rendered ({error}); the conversation is ready.")
        return gr.update(value=files, visible=True)

    @staticmethod
    def close_session(session: DemoSession | None) -> None:
        if session is not None:
            session.close()


def _video_column(gr: Any, examples: list[str], threshold: float) -> tuple[Any, Any, Any]:
    """The video (upload or examples) and webcam tabs, the talkativeness slider and the tips."""
    with gr.Tab("Video", elem_id="tab-video"):
        video = gr.Video(sources=["upload"], elem_id="demo-video", label="video", autoplay=True, height=360)
        if examples:
            labels = [f"{example.task}" if (example := example_for(path)) else Path(path).name for path in examples]
            gr.Examples(
                examples=[[path] for path in examples],
                inputs=[video],
                example_labels=labels,
                label="Examples: the synthetic world the model knows (click one: it plays)",
                elem_id="examples",
            )
    with gr.Tab("Webcam (live)", elem_id="tab-webcam"):
        webcam = gr.Image(
            sources=["webcam"],
            streaming=True,
            type="numpy",
            elem_id="demo-webcam",
            label="your webcam, streamed to the model while it is on",
            height=360,
        )
    slider = gr.Slider(
        0.0,
        1.0,
        value=threshold,
        step=0.005,
        label=TALKATIVE_LABEL,
        info=TALKATIVE_INFO,
        elem_id="threshold",
    )
    with gr.Accordion("Tips", open=True, elem_id="tips"):
        gr.Markdown(TIPS)
    return video, webcam, slider


@dataclass
class _ChatColumn:
    """The components of the page's right-hand column that events read or update."""

    chat: Any
    question: Any
    suggestions: Any
    status: Any
    reset: Any
    download: Any
    files: Any
    speak: Any
    audio: Any


def _chat_column(gr: Any) -> _ChatColumn:
    """The conversation, the question box with its suggestions, the status line, the buttons, downloads and speech."""
    chat = gr.Chatbot(
        elem_id="chat", label="conversation", height=420, autoscroll=True, group_consecutive_messages=False
    )
    question = gr.Textbox(
        placeholder="Ask about the video, at any moment, and press Enter",
        show_label=False,
        elem_id="question",
    )
    suggestions = gr.Dataset(
        components=[question],
        samples=[[q] for q in GENERIC_QUESTIONS],
        label="Questions to try (click one to ask it now)",
        elem_id="suggestions",
        layout="gallery",
    )
    status = gr.Markdown(elem_id="status", elem_classes=["turn-status"])
    with gr.Row():
        reset = gr.Button("Start over", elem_id="reset", size="sm")
        download = gr.Button("Download the conversation", elem_id="download", size="sm")
    files = gr.File(label="downloads", visible=False, interactive=False, file_count="multiple", elem_id="downloads")
    with gr.Row(visible=speech.tts_available()):  # the `tts` extra: offline Piper voice
        speak = gr.Checkbox(value=False, label="speak the responses", elem_id="speak")
        audio = gr.Audio(
            autoplay=True, interactive=False, show_label=False, elem_id="speech", visible=False
        )  # shown with the first spoken response
    return _ChatColumn(chat, question, suggestions, status, reset, download, files, speak, audio)


def build_demo(
    worker: Worker,
    *,
    examples: list[str] = (),
    threshold: float | None = None,
    max_new_tokens: int = LIVE_MAX_NEW_TOKENS,
):
    """The Gradio Blocks of the demo over a worker (one DemoSession per browser tab)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import gradio as gr

    if threshold is None:  # the model's own default, as a session sees it
        probe = worker.open(EngineConfig())
        threshold = probe.threshold
        probe.close()
    events = _DemoEvents(worker, threshold, max_new_tokens)

    with gr.Blocks(title="videollm-online") as demo:
        state = gr.State(None, time_to_live=3600, delete_callback=events.close_session)
        playback = gr.Number(value=-1, visible=False, elem_id="playback-time")
        gr.Markdown(
            f"### videollm-online: it watches the video with you and speaks when it has something to say\n"
            f"Model: **{public_name(worker.name)}**. Pick an example (it plays), or upload a video, or use "
            f"your webcam; ask at any moment.",
            elem_id="intro",
        )
        note = gr.Markdown(visible=False, elem_id="note")
        with gr.Row():
            with gr.Column(scale=3):
                video, webcam, slider = _video_column(gr, examples, threshold)
            with gr.Column(scale=2):
                ui = _chat_column(gr)
        chat, question, suggestions, status = ui.chat, ui.question, ui.suggestions, ui.status
        reset, download, files, speak, audio = ui.reset, ui.download, ui.files, ui.speak, ui.audio
        timer = gr.Timer(TICK_S)

        video.change(events.on_video, [state, video], [state, chat, status, note, suggestions]).then(None, js=PLAY_JS)
        speak.change(events.on_speak, [state, speak], [state], show_progress="hidden")
        timer.tick(
            events.on_tick,
            [state, playback],
            [chat, status, audio, note],
            js=PLAYBACK_JS,
            show_progress="hidden",
            queue=False,
        )
        with_text_js = PLAYBACK_JS.replace("(state, _time)", "(state, text, _time)").replace(
            "return [state,", "return [state, text,"
        )
        question.submit(events.on_ask, [state, question, playback], [state, question, chat], js=with_text_js)
        suggestions.click(events.on_suggestion, [state, suggestions, playback], [state, chat], js=with_text_js)
        slider.change(events.on_threshold, [state, slider], [state], show_progress="hidden")
        webcam.stream(
            events.on_webcam,
            [state, webcam],
            [state],
            stream_every=TICK_S,
            time_limit=None,
            concurrency_limit=None,
            show_progress="hidden",
        )
        reset.click(events.on_reset, [state], [state, chat, status])
        download.click(events.on_download, [state], [files])
    return demo


def launch_options() -> dict:
    """Options for `Blocks.launch`: system fonts (no font CDN), no footer links."""
    import gradio as gr

    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    # The webcam's button says what it does: it streams to the model (Gradio's own words are "Record" / "Stop").
    words = gr.I18n(
        en={
            "audio.record": "Start streaming to the model",
            "audio.stop": "Stop streaming",
            "image.allow_webcam_access": "Click to turn on your webcam",
        }
    )
    return {
        "theme": theme,
        "css": ".turn-status {font-size: 0.85em; opacity: 0.8}",
        "footer_links": [],
        "share": False,
        "show_error": True,
        "i18n": words,
    }


def launch(
    demo,
    examples: list[str] = (),
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    **options,
):
    """Start the demo's server. Of the files on this machine it serves only the example videos themselves
    (`allowed_paths` lists the files, not their directories: a directory would serve everything under it), and it
    refuses uploads over `max_upload_bytes` (HTTP 413)."""
    allowed = [str(Path(path).resolve()) for path in examples]
    return demo.launch(
        server_name=host,
        server_port=port,
        allowed_paths=allowed,
        max_file_size=max_upload_bytes,
        **launch_options(),
        **options,
    )


def run(
    model,
    template,
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    examples: list[str] | None = None,
    threshold: float | None = None,
    max_new_tokens: int = LIVE_MAX_NEW_TOKENS,
    cache: Path | None = None,
    engine: str = "default",
    cache_tokens: int = 4096,
    max_sessions: int = 8,
) -> None:
    """Serve the demo until interrupted. `engine="fast"`: every viewer's stream batched on the fast engine."""
    if engine == "fast":
        from .server.batched import BatchedWorker

        worker = BatchedWorker(model, template, name, max_sessions=max_sessions, cache_tokens=cache_tokens)
    else:
        from .server.worker import SerialWorker

        worker = SerialWorker(model, template, name)
    examples = examples if examples is not None else example_videos(cache)
    demo = build_demo(worker, examples=examples, threshold=threshold, max_new_tokens=max_new_tokens)
    demo.queue(default_concurrency_limit=None)
    try:
        launch(demo, examples, host=host, port=port)
    finally:
        worker.shutdown()
