"""Augmentation golden cases (wrong then fixed, late, wrong, missed), invariants over random draws, and `data
convert` end to end with augmented copies, frame clipping and the robustness set."""

from __future__ import annotations

import json
import random

from videollm_online.apps.cli import main
from videollm_online.core.config import LiveConfig
from videollm_online.core.text import IGNORE_INDEX, StreamTemplate, build_tiny_tokenizer
from videollm_online.data.augment import CORRECTION_PREFIX, augment_conversation, perturb
from videollm_online.data.datasets.common import stream_frames

SYSTEM = {"role": "system", "content": "S"}
USER = {"role": "user", "content": "Narrate."}


def stream(num_frames, learn=True):
    return {"role": "stream", "num_frames": num_frames, "learn": learn}


def said(content, learn=True):
    return {"role": "assistant", "content": content, "learn": learn}


CONVERSATION = [SYSTEM, stream(1, False), USER, said("A."), stream(3), said("B."), stream(4), said("C.")]


def test_wrong_then_fixed():
    assert perturb(CONVERSATION, 5, "C.", fixed=True) == [
        SYSTEM,
        stream(1, False),
        USER,
        said("A."),
        stream(3),
        said("C.", learn=False),  # the wrong text is read, not learned
        stream(1),
        said(f"{CORRECTION_PREFIX} B."),  # one frame later the model corrects itself
        stream(3),
        said("C."),
    ]


def test_late():
    assert perturb(CONVERSATION, 5, None, fixed=True) == [
        SYSTEM,
        stream(1, False),
        USER,
        said("A."),
        stream(4, learn=2),  # the frame where B belonged, and the one after, teach nothing
        said("B."),
        stream(3),
        said("C."),
    ]


def test_wrong_not_fixed():
    assert perturb(CONVERSATION, 5, "", fixed=False) == [
        SYSTEM,
        stream(1, False),
        USER,
        said("A."),
        stream(3),
        said("", learn=False),
        stream(4, learn=False),
        said("C."),
    ]


def test_missed():
    assert perturb(CONVERSATION, 5, None, fixed=False) == [
        SYSTEM,
        stream(1, False),
        USER,
        said("A."),
        stream(7, learn=2),
        said("C."),
    ]
    # a turn right after the user's question, missed: the stream that follows teaches nothing
    assert perturb(CONVERSATION, 3, None, fixed=False) == [
        SYSTEM,
        stream(1, False),
        USER,
        stream(3, learn=False),
        said("B."),
        stream(4),
        said("C."),
    ]


def test_cases_that_do_not_fit_leave_the_conversation():
    short = [SYSTEM, USER, said("A."), stream(1), said("B.")]
    assert perturb(short, 2, "B.", fixed=True) == short  # one frame to the next turn: nothing to fix within
    assert perturb(short, 2, None, fixed=True) == short
    single = [SYSTEM, stream(2), said("A.")]
    assert augment_conversation(single, random.Random(0)) == single


def test_random_augmentation_keeps_frames_and_renders():
    template = StreamTemplate(build_tiny_tokenizer(), LiveConfig.from_name("tiny"))
    seen = set()
    for seed in range(200):
        augmented = augment_conversation(CONVERSATION, random.Random(seed))
        assert stream_frames(augmented) == stream_frames(CONVERSATION) == 8
        assert augmented[-1] == said("C.")  # the last turn is never touched
        seen.add(tuple(m["role"] + str(m.get("learn")) for m in augmented))
        tokens = template.tokenize(augmented)
        assert any(label != IGNORE_INDEX for label in tokens.labels)
    assert len(seen) >= 5  # the four cases, at two positions, and no-ops
    assert CONVERSATION[5] == said("B.")  # the input is never changed


def test_convert_command_with_augmentation_and_clipping(tmp_path, capsys):
    dialogue = {
        "video_uid": "v",
        "conversation": [
            {"role": "user", "content": "Help me.", "time": 1.0},
            {"role": "assistant", "content": "Sure.", "time": 1.0},
            {"role": "assistant", "content": "Cut.", "time": 4.0},
            {"role": "assistant", "content": "Stir.", "time": 8.0},
        ],
    }
    (tmp_path / "d.json").write_text(json.dumps([dialogue]))
    (tmp_path / "meta.json").write_text(json.dumps({"v": 10.0}))
    out = tmp_path / "rows.jsonl"
    args = [
        "data",
        "convert",
        "--dataset",
        "ego4d-goalstep-livechat",
        "--anno-root",
        str(tmp_path / "d.json"),
        "--video-metadata",
        str(tmp_path / "meta.json"),
        "--out",
        str(out),
        "--augment",
        "3",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and [r.get("augmented") for r in rows] == [None, 1, 2, 3]
    assert all(stream_frames(r["conversation"]) == r["end_frame"] - r["start_frame"] for r in rows)
    assert "4 conversations written (3 of them augmented copies)" in capsys.readouterr().err
    assert main([*args[:-2], "--max-frames", "8"]) == 0
    (clipped,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert clipped["conversation"][-1]["content"] == "Cut." and clipped["end_frame"] - clipped["start_frame"] <= 8


def test_convert_command_errors(tmp_path, capsys):
    assert main(["data", "convert", "--dataset", "nope", "--anno-root", str(tmp_path), "--out", "x.jsonl"]) == 2
    assert "valid datasets:" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "convert",
                "--dataset",
                "ego4d-narration",
                "--anno-root",
                str(tmp_path / "missing"),
                "--out",
                "x.jsonl",
            ]
        )
        == 2
    )
    assert "no such file or directory" in capsys.readouterr().err


def test_convert_robustness_writes_its_frames(tmp_path):
    import torch
    from safetensors.torch import save_file

    frames = tmp_path / "frames"
    frames.mkdir()
    save_file({"frames": torch.zeros(2, 8, 8, 3, dtype=torch.uint8)}, frames / "v.safetensors")
    out = tmp_path / "robust.jsonl"
    assert (
        main(
            [
                "data",
                "convert",
                "--dataset",
                "robustness",
                "--anno-root",
                str(tmp_path),
                "--frames",
                str(frames),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert len(out.read_text().splitlines()) == 5
    assert (frames / "robustness-noise.safetensors").exists() and (frames / "robustness-blank.safetensors").exists()


def test_robustness_rows_train_through_the_dataset(tmp_path):
    """The robustness rows (text-only ones included) load, collate and give a finite loss with a tiny model."""
    import torch
    from safetensors.torch import save_file

    from tiny_models import tiny_model
    from videollm_online.data.datasets import ConvertOptions, get_loader
    from videollm_online.data.datasets.robustness import write_robustness_frames
    from videollm_online.data.frames import FrameStore
    from videollm_online.train.dataset import StreamCollator, StreamDataset

    model, template = tiny_model()
    size = model.config.frame_resolution
    save_file({"frames": torch.zeros(2, size, size, 3, dtype=torch.uint8)}, tmp_path / "v.safetensors")
    write_robustness_frames(tmp_path)
    rows = get_loader("robustness")(ConvertOptions(tmp_path)).rows
    dataset = StreamDataset(rows, FrameStore(tmp_path), template)
    collate = StreamCollator(template)
    for batch in (collate([dataset[i] for i in range(len(dataset))]), collate([dataset[0], dataset[1]])):
        assert torch.isfinite(model(**batch).loss)
