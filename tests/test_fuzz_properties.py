"""Property tests (hypothesis) of what every input must keep true: the conversation format's ids and labels, the
schema check that guards it, the history writer's JSON, and the frame samplers' time arithmetic."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from videollm_online.core.config import LiveConfig
from videollm_online.core.text import IGNORE_INDEX, StreamTemplate, build_tiny_tokenizer
from videollm_online.data.schema import conversation_problem
from videollm_online.video.sampling import FfmpegRateSampler, LiveSampler

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a user or the model may write; `<` is left out because the frame placeholder `<v>` is a special token
# (a literal `<v>` typed into a message would be read as a frame slot: see test_a_typed_placeholder_...).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<"), max_size=24)


@pytest.fixture(scope="module")
def template() -> StreamTemplate:
    return StreamTemplate(build_tiny_tokenizer(), LiveConfig.from_name("tiny"))


def message() -> st.SearchStrategy[dict]:
    return st.one_of(
        st.builds(lambda text, learn: {"role": "user", "content": text, "learn": learn}, TEXT, st.just(False)),
        st.builds(lambda text, learn: {"role": "assistant", "content": text, "learn": learn}, TEXT, st.booleans()),
        st.builds(
            lambda n, learn: {"role": "stream", "num_frames": n, "learn": learn},
            st.integers(0, 4),
            st.one_of(st.booleans(), st.integers(0, 5)),
        ),
    )


CONVERSATIONS = st.builds(
    lambda system, rest: ([{"role": "system", "content": system}] if system is not None else []) + rest,
    st.one_of(st.none(), TEXT),
    st.lists(message(), max_size=8),
)


@FAST
@given(conversation=CONVERSATIONS)
def test_tokenized_conversations_round_trip_and_label_only_what_follows(template, conversation):
    assert conversation_problem(conversation) is None  # what the schema accepts, the template takes
    result = template.tokenize(conversation)
    ids, labels = result.input_ids, result.labels
    assert len(ids) == len(labels)
    assert template.tokenizer.decode(ids, skip_special_tokens=False) == result.text  # the text survives
    frames = sum(m["num_frames"] for m in conversation if m["role"] == "stream")
    assert ids.count(template.ids.v_placeholder) == frames * template.config.frame_num_tokens
    # a label is always the next input token (tiny has an interval token, so no eos relabelling), never the last
    assert all(label in (IGNORE_INDEX, ids[i + 1]) for i, label in enumerate(labels[:-1]))
    assert not labels or labels[-1] == IGNORE_INDEX
    learned_stream = sum(
        min(m["num_frames"], m["num_frames"] if m["learn"] is True else int(m["learn"] or 0))
        for m in conversation
        if m["role"] == "stream" and m["learn"] is not False
    )
    learned_text = any(m["role"] == "assistant" and m["learn"] for m in conversation)
    assert (any(label != IGNORE_INDEX for label in labels)) == bool(learned_stream or learned_text)


@FAST
@given(
    conversation=CONVERSATIONS.filter(lambda c: any(m["role"] != "stream" for m in c)),
    bad=st.sampled_from([None, 5, 1.5, ["a"], {"a": 1}, True]),
    data=st.data(),
)
def test_a_non_string_content_is_named_by_the_schema_and_refused_by_the_template(template, conversation, bad, data):
    index = data.draw(st.sampled_from([i for i, m in enumerate(conversation) if m["role"] != "stream"]))
    conversation[index] = {**conversation[index], "content": bad}
    problem = conversation_problem(conversation)
    assert problem is not None and problem.startswith(f"conversation[{index}].content must be a string")
    with pytest.raises(ValueError, match="string content"):
        template.tokenize(conversation)


def test_a_typed_placeholder_is_read_as_a_frame_slot(template):
    """A known limit, pinned so that a fix shows up: `<v>` typed in a message becomes the placeholder token."""
    ids = template.tokenize([{"role": "user", "content": "what is <v>?"}]).input_ids
    assert ids.count(template.ids.v_placeholder) == 1


# ---------------------------------------------------------------------- the history writer
# and the lone surrogates Python makes of command-line bytes that are not UTF-8 (`--query $'\xff'`)
ANY_TEXT = st.text(max_size=40) | st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), max_size=3)


@FAST
@given(
    turns=st.lists(
        st.tuples(
            st.sampled_from(["user", "assistant"]), ANY_TEXT, st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
        ),
        max_size=6,
    ),
    video_path=ANY_TEXT,
)
def test_the_history_on_disk_is_always_valid_finite_json(tmp_path_factory, turns, video_path):
    from videollm_online.apps.narrate import History
    from videollm_online.engine import StreamEvent

    path = tmp_path_factory.mktemp("history") / "h.json"
    history = History(video_path=video_path, frame_fps=2.0, model="tiny", path=path)
    history.save()
    for role, text, when in turns:
        history.add(StreamEvent(video_time=when, role=role, text=text))
        raw = path.read_bytes().decode("utf-8")  # always UTF-8, also for text with lone surrogates (escaped)

        def refuse(constant):
            raise AssertionError(f"{constant} in the history")

        saved = json.loads(raw, parse_constant=refuse)
        assert saved["conversation"] == history.conversation
        assert all(math.isfinite(turn["time"]) and turn["time"] >= 0 for turn in saved["conversation"])
    assert json.loads(path.read_text(encoding="utf-8"))["conversation"] == history.conversation


@pytest.mark.parametrize("when", [math.nan, math.inf, -math.inf])
def test_a_non_finite_time_is_refused_before_the_history_is_written(tmp_path, when):
    from videollm_online.apps.narrate import History
    from videollm_online.engine import StreamEvent

    path = tmp_path / "h.json"
    history = History(video_path="v.mp4", frame_fps=2.0, model="tiny", path=path)
    history.add(StreamEvent(video_time=1.0, role="assistant", text="fine"))
    before = path.read_bytes()
    with pytest.raises(ValueError):
        history.add(StreamEvent(video_time=when, role="assistant", text="broken"))
    assert path.read_bytes() == before  # the file still holds the last good history


# ---------------------------------------------------------------------- the frame samplers
RATES = st.sampled_from([Fraction(25), Fraction(30000, 1001), Fraction(10), Fraction(2), Fraction(60), Fraction(24)])
TARGETS = st.one_of(
    st.sampled_from([0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
    st.floats(0.01, 60, allow_nan=False, allow_infinity=False),
)


@FAST
@given(source_fps=RATES, fps=TARGETS, frames=st.integers(1, 300))
def test_ffmpeg_rate_sampler_times_increase_and_match_the_duration(source_fps, fps, frames):
    """The sampler is `ffmpeg -r` to the frame, repeats past the end included; the stream (video/stream.py) gives
    only the slots before the video's end. Here: slots consecutive from 0, and the slots before the end number
    duration x fps within one."""
    duration = frames / source_fps  # a constant-rate video of `frames` frames
    assume(duration * Fraction(fps).limit_denominator(1_001_000) < 2000)
    sampler: FfmpegRateSampler[int] = FfmpegRateSampler(fps)
    time_base = 1 / source_fps
    out = []
    for index in range(frames):
        out += sampler.push(index, time_base, 1, index)
    out += sampler.flush()
    slots = [slot for slot, _ in out]
    assert slots == list(range(len(slots)))  # output i has time i / fps: strictly increasing, no gaps
    payloads = [payload for _, payload in out]
    assert payloads == sorted(payloads)  # frames come out in the order they went in
    expected = duration * sampler.fps
    before_end = [slot for slot in slots if slot < expected]  # time slot / fps < duration
    assert abs(len(before_end) - expected) <= 1, (len(before_end), float(expected))
    assert len(slots) - len(before_end) <= 2  # past the end: at most ffmpeg's repeats of the last frame


@FAST
@given(fps=TARGETS, gaps=st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=200))
def test_live_sampler_slots_increase_and_never_run_ahead_of_their_frame(fps, gaps):
    sampler = LiveSampler(fps)
    time, previous = 0.0, -1
    for gap in gaps:
        time += gap
        slot = sampler.push(time)
        if slot is None:
            continue
        assert slot > previous  # each slot once, in order
        assert slot / sampler.fps <= time + 1e-6  # a slot is filled by a frame at or after its time
        assert time - slot / sampler.fps < 1 / sampler.fps + 1e-6  # by the first frame that reaches it
        previous = slot
    assert previous >= 0 if gaps else True


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(source_fps=st.sampled_from([5, 10, 24, 25, 30]), frames=st.integers(1, 40), fps=TARGETS)
def test_a_decoded_video_is_sampled_up_to_its_end(tmp_path, source_fps, frames, fps):
    """The whole path (PyAV decoding, the ffmpeg-rate sampler, the stream's end rule) on a real clip: frame times
    i / fps strictly increasing from 0, none at or past the video's end, their count duration x fps within one."""
    from clips import write_clip
    from videollm_online.video import open_video

    path = write_clip(tmp_path / f"clip-{source_fps}-{frames}.mp4", size=(16, 16), frames=frames, fps=source_fps)
    duration = frames / source_fps
    with open_video(str(path), fps=fps, resolution=16) as stream:
        sampled = [(frame.index, frame.time) for frame in stream]
    rate = float(Fraction(fps).limit_denominator(1_001_000))
    assert [index for index, _ in sampled] == list(range(len(sampled)))
    assert all(math.isclose(time, index / rate, abs_tol=1e-6) for index, time in sampled)
    assert all(time < duration for _, time in sampled)  # never at or past the end
    assert abs(len(sampled) - duration * rate) <= 1, (len(sampled), duration * rate)
