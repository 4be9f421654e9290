"""Golden rows of the Ego4D LTA loader and its answer parser, from hand-written fho_lta files."""

from __future__ import annotations

import json

import pytest

from videollm_online.data.datasets import DATASETS, ConvertOptions
from videollm_online.data.datasets.ego4d_lta import LtaTaxonomy, taxonomy_word
from videollm_online.utils.errors import UserError

SYS = "SYS"
TAXONOMY = {
    "verbs": ["put_(place,_leave,_drop)", "take_(pick,_grab,_get)", "cut_(trim,_slice,_chop)"],
    "nouns": ["knife", "cutting_board", "nut_(food)", "pot_(planter)"],
}
VERBS, NOUNS = ["put", "take", "cut"], ["knife", "cutting board", "nuts", "flowerpot"]


def action(clip, video, k, labelled=True):
    entry = {
        "clip_uid": clip,
        "video_uid": video,
        "clip_parent_start_sec": 10.0,
        "action_idx": k,
        "action_clip_start_sec": k + 0.25,
        "action_clip_end_sec": k + 0.75,
        "clip_id": 0,
    }
    if labelled:
        entry.update(verb_label=k % 3, noun_label=k % 4, verb=TAXONOMY["verbs"][k % 3], noun=TAXONOMY["nouns"][k % 4])
    return entry


@pytest.fixture
def root(tmp_path):
    clips = [action("c1", "v1", k) for k in reversed(range(29))]  # 29 actions, out of order: 2 windows
    clips += [action("c2", "v1", k) for k in range(27)]  # too few actions
    clips += [action("c3", "v9", k) for k in range(28)]  # no frames for v9
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "fho_lta_taxonomy.json").write_text(json.dumps(TAXONOMY))
    (tmp_path / "annotations" / "fho_lta_val.json").write_text(json.dumps({"split": "val", "clips": clips}))
    test_clips = [action("t1", "v1", k, labelled=False) for k in range(28)]
    (tmp_path / "fho_lta_test_unannotated.json").write_text(json.dumps({"clips": test_clips}))
    return tmp_path


def convert(root, split="val"):
    options = ConvertOptions(anno_root=root, split=split, fps=2.0, video_frames={"v1": 100}, system_prompt=SYS)
    return DATASETS["ego4d-lta"](options)


def question(num_frames):
    return (
        f"After {num_frames} video frames, anticipate the next 20 actions. Format your answer concisely, listing "
        "each action on a new line with a number prefix. No extra text output."
    )


def test_taxonomy_words():
    assert [taxonomy_word(v) for v in TAXONOMY["verbs"]] == VERBS
    assert [taxonomy_word(n) for n in TAXONOMY["nouns"]] == NOUNS
    assert taxonomy_word("turn_off_(tap,_light)") == "turn off"
    assert taxonomy_word("bat_(sports)") == "sport bat"


def test_val_rows(root):
    converted = convert(root)
    first, second = converted.rows
    # window 0 shows actions 0..7: parent times 10.25 .. 17.75 -> round(20.5) = 20 .. round(35.5) = 36 (halves to
    # even, as Python's round), so frames 20..36 inclusive
    answer = "\n".join(f"{z + 1}. {VERBS[k % 3].capitalize()} {NOUNS[k % 4]}." for z, k in enumerate(range(8, 28)))
    assert answer.startswith("1. Cut knife.\n2. Put cutting board.\n3. Take nuts.\n4. Cut flowerpot.\n")
    assert first == {
        "video": "v1",
        "kind": "ego4d-lta",
        "start_frame": 20,
        "end_frame": 37,
        "clip_uid": "c1",
        "last_visible_action_idx": 7,
        "verb_labels": [k % 3 for k in range(8, 28)],
        "noun_labels": [k % 4 for k in range(8, 28)],
        "conversation": [
            {"role": "system", "content": SYS},
            {"role": "user", "content": question(17)},
            {"role": "stream", "num_frames": 17, "learn": True},
            {"role": "assistant", "content": answer, "learn": True},
        ],
    }
    # window 1: 11.25 .. 18.75 -> round(22.5) = 22 .. round(37.5) = 38
    assert (second["start_frame"], second["end_frame"], second["last_visible_action_idx"]) == (22, 39, 8)
    assert second["verb_labels"][0] == 9 % 3
    assert converted.skipped == {"clip with too few actions": 1, "video without frames": 1}


def test_unannotated_rows_have_no_answer(root):
    (row,) = convert(root, "test").rows
    assert row["verb_labels"] is None and row["noun_labels"] is None
    assert [m["role"] for m in row["conversation"]] == ["system", "user", "stream"]
    assert row["conversation"][-1]["learn"] is False


def test_parse_answers():
    taxonomy = LtaTaxonomy(TAXONOMY["verbs"], TAXONOMY["nouns"])
    text = "1. Cut knife.\n2. take cuttin board\nno number here\nStep 3. Put nuts.\n"
    labels = taxonomy.parse(text, 5)
    # exact; nearest by one edit; `Step 3.` prefix; then padded with the last one
    assert labels == [(2, 0), (1, 1), (0, 2), (0, 2), (0, 2)]
    assert taxonomy.parse("1. tut nuts", 1) == [(2, 2)]  # `cut nuts` and `put nuts` tie: alphabetically first
    assert taxonomy.parse("nothing numbered", 2) == [(0, 0), (0, 0)]  # the fallback: the first action text
    assert taxonomy.parse("\n".join(f"{k}. cut knife" for k in range(1, 30)), 20) == [(2, 0)] * 20


def test_errors(root):
    with pytest.raises(UserError, match="no 'trainval' split"):
        convert(root, "trainval")
    with pytest.raises(UserError, match="no fho_lta_train.json"):
        convert(root, "train")
