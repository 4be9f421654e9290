"""Render a narrated video: the source's frames with the conversation in a panel beside or below them, and optionally
the assistant's speech as an AAC track, encoded H.264 into an MP4/MOV/MKV.

It streams: frames are decoded, composed and encoded one at a time, and speech is synthesised turn by turn just
before its time, so memory does not grow with the video's length. A turn appears in the panel from its video time
on (the time in the history JSON, as `narrate` writes it); when the panel is full, older turns scroll off the top.
"""

from __future__ import annotations

import bisect
import json
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import UserError
from .files import atomic_path

LAYOUTS = ("side", "below")
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
ROLES = ("user", "assistant")
# Panel colours (RGB): a dark background so the video stays the brightest thing on screen.
BACKGROUND = (22, 24, 29)
TEXT = (232, 232, 232)
ROLE_COLOURS = {"user": (120, 190, 255), "assistant": (140, 220, 140)}
TIME_COLOUR = (150, 150, 150)


class RenderWarning(RuntimeWarning):
    """Rendering goes on with less (a corrupt stretch of the source skipped)."""


@dataclass
class RenderConfig:
    """How the conversation is laid out and the video encoded."""

    layout: str = "side"
    """`side`: the panel right of the frames; `below`: under them."""
    panel_size: int | None = None
    """Panel width (side) or height (below) in pixels; None: from the video size and the font size."""
    font_size: int | None = None
    """Text height in pixels; None: about 1/24 of the video height, between 12 and 36."""
    speech: bool = False
    """Add an AAC track with each assistant turn spoken at its time (needs the tts extra)."""
    crf: int = 20
    """libx264 quality: 0 lossless .. 51 worst; 18-23 looks like the source."""
    preset: str = "veryfast"
    """libx264 speed/size trade-off."""
    audio_bitrate: int = 96_000

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.panel_size is not None and self.panel_size < 64:
            raise ValueError(f"panel_size must be >= 64 pixels, got {self.panel_size}")
        if self.font_size is not None and not 6 <= self.font_size <= 200:
            raise ValueError(f"font_size must be in [6, 200], got {self.font_size}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        if self.audio_bitrate < 8_000:
            raise ValueError(f"audio_bitrate must be >= 8000, got {self.audio_bitrate}")


@dataclass(frozen=True)
class Turn:
    role: str
    text: str
    time: float


@dataclass
class RenderResult:
    path: Path
    frames: int
    duration: float
    width: int
    height: int
    turns_shown: int
    turns_spoken: int
    skipped_corrupt: bool


# ---------------------------------------------------------------------- history
def load_history(path: str | Path) -> tuple[dict, list[Turn]]:
    """The history JSON (`narrate --output`) and its user/assistant turns in time order; bad input -> UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such history file: {path} (write one with `videollm-online narrate VIDEO --output FILE`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from error
    conversation = data.get("conversation") if isinstance(data, dict) else None
    if not isinstance(conversation, list):
        raise UserError(f"{path} has no 'conversation' list: expected a history as `narrate --output` writes it")
    turns = []
    for number, message in enumerate(conversation):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            continue  # system prompts and stream markers have no place on screen
        content, when = message.get("content"), message.get("time")
        if not isinstance(content, str) or isinstance(when, bool) or not isinstance(when, (int, float)) \
                or not math.isfinite(when) or when < 0:
            raise UserError(f"{path}: conversation[{number}] needs a string 'content' and a 'time' in seconds >= 0")
        if content.strip():
            turns.append(Turn(message["role"], " ".join(content.split()), float(when)))
    turns.sort(key=lambda turn: turn.time)  # stable: turns at the same time keep their order
    return data, turns


# ---------------------------------------------------------------------- the panel
def load_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` pixels (no system fonts needed)."""
    return ImageFont.load_default(size=size)


class ConversationPanel:
    """Draws the turns shown so far into a fixed-size RGB image: newest at the bottom, older ones scrolling off."""

    def __init__(self, width: int, height: int, font_size: int) -> None:
        self.width, self.height = width, height
        self.font = load_font(font_size)
        self.margin = max(4, font_size // 2)
        self.line_height = round(font_size * 1.3)
        self.turn_gap = max(2, font_size // 2)

    def wrap(self, text: str) -> list[str]:
        """Greedy word wrap to the panel's width in pixels (words longer than a line are cut)."""
        limit = self.width - 2 * self.margin
        lines: list[str] = []
        line = ""
        for word in text.split():
            candidate = f"{line} {word}" if line else word
            if self.font.getlength(candidate) <= limit:
                line = candidate
                continue
            if line:
                lines.append(line)
            while self.font.getlength(word) > limit and len(word) > 1:
                cut = max(1, next((i for i in range(len(word), 0, -1) if self.font.getlength(word[:i]) <= limit), 1))
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        if line:
            lines.append(line)
        return lines

    def draw(self, turns: list[Turn]) -> np.ndarray:
        """(height, width, 3) uint8 picture of `turns`."""
        blocks = []  # per turn: (header, colour, body lines), laid out bottom-up so the newest stays in view
        for turn in turns:
            header = f"[{format_time(turn.time)}] {turn.role.capitalize()}"
            blocks.append((header, ROLE_COLOURS[turn.role], self.wrap(turn.text)))
        image = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        y = self.height - self.margin
        for header, colour, body in reversed(blocks):
            for line in reversed(body):
                y -= self.line_height
                draw.text((self.margin, y), line, font=self.font, fill=TEXT)
            y -= self.line_height
            draw.text((self.margin, y), header, font=self.font, fill=colour)
            y -= self.turn_gap
            if y < -self.line_height:
                break  # everything older has scrolled off
        return np.asarray(image)


def format_time(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:04.1f}" if minutes else f"{rest:.1f}s"


# ---------------------------------------------------------------------- speech
class SpeechTrack:
    """The assistant's turns spoken at their times, read in consecutive blocks; overlapping turns are mixed.

    Each turn is synthesised when the read position comes near it and forgotten once it has been read, so only
    the turns sounding at the moment are in memory.
    """

    def __init__(self, turns: list[Turn], voice: Any) -> None:
        self.voice = voice
        self.sample_rate: int = voice.sample_rate
        self._waiting = [turn for turn in turns if turn.role == "assistant"]
        self._sounding: list[tuple[int, np.ndarray]] = []  # (start sample, samples)
        self.spoken = 0

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count) of the mix, clipped to [-1, 1]."""
        end = start + count
        while self._waiting and round(self._waiting[0].time * self.sample_rate) < end:
            turn = self._waiting.pop(0)
            samples = self.voice.synthesize(turn.text)
            if len(samples):
                self._sounding.append((round(turn.time * self.sample_rate), samples))
                self.spoken += 1
        block = np.zeros(count, np.float32)
        for at, samples in self._sounding:
            lo, hi = max(start, at), min(end, at + len(samples))
            if lo < hi:
                block[lo - start : hi - start] += samples[lo - at : hi - at]
        self._sounding = [(at, samples) for at, samples in self._sounding if at + len(samples) > end]
        return np.clip(block, -1.0, 1.0)


# ---------------------------------------------------------------------- rendering
def _open_source(video: Path) -> Any:
    if not video.is_file():
        raise UserError(f"no such video file: {video}")
    try:
        container = av.open(str(video), mode="r")
    except (av.error.FFmpegError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(f"{video} is not a video FFmpeg can read ({reason}); check the file is a complete video") \
            from error
    if not container.streams.video:
        container.close()
        raise UserError(f"{video} has no video stream")
    return container


def layout_sizes(width: int, height: int, config: RenderConfig) -> tuple[int, int, int, int, int]:
    """(font size, panel width, panel height, output width, output height); outputs even, as yuv420p needs."""
    font_size = config.font_size or min(36, max(12, round(height / 24)))
    if config.layout == "side":
        panel_w = config.panel_size or max(width // 2, 22 * font_size)
        out_w, out_h = width + panel_w, height
    else:
        panel_w = width
        out_w = width
        out_h = height + (config.panel_size or max(height // 3, 6 * round(font_size * 1.3)))
    out_w, out_h = out_w + out_w % 2, out_h + out_h % 2
    panel_w, panel_h = (out_w - width, out_h) if config.layout == "side" else (out_w, out_h - height)
    return font_size, panel_w, panel_h, out_w, out_h


def render_video(history: str | Path, out: str | Path, *, video: str | Path | None = None,
                 config: RenderConfig | None = None, voice: Any = None, progress: bool = False) -> RenderResult:
    """Write `out` from the `history` JSON and its source `video` (default: the history's `video_path`)."""
    from tqdm import tqdm

    config = config or RenderConfig()
    data, turns = load_history(history)
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"cannot write {out.name}: the output must end in {', '.join(FORMATS)}")
    if video is None:
        if not isinstance(data.get("video_path"), str):
            raise UserError(f"{history} names no video_path: give the source with --video")
        video = data["video_path"]
    video = Path(video)
    if config.speech and voice is None:
        from .speech import default_voice, require_tts

        require_tts("--speech")
        voice = default_voice()

    source = _open_source(video)
    try:
        with atomic_path(out) as tmp:
            result = _render(source, video, turns, tmp, out, config, voice, progress, tqdm)
    finally:
        source.close()
    return result


def _render(source: Any, video: Path, turns: list[Turn], tmp: Path, out: Path, config: RenderConfig, voice: Any,
            progress: bool, tqdm: Any) -> RenderResult:
    in_stream = source.streams.video[0]
    cc = in_stream.codec_context
    if not cc.width or not cc.height:
        raise UserError(f"{video}: the video stream has no frame size (corrupt header?)")
    width, height = cc.width, cc.height
    font_size, panel_w, panel_h, out_w, out_h = layout_sizes(width, height, config)
    panel = ConversationPanel(panel_w, panel_h, font_size)
    rate = in_stream.average_rate or in_stream.guessed_rate or Fraction(25)
    time_base = in_stream.time_base or Fraction(1, int(rate * 1000))
    start_s = (source.start_time or 0) / 1e6  # times in a history count from the container's start, as narrate's

    options = {"movflags": "+faststart"} if FORMATS[out.suffix.lower()] in ("mp4", "mov") else {}
    total = in_stream.frames or (round(source.duration / 1e6 * float(rate)) if source.duration else None)
    canvas = np.zeros((out_h, out_w, 3), np.uint8)
    shown = -1  # how many turns the canvas's panel holds
    frames = 0
    last_pts = -1
    end_s = 0.0
    skipped = False
    speech = SpeechTrack(turns, voice) if config.speech else None
    times = [turn.time for turn in turns]
    with av.open(str(tmp), mode="w", format=FORMATS[out.suffix.lower()], container_options=options) as sink:
        v_out = sink.add_stream("libx264", rate=rate, options={"crf": str(config.crf), "preset": config.preset})
        v_out.width, v_out.height, v_out.pix_fmt = out_w, out_h, "yuv420p"
        v_out.time_base = v_out.codec_context.time_base = time_base
        a_out = None
        audio_done = 0
        if speech is not None:
            a_out = sink.add_stream("aac", rate=speech.sample_rate, layout="mono")
            a_out.bit_rate = config.audio_bitrate
            a_out.time_base = Fraction(1, speech.sample_rate)

        def write_audio(until_s: float) -> None:
            """Encode speech up to `until_s` seconds in whole AAC frames (the last one may be short)."""
            nonlocal audio_done
            if a_out is None:
                return
            step = a_out.codec_context.frame_size or 1024
            until = round(until_s * speech.sample_rate)
            while audio_done < until:
                count = min(step, until - audio_done)
                block = speech.read(audio_done, count)
                frame = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = speech.sample_rate, audio_done, a_out.time_base
                sink.mux(a_out.encode(frame))
                audio_done += count

        bar = tqdm(total=total, unit="frame", desc="rendering", disable=not progress or None, dynamic_ncols=True)
        try:
            for packet in source.demux(in_stream):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as error:
                    if not skipped:
                        warnings.warn(f"{video}: corrupt or truncated video data ({error}); skipping it",
                                      RenderWarning, stacklevel=2)
                    skipped = True
                    continue
                for src in decoded:
                    tb = src.time_base or time_base
                    pts = src.pts if src.pts is not None else last_pts + 1
                    t = float(pts * tb) - start_s
                    out_pts = max(round(t / time_base), last_pts + 1)  # strictly increasing, from 0
                    last_pts = out_pts
                    visible = bisect.bisect_right(times, t + 1e-6)
                    if visible != shown:  # the panel changes only when a turn appears
                        shown = visible
                        picture = panel.draw(turns[:visible])
                        if config.layout == "side":
                            canvas[:, width:] = picture
                        else:
                            canvas[height:, :] = picture
                    canvas[:height, :width] = src.to_ndarray(width=width, height=height, format="rgb24")
                    frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
                    frame.pts, frame.time_base = out_pts, time_base
                    sink.mux(v_out.encode(frame))
                    frames += 1
                    duration = float((src.duration or 0) * tb) or 1 / float(rate)
                    end_s = max(end_s, float(out_pts * time_base) + duration)
                    write_audio(float(out_pts * time_base))
                    bar.update(1)
        except av.error.FFmpegError as error:  # the demuxer gave up: keep what was readable
            warnings.warn(f"{video}: unreadable past {end_s:.1f}s ({error}); the render stops there", RenderWarning,
                          stacklevel=2)
            skipped = True
        finally:
            bar.close()
        if frames == 0:
            raise UserError(f"{video} has no decodable video frames (file is corrupt or truncated)")
        sink.mux(v_out.encode())
        write_audio(end_s)  # the speech ends with the video, so the render lasts as long as its source
        if a_out is not None:
            sink.mux(a_out.encode())
    return RenderResult(path=out, frames=frames, duration=end_s, width=out_w, height=out_h,
                        turns_shown=max(shown, 0), turns_spoken=speech.spoken if speech else 0,
                        skipped_corrupt=skipped)


def describe(result: RenderResult) -> str:
    """One line for the command to print."""
    speech = f", {result.turns_spoken} turns spoken" if result.turns_spoken else ""
    return (f"{result.path}: {result.frames} frames, {result.duration:.1f} s, {result.width}x{result.height}, "
            f"{result.turns_shown} turns shown{speech}")


__all__ = ["ConversationPanel", "RenderConfig", "RenderResult", "SpeechTrack", "describe", "load_history",
           "render_video"]
