"""Golden tests of the dataset loaders: small annotation files in each dataset's real schema, written here, and the
exact conversations and frame ranges they must give."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import save_file

from videollm_online.data.datasets import DATASETS, ConvertOptions, get_loader
from videollm_online.data.datasets.common import ceil_frame, floor_frame, frames_from_metadata, frames_from_store
from videollm_online.data.datasets.ego4d_narration import (
    BENCHMARK_KEYS,
    NARRATION_INSTRUCTIONS,
    REFINED_NARRATION_INSTRUCTIONS,
    clean_text,
)
from videollm_online.data.datasets.robustness import BLANK_VIDEO, NOISE_VIDEO, write_robustness_frames
from videollm_online.data.streaming import DEFAULT_SYSTEM_PROMPT
from videollm_online.utils.errors import UserError

SYSTEM = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def stream(num_frames, learn=True):
    return {"role": "stream", "num_frames": num_frames, "learn": learn}


def said(content, time):
    return {"role": "assistant", "content": content, "time": time, "learn": True}


def asked(content, time):
    return {"role": "user", "content": content, "time": time}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_time_to_frame_rules():
    assert ceil_frame(1.2, 2, 0, 20) == 3 and floor_frame(1.2, 2, 0, 20) == 2
    assert ceil_frame(1.5, 2, 0, 20) == floor_frame(1.5, 2, 0, 20) == 3  # on a frame: that frame
    assert ceil_frame(0.7, 10, 0, 20) == 7  # 0.7 * 10 = 7.000000000000001 in floats
    assert ceil_frame(30.0, 2, 0, 20) == 20 and floor_frame(-1, 2, 4, 20) == 4


def test_clean_text():
    assert clean_text("#C C picks up a cup") == "C picks up a cup."
    assert clean_text("#c c opens the door. ") == "C opens the door."
    assert clean_text("  #O X   waves at #C C,.") == "X waves at C."
    assert clean_text("@c looks #unsure #Unsure around") == "Looks around."
    assert clean_text("#unsure") == "."


def test_registry_lists_names():
    assert {"ego4d-narration", "ego4d-refined-narration", "ego4d-goalstep-livechat", "robustness"} <= set(DATASETS)
    with pytest.raises(UserError, match="valid datasets: .*ego4d-narration"):
        get_loader("ego5d")


# ---------------------------------------------------------------------- Ego4D narration stream
@pytest.fixture
def ego4d_root(tmp_path):
    root = tmp_path / "annotations"
    narrations = [
        {"time": 1.2, "text": "#C C picks up a cup", "_annotation_uid": "a1"},
        {"time": 0.4, "text": "#C C looks around.", "_annotation_uid": "a1"},
        {"time": 1.4, "text": "#C C drinks", "_annotation_uid": "a1"},  # frame of the previous: replaces it
        {"time": 3.1, "text": "#C C drinks", "_annotation_uid": "a1"},  # same text again: dropped
        {"time": 3.2, "text": "#unsure", "_annotation_uid": "a1"},  # fewer than two words: dropped
        {"time": 4.0, "text": "#O X waves at #C C  ", "_annotation_uid": "a1"},
        {"time": 30.0, "text": "#C C leaves", "_annotation_uid": "a1"},  # past the end: the last frame
        {"time": 40.0, "text": "#C C sits down", "_annotation_uid": "a1"},  # after the last frame: stop
        {"time": 2.0, "text": "#c c opens the door.", "_annotation_uid": "a2"},
    ]
    videos = {
        "vidA": {"narrations": narrations, "summaries": []},
        "vidB": {"narrations": [{"time": 1.0, "text": "#C C walks", "_annotation_uid": "b1"}]},
        "vidC": {"narrations": [{"time": 1.0, "text": "#C C runs", "_annotation_uid": "c1"}]},
        "vidD": {"narrations": [{"time": 0.0, "text": "#C C stands", "_annotation_uid": "d1"}]},
        "vidE": {"narrations": [{"time": 1.0, "text": "#C C sleeps", "_annotation_uid": "e1"}]},
    }
    write(root / "all_narrations_redacted.json", {"videos": videos})
    for benchmark, key in BENCHMARK_KEYS.items():
        write(root / f"{benchmark}_val.json", {key: []})
        write(root / f"{benchmark}_test_unannotated.json", {key: []})
    write(root / "goalstep_val.json", {"videos": [{"video_uid": "vidB"}]})
    write(root / "nlq_val.json", {"videos": [{"video_uid": "vidD"}]})
    write(root / "fho_lta_test_unannotated.json", {"clips": [{"video_uid": "vidC"}, {"video_uid": "vidD"}]})
    return root


FRAMES = {"vidA": 21, "vidB": 10, "vidC": 10, "vidD": 10}  # vidE is not preprocessed


def test_narration_stream_golden(ego4d_root):
    result = get_loader("ego4d-narration")(ConvertOptions(ego4d_root, "train", fps=2, video_frames=FRAMES))
    instruction = {"role": "user", "content": NARRATION_INSTRUCTIONS[0]}
    assert result.rows == [
        {
            "video": "vidA",
            "kind": "ego4d-narration",
            "annotation_uid": "a1",
            "start_frame": 1,
            "end_frame": 21,
            "conversation": [
                SYSTEM,
                stream(1, learn=False),  # the first narration's frame (0.4 s -> frame 1), then the instruction
                instruction,
                said("C looks around.", 0.4),
                stream(2),  # frames 2, 3 (1.2 and 1.4 s both ceil to frame 3: the later text wins)
                said("C drinks.", 1.4),
                stream(5),  # frames 4..8 (4.0 s)
                said("X waves at C.", 4.0),
                stream(12),  # frames 9..20: 30 s is past the end, so the last frame (10 s)
                said("C leaves.", 30.0),
            ],
        },
        {
            "video": "vidA",
            "kind": "ego4d-narration",
            "annotation_uid": "a2",
            "start_frame": 4,
            "end_frame": 5,
            "conversation": [SYSTEM, stream(1, learn=False), instruction, said("C opens the door.", 2.0)],
        },
    ]
    assert dict(result.skipped) == {"video has no frames (not preprocessed)": 1}  # vidE


def test_narration_splits(ego4d_root):
    def videos(split):
        rows = get_loader("ego4d-narration")(ConvertOptions(ego4d_root, split, video_frames=FRAMES)).rows
        return sorted({row["video"] for row in rows})

    # val: in a benchmark's val set; test: in a test set and not in val (vidD is in both); train: the rest
    assert (videos("train"), videos("val"), videos("test")) == (["vidA"], ["vidB", "vidD"], ["vidC"])
    row = get_loader("ego4d-narration")(ConvertOptions(ego4d_root, "val", video_frames=FRAMES)).rows[1]
    assert row["start_frame"] == 0 and row["conversation"][1:] == [  # a narration at 0 s: frame 0
        stream(1, learn=False),
        {"role": "user", "content": NARRATION_INSTRUCTIONS[0]},
        said("C stands.", 0.0),
    ]
    (ego4d_root / "vq_val.json").unlink()
    with pytest.raises(UserError, match="missing: vq_val.json"):
        get_loader("ego4d-narration")(ConvertOptions(ego4d_root, "train", video_frames=FRAMES))
    write(ego4d_root / "narration_stream_video_uids_train.json", ["vidC"])  # a saved split list wins
    assert videos("train") == ["vidC"]


def test_narration_needs_video_lengths(ego4d_root):
    with pytest.raises(UserError, match="--frames DIR"):
        get_loader("ego4d-narration")(ConvertOptions(ego4d_root, "train"))


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_refined_narration_golden(tmp_path, layout):
    passes = {
        "r1": [
            {"time": 2.6, "text": "You open the fridge."},
            {"time": 0.9, "text": "You look around."},
            {"time": 2.6, "text": "You take the milk."},
        ]
    }
    if layout == "file":
        write(tmp_path / "refined_narration_stream_val.json", {"vidR": passes})
    else:
        write(tmp_path / "refined_narration_stream_val" / "vidR.json", passes)
    rows = get_loader("ego4d-refined-narration")(ConvertOptions(tmp_path, "val", seed=3, video_frames={"vidR": 8})).rows
    instruction = {"role": "user", "content": random.Random(3).choice(REFINED_NARRATION_INSTRUCTIONS)}
    assert rows == [
        {
            "video": "vidR",
            "kind": "ego4d-refined-narration",
            "annotation_uid": "r1",
            "start_frame": 2,
            "end_frame": 7,
            "conversation": [
                SYSTEM,
                stream(1, learn=False),
                instruction,
                said("You look around.", 0.9),
                stream(4),
                said("You take the milk.", 2.6),
            ],
        }
    ]  # equal times keep file order: last wins


# ---------------------------------------------------------------------- Ego4D GoalStep live chat
def test_goalstep_livechat_golden(tmp_path):
    dialogues = [
        {
            "video_uid": "vg",
            "conversation": [
                {"role": "user", "content": "What should I do next?", "time": 10.3},
                {"role": "assistant", "content": "Take the knife.", "time": 10.3},  # answers at once
                {"role": "assistant", "content": "Now cut the onion.", "time": 12.1},  # ceil: frame 25
                {"role": "assistant", "content": "Dropped.", "time": 12.3},  # frame 25 again: dropped
                {"role": "user", "content": "How many steps are left?", "time": 15.0},  # floor: frame 30
                {"role": "assistant", "content": "Two.", "time": 15.0},
                {"role": "assistant", "content": "Two steps.", "time": 15.0},  # same time: replaces the text
                {"role": "assistant", "content": "Too late.", "time": 70.0},  # past the end: stop
            ],
        },
        {"video_uid": "vg", "conversation": [{"role": "assistant", "content": "Hi.", "time": 2.0}]},
        {"video_uid": "vg", "conversation": []},
        {"video_uid": "elsewhere", "conversation": [{"role": "user", "content": "Hi?", "time": 2.0}]},
        {
            "video_uid": "vg",
            "conversation": [
                {"role": "user", "content": "Where is the pan?", "time": 5.0},
                {"role": "assistant", "content": "On the stove.", "time": 6.0},
                {"role": "assistant", "content": "Earlier.", "time": 5.5},  # time goes back: stop
            ],
        },
    ]
    write(tmp_path / "goalstep_livechat_trainval_filtered_21k.json", dialogues)
    result = get_loader("ego4d-goalstep-livechat")(ConvertOptions(tmp_path, seed=0, video_frames={"vg": 121}))
    rng = random.Random(0)  # the waiting frames before each opening question: up to 20, seeded
    wait1, wait2 = rng.randint(0, 20), rng.randint(0, 10)
    assert (wait1, wait2) == (12, 6)  # golden for seed 0
    assert result.rows == [
        {
            "video": "vg",
            "kind": "ego4d-goalstep-livechat",
            "start_frame": 20 - 12 + 1,
            "end_frame": 31,
            "conversation": [
                SYSTEM,
                stream(12, learn=11),  # frames 9..20: silence, but never learn to speak where the user does
                asked("What should I do next?", 10.3),
                said("Take the knife.", 10.3),
                stream(5),  # 21..25
                said("Now cut the onion.", 12.1),
                stream(5, learn=4),  # 26..30, then the user
                asked("How many steps are left?", 15.0),
                said("Two steps.", 15.0),
            ],
        },
        {
            "video": "vg",
            "kind": "ego4d-goalstep-livechat",
            "start_frame": 10 - 6 + 1,
            "end_frame": 13,
            "conversation": [
                SYSTEM,
                stream(6, learn=5),
                asked("Where is the pan?", 5.0),
                stream(2),
                said("On the stove.", 6.0),
            ],
        },
    ]
    assert dict(result.skipped) == {
        "does not open with a user turn inside the video": 1,
        "empty dialogue": 1,
        "video has no frames (not preprocessed)": 1,
    }


def test_goalstep_livechat_reads_synthesized_jsonl(tmp_path):
    path = tmp_path / "dialogues.jsonl"
    path.write_text(
        json.dumps(
            {
                "id": "x#0",
                "video_uid": "v",
                "conversation": [
                    {"role": "user", "content": "Now?", "time": 0.5},
                    {"role": "assistant", "content": "Stir.", "time": 1.0},
                ],
            }
        )
        + "\n"
    )
    rows = get_loader("ego4d-goalstep-livechat")(ConvertOptions(path, seed=1, video_frames={"v": 4})).rows
    wait = random.Random(1).randint(0, 1)
    assert rows[0]["conversation"][-2:] == [stream(1), said("Stir.", 1.0)]
    assert rows[0]["start_frame"] == 1 - wait + 1 and rows[0]["end_frame"] == 3


# ---------------------------------------------------------------------- robustness and video lengths
def test_robustness_golden(tmp_path):
    rows = get_loader("robustness")(ConvertOptions(tmp_path)).rows
    assert [(r["video"], r["start_frame"], r["end_frame"]) for r in rows] == [
        (BLANK_VIDEO, 0, 0),
        (BLANK_VIDEO, 0, 0),
        (BLANK_VIDEO, 0, 0),
        (NOISE_VIDEO, 0, 10),
        (BLANK_VIDEO, 0, 1),
    ]
    assert rows[3]["conversation"] == [
        SYSTEM,
        stream(10, learn=False),
        {"role": "user", "content": "What is happening now?"},
        {
            "role": "assistant",
            "content": "Sorry, the video frames look like noise. Could you check the camera?",
            "learn": True,
        },
    ]
    assert all(r["conversation"][-1]["role"] == "assistant" and r["conversation"][-1]["learn"] for r in rows)


@pytest.mark.parametrize("kind", ["frames", "features"])
def test_robustness_frames_match_the_store(tmp_path, kind):
    if kind == "frames":
        save_file(
            {"frames": torch.full((3, 8, 8, 3), 7, dtype=torch.uint8)},
            tmp_path / "v.safetensors",
            metadata={"fps": "2"},
        )
    else:
        save_file({"features": torch.ones(3, 10, 4, dtype=torch.bfloat16)}, tmp_path / "v.safetensors")
    write_robustness_frames(tmp_path)
    counts = frames_from_store(tmp_path)
    assert counts == {"v": 3, NOISE_VIDEO: 10, BLANK_VIDEO: 1}
    from safetensors.torch import load_file

    noise, blank = (load_file(tmp_path / f"{v}.safetensors")[kind] for v in (NOISE_VIDEO, BLANK_VIDEO))
    assert noise.shape[1:] == blank.shape[1:] == ((8, 8, 3) if kind == "frames" else (10, 4))
    assert noise.dtype == blank.dtype == (torch.uint8 if kind == "frames" else torch.bfloat16)
    assert not blank.any() and noise.float().std() > 0
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="preprocess"):
        write_robustness_frames(tmp_path / "empty")


def test_video_lengths_from_metadata(tmp_path):
    ego4d = write(
        tmp_path / "ego4d.json",
        {"videos": [{"video_uid": "a", "duration_sec": 10.0}, {"video_uid": "b", "duration_sec": 2.3}]},
    )
    assert frames_from_metadata(ego4d, 2) == {"a": 20, "b": 5}  # the sampler's frames: times below the end
    assert frames_from_metadata(write(tmp_path / "d.json", {"c": 1.0}), 2) == {"c": 2}
    with pytest.raises(UserError, match="expected Ego4D metadata"):
        frames_from_metadata(write(tmp_path / "bad.json", [1, 2]), 2)
