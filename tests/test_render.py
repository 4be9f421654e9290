"""`videollm-online render`: a real clip and a history in, an H.264 + AAC video out, read back with PyAV."""

import json
from types import SimpleNamespace

import av
import numpy as np
import pytest

from videollm_online.apps.render import (
    BACKGROUND,
    ROLE_COLOURS,
    ConversationPanel,
    RenderConfig,
    SpeechTrack,
    Turn,
    describe,
    layout_sizes,
    render_video,
)

CLIP = "carphone_pristine.mp4"  # real camera footage: 176x144, 29.97 fps, 4 s, H.264


def write_history(path, video, turns):
    path.write_text(
        json.dumps(
            {
                "video_path": str(video),
                "frame_fps": 2.0,
                "model": "test",
                "conversation": [{"role": r, "content": c, "time": t} for r, c, t in turns],
            }
        )
    )
    return path


def decoded_frames(path):
    """(time, rgb array) of every video frame of `path`."""
    with av.open(str(path)) as container:
        return [(float(frame.time), frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def duration_of(path, kind):
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return float(stream.duration * stream.time_base)


def test_render_with_speech_reads_back(skclip, tmp_path):
    pytest.importorskip("piper", reason="the tts extra is not installed")
    source = skclip(CLIP)
    history = write_history(
        tmp_path / "history.json",
        source,
        [
            ("user", "What is the man doing?", 1.0),
            ("assistant", "He is talking on the phone in a car.", 2.0),
        ],
    )
    out = tmp_path / "rendered.mp4"
    result = render_video(history, out, config=RenderConfig(speech=True))
    assert result.turns_shown == 2 and result.turns_spoken == 1

    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        font_size, panel_w, _, out_w, out_h = layout_sizes(176, 144, RenderConfig())
        assert (video.codec_context.width, video.codec_context.height) == (out_w, out_h) == (176 + panel_w, 144)
    source_duration = duration_of(source, "video")
    assert duration_of(out, "video") == pytest.approx(source_duration, abs=0.04)  # one frame at 29.97 fps
    assert duration_of(out, "audio") == pytest.approx(source_duration, abs=0.1)  # whole AAC frames + priming

    # the panel: empty before the first turn, the user's turn from 1 s on, the assistant's added from 2 s on
    frames = decoded_frames(out)
    assert len(frames) == 120

    def panel_at(t):
        return next(image for time, image in frames if time >= t)[:, 176:].astype(int)

    empty, asked, still_asked, answered = panel_at(0.5), panel_at(1.05), panel_at(1.9), panel_at(2.05)
    assert np.abs(panel_at(0.0) - empty).mean() < 0.5  # nothing drawn yet: only compression noise differs
    assert np.abs(asked - empty).mean() > 2.0 and np.abs(still_asked - asked).mean() < 0.5
    assert np.abs(answered - still_asked).mean() > 2.0

    def greenish(panel):  # the assistant's header colour (140, 220, 140)
        return int(((panel[..., 1] > 180) & (panel[..., 0] < 180) & (panel[..., 2] < 180)).sum())

    assert greenish(still_asked) == 0 and greenish(answered) > 20
    # the video part is the source's frames
    source_frames = decoded_frames(source)
    assert np.abs(frames[60][1][:, :176].astype(int) - source_frames[60][1].astype(int)).mean() < 6

    # the speech track: silent until the assistant's turn at 2 s, then speaking
    with av.open(str(out)) as container:
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
        rate = container.streams.audio[0].sample_rate
    rms = lambda a, b: float(np.sqrt(np.mean(samples[int(a * rate) : int(b * rate)] ** 2)))  # noqa: E731
    assert rms(0.2, 1.9) < 0.01 and rms(2.1, 3.5) > 0.03


def test_render_without_speech_has_no_audio_and_below_layout(make_clip, tmp_path):
    clip = make_clip("clip.mp4", frames=20, fps=10, size=(95, 63), pix_fmt="yuv444p")  # odd: output stays even
    history = write_history(tmp_path / "h.json", clip, [("assistant", "A turn.", 0.5)])
    out = tmp_path / "below.mkv"
    result = render_video(history, out, config=RenderConfig(layout="below", font_size=12))
    assert result.frames == 20 and result.turns_spoken == 0
    with av.open(str(out)) as container:
        assert not container.streams.audio
        video = container.streams.video[0]
        assert video.codec_context.width % 2 == 0 and video.codec_context.height % 2 == 0
        assert video.codec_context.height > 63 and video.codec_context.width == 96


def test_panel_scrolls_newest_turn_stays_at_the_bottom():
    panel = ConversationPanel(200, 120, 12)
    turns = [
        Turn("assistant" if i % 2 else "user", f"Turn number {i} says quite a lot of words to wrap.", i)
        for i in range(20)
    ]
    alone, crowded = panel.draw(turns[-1:]).astype(int), panel.draw(turns).astype(int)
    bottom = slice(120 - 3 * panel.line_height, 120)  # the newest turn's lines
    assert np.array_equal(alone[bottom], crowded[bottom])
    assert np.abs(alone[:40] - crowded[:40]).mean() > 2.0  # older turns fill the top, the oldest scrolled off
    lines = panel.wrap("a " * 50 + "x" * 80)
    assert len(lines) > 2 and all(panel.font.getlength(line) <= 200 - 2 * panel.margin for line in lines)
    assert "".join(lines).replace(" ", "") == "a" * 50 + "x" * 80


def test_speech_track_places_and_mixes_turns():
    speech = pytest.importorskip("videollm_online.apps.speech")
    if not speech.tts_available():
        pytest.skip("the tts extra is not installed")

    class Remembering:  # Piper samples its prosody noise: keep each text's one real synthesis to compare against
        def __init__(self, voice):
            self.voice, self.sample_rate, self.said = voice, voice.sample_rate, {}

        def synthesize(self, text):
            return self.said.setdefault(text, self.voice.synthesize(text))

    voice = Remembering(speech.default_voice())
    rate = voice.sample_rate
    first, second = voice.synthesize("First turn."), voice.synthesize("Second.")
    turns = [Turn("assistant", "First turn.", 0.5), Turn("user", "Not spoken.", 0.6), Turn("assistant", "Second.", 0.7)]
    track = SpeechTrack(turns, voice)
    total = int(0.7 * rate) + len(second) + 1000
    mixed = np.concatenate([track.read(start, 1024) for start in range(0, total, 1024)])
    expected = np.zeros(len(mixed), np.float32)
    expected[round(0.5 * rate) : round(0.5 * rate) + len(first)] += first
    expected[round(0.7 * rate) : round(0.7 * rate) + len(second)] += second
    np.testing.assert_allclose(mixed, np.clip(expected, -1, 1), atol=1e-6)
    assert track.spoken == 2


def test_truncated_source_renders_what_it_can(make_clip, tmp_path):
    clip = make_clip("whole.mp4", frames=60, fps=10, size=(96, 64), container_options={"movflags": "faststart"})
    data = clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    history = write_history(tmp_path / "h.json", truncated, [("assistant", "Hello.", 0.1)])
    with pytest.warns(RuntimeWarning, match="corrupt or truncated|unreadable"):
        result = render_video(history, tmp_path / "out.mp4")
    assert 1 <= result.frames < 60


def test_bad_inputs_are_one_line_errors(make_clip, tmp_path, capsys):
    from videollm_online.apps.cli import main

    def _cli(*args):
        code = main(["render", *map(str, args)])
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)

    clip = make_clip("clip.mp4", frames=5, fps=10, size=(64, 64))
    good = write_history(tmp_path / "good.json", clip, [("assistant", "Hi.", 0.0)])
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "notes.mp4").write_text("not a video")
    bad_time = write_history(tmp_path / "badtime.json", clip, [("assistant", "Hi.", "soon")])
    out = tmp_path / "out.mp4"
    cases = [
        ((tmp_path / "missing.json", "--out", out), "no such history file"),
        ((tmp_path / "bad.json", "--out", out), "is not valid JSON"),
        ((tmp_path / "list.json", "--out", out), "has no 'conversation' list"),
        ((bad_time, "--out", out), "needs a string 'content' and a 'time'"),
        ((good, "--video", tmp_path / "missing.mp4", "--out", out), "no such video file"),
        ((good, "--video", tmp_path / "notes.mp4", "--out", out), "is not a video FFmpeg can read"),
        ((good, "--out", tmp_path / "out.gif"), "the output must end in"),
    ]
    for args, message in cases:
        result = _cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not out.exists() and not list(tmp_path.glob(".out.mp4.*"))  # nothing half-written
    result = _cli(good, "--out", out, "-q")
    assert result.returncode == 0 and out.exists() and result.stderr == ""


def clip_with_tone(path, frame_pattern, seconds=3.0, fps=10, rate=44100, hz=440.0):
    """A real H.264 + AAC clip: pattern frames and a stereo sine tone starting 0.25 s in."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=rate, layout="stereo")
        t = np.arange(int((seconds - 0.25) * rate)) / rate
        tone = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            block = np.ascontiguousarray(np.stack([tone[start : start + 1024]] * 2))
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start + int(0.25 * rate)
            container.mux(audio.encode(frame))
        container.mux(audio.encode())
        for i in range(int(seconds * fps)):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame_pattern(i, 64, 48), format="rgb24")))
        container.mux(video.encode())
    return path


def audio_of(path):
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.sample_rate, stream.codec_context.layout.nb_channels
        samples = np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1)
    return samples, rate, channels


def test_source_audio_is_carried_and_speech_mixed_over_it(tmp_path, pattern):
    clip = clip_with_tone(tmp_path / "tone.mp4", pattern)
    history = write_history(tmp_path / "h.json", clip, [("assistant", "Listen to this sentence now.", 1.5)])
    plain = render_video(history, tmp_path / "plain.mp4")
    samples, rate, channels = audio_of(plain.path)
    assert (rate, channels) == (44100, 2) and duration_of(plain.path, "audio") == pytest.approx(3.0, abs=0.1)
    window = lambda a, b: samples[:, int(a * rate) : int(b * rate)]  # noqa: E731
    assert np.sqrt(np.mean(window(0.0, 0.2) ** 2)) < 0.01  # the tone starts at 0.25 s, as in the source
    assert np.sqrt(np.mean(window(0.5, 2.5) ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)

    assert not render_video(history, tmp_path / "silent.mp4", config=RenderConfig(source_audio=False)).turns_spoken
    with av.open(str(tmp_path / "silent.mp4")) as container:
        assert not container.streams.audio

    if not pytest.importorskip("videollm_online.apps.speech").tts_available():
        pytest.skip("the tts extra is not installed")
    spoken = render_video(history, tmp_path / "spoken.mp4", config=RenderConfig(speech=True))
    mixed, rate, _ = audio_of(spoken.path)
    assert spoken.turns_spoken == 1 and rate == 44100
    difference = mixed[:, : samples.shape[1]] - samples[:, : mixed.shape[1]]  # the speech alone, roughly
    level = lambda a, b: float(np.sqrt(np.mean(difference[:, int(a * rate) : int(b * rate)] ** 2)))  # noqa: E731
    assert level(0.5, 1.4) < 0.02 and level(1.6, 2.6) > 0.05


def test_video_path_relative_to_the_history(make_clip, tmp_path, monkeypatch):
    make_clip("clip.mp4", frames=5, fps=10, size=(64, 64))
    history = write_history(tmp_path / "h.json", "clip.mp4", [("assistant", "Hi.", 0.0)])
    monkeypatch.chdir(tmp_path.parent)  # not where the clip is
    assert render_video(history, tmp_path / "out.mp4").frames == 5


def test_every_turn_within_the_video_is_shown_and_turns_past_its_end_are_counted(make_clip, tmp_path):
    clip = make_clip("ten.mp4", frames=100, fps=10, size=(96, 64))  # 10.0 s; the last frame starts at 9.9 s
    times = [0.0, 1.2, 3.0, 5.5, 8.0, 9.5, 9.95]  # 9.95 s: within the video, on its last frame
    history = write_history(tmp_path / "h.json", clip, [("assistant", f"Turn at {t}.", t) for t in times])
    result = render_video(history, tmp_path / "all.mp4", config=RenderConfig(font_size=12))
    assert result.turns_shown == 7 and result.turns_after_end == 0
    late = write_history(tmp_path / "late.json", clip, [("assistant", f"Turn at {t}.", t) for t in [*times, 10.5]])
    result = render_video(late, tmp_path / "late.mp4", config=RenderConfig(font_size=12))
    assert result.turns_shown == 7 and result.turns_after_end == 1
    assert "7 turns shown (1 after the video's end left out)" in describe(result)


def test_below_layout_never_cuts_a_turn():
    """A short panel holds the newest turns whole; an older turn that would not fit is left out, not cut."""
    panel = ConversationPanel(300, 100, 12)
    turns = [Turn("assistant" if i % 2 else "user", f"Turn {i} has a few words here.", float(i)) for i in range(9)]
    blocks = panel.layout(turns)
    assert 1 <= len(blocks) < len(turns)
    assert [header for header, _, _ in blocks] == [
        f"[{i}.0s] {'Assistant' if i % 2 else 'User'}" for i in range(9 - len(blocks), 9)
    ]
    used = sum((1 + len(body)) * panel.line_height for _, _, body in blocks) + panel.turn_gap * (len(blocks) - 1)
    assert used <= panel.height - 2 * panel.margin
    picture = panel.draw(turns).astype(int)
    background = np.array(BACKGROUND)
    top = panel.height - panel.margin - used  # the first shown turn's header: the turns sit at the bottom
    assert np.abs(picture[:top] - background).max() == 0  # nothing drawn above it: no older turn's cut-off lines
    first_header = picture[top : top + panel.line_height, : panel.width // 2]
    colour = np.array(ROLE_COLOURS["assistant" if (9 - len(blocks)) % 2 else "user"])
    assert (np.abs(first_header - colour).sum(axis=-1) < 60).any()  # its header is drawn, in its role's colour


def test_a_turn_taller_than_the_panel_keeps_its_header():
    panel = ConversationPanel(160, 60, 12)
    blocks = panel.layout([Turn("assistant", "word " * 80, 1.0)])
    ((header, _, body),) = blocks
    assert header == "[1.0s] Assistant" and body and body[-1].endswith("…")
    assert (1 + len(body)) * panel.line_height <= panel.height - 2 * panel.margin
