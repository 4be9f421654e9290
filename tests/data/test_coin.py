"""Golden rows of the COIN loader: a hand-written COIN.json -> the exact conversations, frame ranges and labels."""

from __future__ import annotations

import json

import pytest

from videollm_online.data.datasets import DATASETS, ConvertOptions
from videollm_online.data.datasets.coin import CoinCategories, clean_task, read_coin
from videollm_online.utils.errors import UserError

SYS = "SYS"
STEP_Q = "What is the action in the video? Format your answer concisely. No extra text output."
TASK_Q = "What is the overall activity in the video? Format your answer concisely. No extra text output."
NEXT_Q = "What is the next action for the video? Format your answer concisely. No extra text output."
PROC_Q = (
    "What is the next 2 actions for the video? Format your answer concisely, listing each action on a new line "
    "with a number prefix. No extra text output."
)
GOAL_Q = (
    "To replace CD drive with SSD, what is the next 2 actions for the video? Format your answer concisely, "
    "listing each action on a new line with a number prefix. No extra text output."
)
GOAL_NEXT_Q = (
    "To replace CD drive with SSD, what is the next action for the video? Format your answer concisely. "
    "No extra text output."
)

COIN_JSON = {
    "database": {
        "vidA": {
            "recipe_type": 7,
            "class": "ReplaceCDDriveWithSSD",
            "subset": "testing",
            "start": 1.2,
            "end": 9.0,
            "video_url": "https://example.invalid/vidA",
            "annotation": [
                {"segment": [1.2, 3.0], "id": "11", "label": "unscrew the screws"},
                {"segment": [3.5, 5.25], "id": "12", "label": "process (crop, fold) paper"},
                {"segment": [6.0, 8.4], "id": "13", "label": "install the new drive"},
            ],
        },
        "vidB": {
            "recipe_type": 2,
            "class": "PutOnHair",
            "subset": "training",
            "start": 0.0,
            "end": 4.0,
            "annotation": [
                {"segment": [0.0, 2.0], "id": "1", "label": "comb hair"},
                {"segment": [2.2, 3.9], "id": "2", "label": "tie hair"},
            ],
        },
        "vidC": {
            "recipe_type": 3,
            "class": "MakeTea",
            "subset": "testing",
            "start": 0.0,
            "end": 2.0,
            "annotation": [{"segment": [0.0, 1.0], "id": "5", "label": "boil water"}],
        },
    }
}
FRAMES = {"vidA": 18, "vidB": 9}  # vidC has no frames: skipped


@pytest.fixture
def root(tmp_path):
    (tmp_path / "COIN.json").write_text(json.dumps(COIN_JSON))
    return tmp_path


def rows(root, name, split="test"):
    options = ConvertOptions(anno_root=root, split=split, fps=2.0, video_frames=FRAMES, system_prompt=SYS)
    return DATASETS[name](options)


def conversation(question, num_frames, answer):
    return [
        {"role": "system", "content": SYS},
        {"role": "user", "content": question},
        {"role": "stream", "num_frames": num_frames, "learn": True},
        {"role": "assistant", "content": answer, "learn": True},
    ]


def row(kind, start, end, question, answer, labels, video="vidA"):
    return {
        "video": video,
        "kind": kind,
        "conversation": conversation(question, end - start, answer),
        "start_frame": start,
        "end_frame": end,
        "labels": labels,
    }


def test_categories_and_task_names(root):
    categories = CoinCategories.from_videos(read_coin(root / "COIN.json"))
    assert categories.steps == (
        "Boil water.",
        "Comb hair.",
        "Crop and fold paper.",
        "Install the new drive.",
        "Tie hair.",
        "Unscrew the screws.",
    )
    assert categories.tasks == ("Make tea.", "Put on hair.", "Replace cd drive with ssd.")  # str.capitalize
    assert clean_task("ReplaceCDDriveWithSSD") == "replace CD drive with SSD"
    assert clean_task("ChangeTVRemoteBattery") == "change TV remote battery"
    assert clean_task("InstallRJ45Connector") == "install RJ45 connector"


def test_step_rows(root):
    converted = rows(root, "coin-step")
    # steps at 2 fps: ceil(2.4)=3 .. ceil(6.0)=6; ceil(7.0)=7 .. ceil(10.5)=11; ceil(12)=12 .. ceil(16.8)=17 (last)
    assert converted.rows == [
        row("coin-step", 3, 7, STEP_Q, "Unscrew the screws.", [5]),
        row("coin-step", 7, 12, STEP_Q, "Crop and fold paper.", [2]),
        row("coin-step", 12, 18, STEP_Q, "Install the new drive.", [3]),
    ]
    assert converted.skipped == {"video without frames": 1}


def test_task_next_procedure_rows(root):
    # the task sees start..end: ceil(2.4)=3 .. ceil(18)=18 clamped to the last frame 17
    assert rows(root, "coin-task").rows == [row("coin-task", 3, 18, TASK_Q, "Replace cd drive with ssd.", [2])]
    assert rows(root, "coin-next").rows == [
        row("coin-next", 3, 7, NEXT_Q, "Crop and fold paper.", [2]),
        row("coin-next", 7, 12, NEXT_Q, "Install the new drive.", [3]),
    ]
    assert rows(root, "coin-procedure").rows == [
        row("coin-procedure", 3, 7, PROC_Q, "1. Crop and fold paper.\n2. Install the new drive.", [2, 3]),
        row("coin-procedure", 7, 12, NEXT_Q, "Install the new drive.", [3]),  # one step left: the next-step question
    ]
    assert rows(root, "coin-procedure-goal").rows == [
        row("coin-procedure-goal", 3, 7, GOAL_Q, "1. Crop and fold paper.\n2. Install the new drive.", [2, 3]),
        row("coin-procedure-goal", 7, 12, GOAL_NEXT_Q, "Install the new drive.", [3]),
    ]


def test_train_split(root):
    assert rows(root, "coin-step", "train").rows == [
        row("coin-step", 0, 5, STEP_Q, "Comb hair.", [1], video="vidB"),
        row("coin-step", 5, 9, STEP_Q, "Tie hair.", [4], video="vidB"),  # ceil(7.8)=8 is the last frame
    ]


def test_errors(root, tmp_path_factory):
    with pytest.raises(UserError, match="no 'val' split; valid splits: train, test"):
        rows(root, "coin-step", "val")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(UserError, match=r"expected .*COIN\.json"):
        rows(empty, "coin-step")
    (empty / "COIN.json").write_text(json.dumps({"database": {"v": {"class": "X", "subset": "testing"}}}))
    with pytest.raises(UserError, match="video 'v' is malformed"):
        rows(empty, "coin-step")
