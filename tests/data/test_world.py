"""The synthetic world: determinism, annotation schema, state replay, event timing, rendering and resumable writing."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from videollm_online.data.world import (
    EVENT_KINDS,
    Episode,
    WorldConfig,
    generate_episode,
    load_world,
    make_event_draft,
    num_frames,
    render_episode,
    render_frame,
    state_at,
    write_world,
)
from videollm_online.data.world.simulation import _World
from videollm_online.data.world_language import PALETTE, PLACES, SHAPES

TINY = WorldConfig(width=64, height=48, fps=5, min_duration=6.0, max_duration=8.0)
SEEDS = range(40)


def test_config_rejects_nonsense():
    for bad in (
        {"width": 33},
        {"height": 16},
        {"fps": 0},
        {"min_duration": 30, "max_duration": 20},
        {"event_duration": (2.0, 1.0)},
        {"idle_gap": (-1, 2)},
        {"idle_gap": 3},
        {"task_prob": 1.5},
        {"noise_std": -1.0},
        {"crf": 60},
        {"max_objects": 1},
        {"width": 64.0},
    ):
        with pytest.raises(ValueError):
            WorldConfig(**bad)
    assert WorldConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    with pytest.raises(ValueError, match="valid fields"):
        WorldConfig.from_dict({"widht": 64})


def test_same_seed_same_episode_and_pixels():
    a, b = generate_episode(7, TINY), generate_episode(7, TINY)
    assert json.dumps(a.to_annotation()) == json.dumps(b.to_annotation())
    assert np.array_equal(render_frame(a, 0, TINY), render_frame(b, 0, TINY))
    c = generate_episode(8, TINY)
    assert c.to_annotation() != a.to_annotation()
    assert not np.array_equal(render_frame(a, 0, TINY), render_frame(c, 0, TINY))
    assert render_frame(a, 0, TINY).shape == (48, 64, 3)


def test_annotation_schema():
    config = WorldConfig()
    for seed in SEEDS:
        episode = generate_episode(seed, config)
        annotation = json.loads(json.dumps(episode.to_annotation()))
        assert Episode.from_annotation(annotation) == episode
        assert set(annotation) == {
            "format",
            "seed",
            "duration",
            "background",
            "objects",
            "initial_state",
            "events",
            "narrations",
            "task",
        }
        assert config.min_duration <= annotation["duration"] <= config.max_duration + 0.1
        ids = [o["id"] for o in annotation["objects"]]
        assert set(annotation["initial_state"]) == set(ids)
        for obj in annotation["objects"]:
            assert obj["shape"] in SHAPES and obj["size"] in ("small", "large")
        for event in annotation["events"]:
            assert event["kind"] in EVENT_KINDS and event["object"] in ids
            assert set(event["after"]) == {"visible", "colour", "pos", "scale", "on", "inside"}
            assert event["after"]["colour"] in PALETTE
            for key in ("text", "text_past", "text_ongoing"):
                assert event[key].startswith("You ") and event[key].endswith(".")
        assert annotation["narrations"] == [{"time": e["end"], "text": e["text"]} for e in annotation["events"]]
        task = annotation["task"]
        assert set(task) == {"goal", "steps"}
        assert (task["goal"] is None) == (not task["steps"])
        for step, following in zip(task["steps"], task["steps"][1:] + [None]):
            assert set(step) == {"start", "end", "text"} and 0 < step["start"] < step["end"] < annotation["duration"]
            assert following is None or step["end"] < following["start"]


def test_some_episodes_pursue_goals_with_multi_event_steps():
    episodes = [generate_episode(seed) for seed in SEEDS]
    goals = [e.task.goal for e in episodes if e.task.goal]
    assert len(goals) > len(episodes) // 2
    assert {e.kind for ep in episodes for e in ep.events} == set(EVENT_KINDS)
    multi = [
        s for ep in episodes for s in ep.task.steps if sum(s.start <= e.start and e.end <= s.end for e in ep.events) > 1
    ]
    assert multi, "some step (sorting by colour) should span several events"


def test_event_timing():
    config = WorldConfig()
    for seed in SEEDS:
        episode = generate_episode(seed, config)
        previous_end = 0.0
        for event in episode.events:
            gap, length = event.start - previous_end, event.end - event.start
            assert config.idle_gap[0] - 0.011 <= gap <= config.idle_gap[1] + 0.011
            assert config.event_duration[0] - 0.011 <= length <= config.event_duration[1] + 0.011
            previous_end = event.end
        assert episode.duration - previous_end >= config.idle_gap[0] - 1e-6
        spans = [(e.start, e.end) for e in episode.events]
        for narration in episode.narrations:  # said when the motion completes, inside its span
            assert any(start < narration["time"] <= end for start, end in spans)
        for step in episode.task.steps:
            assert any(step.start == start for start, _ in spans) and any(step.end == end for _, end in spans)


def test_object_names_are_unique_at_all_times():
    for seed in SEEDS:
        episode = generate_episode(seed)
        annotation = episode.to_annotation()
        shapes = {o.id: o.shape for o in episode.objects}
        for t in [0.0] + [e.end for e in episode.events]:
            state = {o: s.colour for o, s in episode.initial_state.items()}
            for event in episode.events:
                if event.end <= t:
                    state[event.object] = event.after.colour
            assert len({(colour, shapes[o]) for o, colour in state.items()}) == len(state)
            views = state_at(annotation, t)
            assert all(v.position in PLACES for v in views)
            for v in views:  # contained and stacked objects report their holder's place
                holder = v.inside or v.on
                if holder is not None:
                    assert v.position == next(h.position for h in views if h.id == holder)


def test_state_at_hand_built(hand_annotation):
    def summary(t):
        return [(v.id, v.colour, v.shape, v.size, v.position, v.on, v.inside) for v in state_at(hand_annotation, t)]

    circle = ("o0", "red", "circle", "small", "left", None, None)
    square = ("o1", "blue", "square", "large", "bottom right", None, None)
    box = ("o2", "green", "box", "large", "right", None, None)
    assert summary(0.0) == summary(1.99) == [circle, square]
    assert summary(2.0) == summary(4.5) == [circle, square, box]
    in_box = ("o0", "red", "circle", "small", "right", None, "o2")
    assert summary(5.0) == [in_box, square, box]
    assert summary(7.0) == [in_box, ("o1", "yellow", "square", "large", "bottom right", None, None), box]
    assert summary(9.5) == [("o1", "yellow", "square", "large", "bottom right", None, None), box]
    assert state_at(hand_annotation, 5.0)[0].describe() == "the red circle"
    assert state_at(hand_annotation, 5.0)[0].describe("a", with_size=True) == "a small red circle"
    episode = Episode.from_annotation(hand_annotation)
    assert state_at(episode, 7.0) == state_at(hand_annotation, 7.0)


def test_event_kinds_registry(hand_annotation):
    episode = Episode.from_annotation(hand_annotation)
    world = _World({o.id: o for o in episode.objects}, dict(episode.initial_state))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="valid kinds: enter, appear, leave, move"):
        make_event_draft(world, rng, "teleport")
    draft = make_event_draft(world, rng, "move", obj="o0", place="top left")
    assert draft is not None and draft.after.pos is not None
    assert draft.after.pos[0] < 1 / 3 and draft.after.pos[1] < 1 / 3
    assert make_event_draft(world, rng, "put_into", obj="o0", target="o2") is None  # the box is not on the table


def test_render_writes_decodable_mp4(tmp_path):
    episode = generate_episode(3, TINY)
    path = render_episode(episode, tmp_path / "clip.mp4", TINY)
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == num_frames(episode.duration, TINY.fps) == round(episode.duration * TINY.fps)
    assert frames[0].shape == (TINY.height, TINY.width, 3)
    error = np.abs(frames[0].astype(float) - render_frame(episode, 0, TINY).astype(float)).mean()
    assert error < 12  # lossy, but the same picture


def test_write_world_is_resumable(tmp_path):
    first = write_world(tmp_path, 2, seed=5, config=TINY, progress=False)
    assert first.written == ["000000", "000001"] and first.skipped == []
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "index.json"}
    again = write_world(tmp_path, 2, seed=5, config=TINY, progress=False)
    assert again.written == [] and again.skipped == ["000000", "000001"]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
    (tmp_path / "annotations" / "000001.json").unlink()  # as if interrupted before the annotation was written
    resumed = write_world(tmp_path, 3, seed=5, config=TINY, progress=False)
    assert resumed.written == ["000001", "000002"] and resumed.skipped == ["000000"]
    annotations = load_world(tmp_path)
    assert [a["id"] for a in annotations] == ["000000", "000001", "000002"]
    for annotation in annotations:
        assert annotation["video"]["num_frames"] == num_frames(annotation["duration"], TINY.fps)
        assert (tmp_path / annotation["video"]["path"]).exists()
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ValueError, match="another directory"):
        write_world(tmp_path, 1, seed=6, config=TINY, progress=False)
