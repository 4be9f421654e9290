"""Render a narrated video: the source's frames with the conversation in a panel beside or below them, its audio,
and optionally the assistant's speech mixed in, encoded H.264 + AAC into an MP4/MOV/MKV.

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

from ..utils.errors import UserError
from ..utils.files import atomic_path, check_output

LAYOUTS = ("side", "below")
FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
ROLES = ("user", "assistant")
# Panel colours (RGB): a dark background so the video stays the brightest thing on screen.
BACKGROUND = (22, 24, 29)
TEXT = (232, 232, 232)
ROLE_COLOURS = {"user": (120, 190, 255), "assistant": (140, 220, 140)}


class RenderWarning(RuntimeWarning):
    """Rendering goes on with less (a corrupt stretch of the source skipped)."""


MAX_PANEL_SIZE = 4096
"""Pixels across the conversation panel: a 1,000,000 px panel is 3 GB a frame, which no encoder takes."""
MAX_OUTPUT_SIDE = 8192
"""Pixels along either side of the rendered video (libx264 takes at most 16384; players much less)."""


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
    """Mix each assistant turn, spoken, into the audio at its time (needs the tts extra)."""
    crf: int = 20
    """libx264 quality: 0 lossless .. 51 worst; 18-23 looks like the source."""
    preset: str = "veryfast"
    """libx264 speed/size trade-off."""
    source_audio: bool = True
    """Carry the source's own audio (mixed under the speech); False: the speech alone, or no audio track."""
    audio_bitrate: int = 128_000
    """AAC bitrate of the audio track, bits per second."""

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.panel_size is not None and not 64 <= self.panel_size <= MAX_PANEL_SIZE:
            raise ValueError(f"panel_size must be in [64, {MAX_PANEL_SIZE}] pixels, got {self.panel_size}")
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
    turns_after_end: int = 0
    """Turns of the history timed at or after the video's end: there is no frame to show them on."""


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
        if (
            not isinstance(content, str)
            or isinstance(when, bool)
            or not isinstance(when, (int, float))
            or not math.isfinite(when)
            or when < 0
        ):
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
        self._wrapped: dict[str, list[str]] = {}  # each turn is wrapped once, not again whenever a turn appears

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
                cut = self._fitting(word, limit)
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        if line:
            lines.append(line)
        return lines

    def _fitting(self, word: str, limit: float) -> int:
        """How many leading characters of `word` fit in `limit` pixels (at least one): a binary search, since a
        prefix is never narrower than a shorter one, over at most `limit` characters (one pixel each at least),
        so that a 4,000-character word wraps in milliseconds, not minutes."""
        low, high = 1, max(1, min(len(word), int(limit)))
        while low < high:
            middle = (low + high + 1) // 2
            if self.font.getlength(word[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        return low

    def layout(self, turns: list[Turn]) -> list[tuple[str, tuple[int, int, int], list[str]]]:
        """The turns that fit whole, newest last, as (header, colour, body lines): an older turn that would not fit
        entirely has scrolled off (never half a turn). A newest turn taller than the panel alone keeps its header
        and first lines, the last one ending in an ellipsis."""
        room = self.height - 2 * self.margin
        shown: list[tuple[str, tuple[int, int, int], list[str]]] = []
        used = 0
        for turn in reversed(turns):
            header = f"[{format_time(turn.time)}] {turn.role.capitalize()}"
            if turn.text not in self._wrapped:
                self._wrapped[turn.text] = self.wrap(turn.text)
            body = self._wrapped[turn.text]
            need = (1 + len(body)) * self.line_height + (self.turn_gap if shown else 0)
            if used + need > room:
                if not shown:
                    fit = max(0, room // self.line_height - 1)
                    cut = body[:fit]
                    if cut and fit < len(body):
                        cut[-1] = self._ellipsized(cut[-1])
                    shown.append((header, ROLE_COLOURS[turn.role], cut))
                break
            shown.append((header, ROLE_COLOURS[turn.role], body))
            used += need
        return shown[::-1]

    def _ellipsized(self, line: str) -> str:
        limit = self.width - 2 * self.margin
        while line and self.font.getlength(line + " …") > limit:
            line = line[:-1]
        return f"{line} …"

    def draw(self, turns: list[Turn]) -> np.ndarray:
        """(height, width, 3) uint8 picture of `turns`: the newest at the bottom, as many whole turns above as fit."""
        blocks = self.layout(turns)
        image = Image.new("RGB", (self.width, self.height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        height = sum((1 + len(body)) * self.line_height for _, _, body in blocks)
        y = max(self.margin, self.height - self.margin - height - self.turn_gap * max(0, len(blocks) - 1))
        for header, colour, body in blocks:
            draw.text((self.margin, y), header, font=self.font, fill=colour)
            y += self.line_height
            for line in body:
                draw.text((self.margin, y), line, font=self.font, fill=TEXT)
                y += self.line_height
            y += self.turn_gap
        return np.asarray(image)


def format_time(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:04.1f}" if minutes else f"{rest:.1f}s"


# ---------------------------------------------------------------------- audio
class SpeechTrack:
    """The assistant's turns spoken at their times, read in consecutive blocks; overlapping turns are mixed.

    Each turn is synthesised when the read position comes near it and forgotten once it has been read, so only
    the turns sounding at the moment are in memory. `sample_rate` is the track's (the voice's by default).
    """

    def __init__(self, turns: list[Turn], voice: Any, sample_rate: int | None = None) -> None:
        self.voice = voice
        self.sample_rate: int = sample_rate or voice.sample_rate
        self._waiting = [turn for turn in turns if turn.role == "assistant"]
        self._sounding: list[tuple[int, np.ndarray]] = []  # (start sample, samples)
        self.spoken = 0

    def _synthesize(self, text: str) -> np.ndarray:
        samples = self.voice.synthesize(text)
        if self.voice.sample_rate == self.sample_rate or not len(samples):
            return samples
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        frame.sample_rate = self.voice.sample_rate
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=self.sample_rate)
        parts = [f.to_ndarray()[0] for f in [*resampler.resample(frame), *resampler.resample(None)]]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def read(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count) of the mix, clipped to [-1, 1]."""
        end = start + count
        while self._waiting and round(self._waiting[0].time * self.sample_rate) < end:
            turn = self._waiting.pop(0)
            samples = self._synthesize(turn.text)
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


class AudioBed:
    """The source's own audio, resampled to the output's format and held between its packets and the encoder.

    Samples are placed by the source's timestamps (silence before the first one, samples before the video's start
    cut), then taken in order; the buffer holds only what the demuxer has read ahead of the video.
    """

    def __init__(self, sample_rate: int, layout: str, start_s: float) -> None:
        self.sample_rate = sample_rate
        self.channels = av.AudioLayout(layout).nb_channels
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        self._start_s = start_s
        self._chunks: list[np.ndarray] = []
        self._started = False
        self._skip = 0  # source samples before the video's start, still to cut
        self.available = 0
        self.ended = False

    def push(self, frame: av.AudioFrame | None) -> None:
        """A decoded source frame (None: the source's audio has ended)."""
        if frame is not None and not self._started:
            self._started = True
            offset = round((float(frame.time) - self._start_s) * self.sample_rate) if frame.time is not None else 0
            if offset > 0:
                self._append(np.zeros((self.channels, offset), np.float32))
            self._skip = max(0, -offset)
        for out in self._resampler.resample(frame):
            self._append(out.to_ndarray())
        if frame is None:
            self.ended = True

    def _append(self, samples: np.ndarray) -> None:
        if self._skip:
            cut = min(self._skip, samples.shape[1])
            samples, self._skip = samples[:, cut:], self._skip - cut
        if samples.shape[1]:
            self._chunks.append(samples.astype(np.float32, copy=False))
            self.available += samples.shape[1]

    def read(self, count: int) -> np.ndarray:
        """(channels, count): the next samples, silence past the end."""
        block = np.zeros((self.channels, count), np.float32)
        filled = 0
        while filled < count and self._chunks:
            chunk = self._chunks[0]
            take = min(count - filled, chunk.shape[1])
            block[:, filled : filled + take] = chunk[:, :take]
            filled += take
            if take == chunk.shape[1]:
                self._chunks.pop(0)
            else:
                self._chunks[0] = chunk[:, take:]
        self.available -= filled
        return block


class AudioMixer:
    """Encodes the output's audio (AAC): the source's audio bed and/or the speech track, block by block in step with
    the video, so that the muxer interleaves them and nothing long is buffered."""

    def __init__(
        self,
        sink: Any,
        *,
        sample_rate: int,
        layout: str,
        bit_rate: int,
        speech: SpeechTrack | None,
        bed: AudioBed | None,
    ) -> None:
        self.stream = sink.add_stream("aac", rate=sample_rate, layout=layout)
        self.stream.bit_rate = bit_rate
        self.stream.time_base = Fraction(1, sample_rate)
        self.sink, self.sample_rate, self.layout = sink, sample_rate, layout
        self.channels = av.AudioLayout(layout).nb_channels
        self.speech, self.bed = speech, bed
        self.done = 0  # samples encoded

    def write_until(self, seconds: float) -> None:
        """Encode up to `seconds` in whole AAC frames (a short one only at the end), waiting for source audio."""
        step = self.stream.codec_context.frame_size or 1024
        until = round(seconds * self.sample_rate)
        while self.done < until:
            count = min(step, until - self.done)
            if self.bed is not None and not self.bed.ended and self.bed.available < count:
                return  # the source's next audio packet has not been read yet
            block = self.bed.read(count) if self.bed is not None else np.zeros((self.channels, count), np.float32)
            if self.speech is not None:
                block = np.clip(block + self.speech.read(self.done, count)[None, :], -1.0, 1.0)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=self.layout)
            frame.sample_rate, frame.pts, frame.time_base = self.sample_rate, self.done, self.stream.time_base
            self.sink.mux(self.stream.encode(frame))
            self.done += count

    def finish(self, seconds: float) -> None:
        """Encode up to `seconds` (the video's end: the audio lasts as long as the video) and flush."""
        if self.bed is not None:
            self.bed.push(None)
        self.write_until(seconds)
        self.sink.mux(self.stream.encode())


# ---------------------------------------------------------------------- rendering
def _open_source(video: Path) -> Any:
    if not video.is_file():
        raise UserError(f"no such video file: {video}")
    try:
        container = av.open(str(video), mode="r")
    except (av.error.FFmpegError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(
            f"{video} is not a video FFmpeg can read ({reason}); check the file is a complete video"
        ) from error
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
    if max(out_w, out_h) > MAX_OUTPUT_SIDE:
        raise UserError(
            f"the rendered video would be {out_w}x{out_h} px, over {MAX_OUTPUT_SIDE} px a side: choose a "
            "smaller --panel-size or --font-size (or a smaller source video)"
        )
    panel_w, panel_h = (out_w - width, out_h) if config.layout == "side" else (out_w, out_h - height)
    return font_size, panel_w, panel_h, out_w, out_h


def render_video(
    history: str | Path,
    out: str | Path,
    *,
    video: str | Path | None = None,
    config: RenderConfig | None = None,
    voice: Any = None,
    progress: bool = False,
) -> RenderResult:
    """Write `out` from the `history` JSON and its source `video` (default: the history's `video_path`)."""
    from tqdm import tqdm

    config = config or RenderConfig()
    data, turns = load_history(history)
    out = check_output(out, inputs=[history], what="output video")
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"cannot write {out.name}: the output must end in {', '.join(FORMATS)}")
    if video is None:
        if not isinstance(data.get("video_path"), str):
            raise UserError(f"{history} names no video_path: give the source with --video")
        video = Path(data["video_path"])
        beside = Path(history).parent / video
        if not video.is_absolute() and not video.exists() and beside.exists():
            video = beside  # a relative path written where narrate ran: also look beside the history
    video = Path(video)
    check_output(out, inputs=[video], what="output video")
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


class _VideoTrack:
    """The output's video stream: each source frame with the conversation panel beside or below it (redrawn only
    when a turn appears), at the source's times counted from its start; counts the frames and where the video ends.
    """

    def __init__(
        self,
        sink: Any,
        turns: list[Turn],
        config: RenderConfig,
        width: int,
        height: int,
        rate: Fraction,
        time_base: Fraction,
        start_s: float,
    ) -> None:
        font_size, panel_w, panel_h, out_w, out_h = layout_sizes(width, height, config)
        self.panel = ConversationPanel(panel_w, panel_h, font_size)
        self.canvas = np.zeros((out_h, out_w, 3), np.uint8)
        self.sink, self.turns, self.config = sink, turns, config
        self.width, self.height, self.out_w, self.out_h = width, height, out_w, out_h
        self.rate, self.time_base, self.start_s = rate, time_base, start_s
        self.stream = sink.add_stream("libx264", rate=rate, options={"crf": str(config.crf), "preset": config.preset})
        self.stream.width, self.stream.height, self.stream.pix_fmt = out_w, out_h, "yuv420p"
        self.stream.time_base = self.stream.codec_context.time_base = time_base
        self.times = [turn.time for turn in turns]
        self.shown = -1  # how many turns the canvas's panel holds
        self.frames = 0
        self.last_pts = -1
        self.end_s = 0.0

    @property
    def now(self) -> float:
        """The output time of the last frame written (0 before the first)."""
        return float(self.last_pts * self.time_base) if self.last_pts >= 0 else 0.0

    def write(self, src: av.VideoFrame) -> float:
        """Encode one source frame; returns its output time in seconds."""
        tb = src.time_base or self.time_base
        pts = src.pts if src.pts is not None else self.last_pts + 1
        t = float(pts * tb) - self.start_s
        out_pts = max(round(t / self.time_base), self.last_pts + 1)  # strictly increasing, from 0
        self.last_pts = out_pts
        # A turn shows from the frame on screen at its time (this frame lasts until its next one), so every turn
        # within the video is shown, also one between the last frame's start and the video's end.
        on_screen = min(float((src.duration or 0) * tb) or 1 / float(self.rate), 1 / float(self.rate))
        visible = bisect.bisect_left(self.times, t + on_screen - 1e-6)
        if visible != self.shown:  # the panel changes only when a turn appears
            self.shown = visible
            picture = self.panel.draw(self.turns[:visible])
            if self.config.layout == "side":
                self.canvas[:, self.width :] = picture
            else:
                self.canvas[self.height :, :] = picture
        self.canvas[: self.height, : self.width] = src.to_ndarray(width=self.width, height=self.height, format="rgb24")
        frame = av.VideoFrame.from_ndarray(self.canvas, format="rgb24")
        frame.pts, frame.time_base = out_pts, self.time_base
        self.sink.mux(self.stream.encode(frame))
        self.frames += 1
        duration = float((src.duration or 0) * tb) or 1 / float(self.rate)
        self.end_s = max(self.end_s, float(out_pts * self.time_base) + duration)
        return float(out_pts * self.time_base)

    def finish(self) -> None:
        self.sink.mux(self.stream.encode())


def _audio_format(source: Any, config: RenderConfig, voice: Any) -> tuple[Any, int, str]:
    """The source's audio stream to carry over (None: none, or `config.source_audio` off), the output's sample rate
    (the source's, else the voice's when speaking, else 0: no audio) and channel layout."""
    a_in = source.streams.audio[0] if config.source_audio and source.streams.audio else None
    if a_in is not None and a_in.codec_context.sample_rate:
        layout = "mono" if a_in.codec_context.layout.nb_channels == 1 else "stereo"
        return a_in, a_in.codec_context.sample_rate, layout
    return None, (voice.sample_rate if config.speech else 0), "mono"


def _render(
    source: Any,
    video: Path,
    turns: list[Turn],
    tmp: Path,
    out: Path,
    config: RenderConfig,
    voice: Any,
    progress: bool,
    tqdm: Any,
) -> RenderResult:
    in_stream = source.streams.video[0]
    cc = in_stream.codec_context
    if not cc.width or not cc.height:
        raise UserError(f"{video}: the video stream has no frame size (corrupt header?)")
    rate = in_stream.average_rate or in_stream.guessed_rate or Fraction(25)
    time_base = in_stream.time_base or Fraction(1, int(rate * 1000))
    start_s = (source.start_time or 0) / 1e6  # times in a history count from the container's start, as narrate's

    options = {"movflags": "+faststart"} if FORMATS[out.suffix.lower()] in ("mp4", "mov") else {}
    total = in_stream.frames or (round(source.duration / 1e6 * float(rate)) if source.duration else None)
    skipped = False
    a_in, a_rate, a_layout = _audio_format(source, config, voice)
    with av.open(str(tmp), mode="w", format=FORMATS[out.suffix.lower()], container_options=options) as sink:
        track = _VideoTrack(sink, turns, config, cc.width, cc.height, rate, time_base, start_s)
        speech = SpeechTrack(turns, voice, a_rate) if config.speech else None
        bed = AudioBed(a_rate, a_layout, start_s) if a_in is not None else None
        mixer = None
        if speech is not None or bed is not None:
            mixer = AudioMixer(
                sink, sample_rate=a_rate, layout=a_layout, bit_rate=config.audio_bitrate, speech=speech, bed=bed
            )
        bar = tqdm(total=total, unit="frame", desc="rendering", disable=not progress or None, dynamic_ncols=True)
        try:
            for packet in source.demux(*[s for s in (in_stream, a_in) if s is not None]):
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError as error:
                    if not skipped:
                        warnings.warn(
                            f"{video}: corrupt or truncated data ({error}); skipping it", RenderWarning, stacklevel=3
                        )
                    skipped = True
                    continue
                for item in decoded:
                    if packet.stream is in_stream:
                        written = track.write(item)
                        if mixer is not None:
                            mixer.write_until(written)
                        bar.update(1)
                    else:
                        bed.push(item)
                        mixer.write_until(track.now)
        except av.error.FFmpegError as error:  # the demuxer gave up: keep what was readable
            warnings.warn(
                f"{video}: unreadable past {track.end_s:.1f}s ({error}); the render stops there",
                RenderWarning,
                stacklevel=2,
            )
            skipped = True
        finally:
            bar.close()
        if track.frames == 0:
            raise UserError(f"{video} has no decodable video frames (file is corrupt or truncated)")
        track.finish()
        if mixer is not None:
            mixer.finish(track.end_s)  # audio ends with the video, so the render lasts as long as its source
    return RenderResult(
        path=out,
        frames=track.frames,
        duration=track.end_s,
        width=track.out_w,
        height=track.out_h,
        turns_shown=max(track.shown, 0),
        turns_spoken=speech.spoken if speech else 0,
        skipped_corrupt=skipped,
        turns_after_end=len(turns) - max(track.shown, 0),
    )


def describe(result: RenderResult) -> str:
    """One line for the command to print."""
    speech = f", {result.turns_spoken} turns spoken" if result.turns_spoken else ""
    after = f" ({result.turns_after_end} after the video's end left out)" if result.turns_after_end else ""
    return (
        f"{result.path}: {result.frames} frames, {result.duration:.1f} s, {result.width}x{result.height}, "
        f"{result.turns_shown} turns shown{after}{speech}"
    )


__all__ = [
    "AudioBed",
    "AudioMixer",
    "ConversationPanel",
    "RenderConfig",
    "RenderResult",
    "SpeechTrack",
    "describe",
    "load_history",
    "render_video",
]
