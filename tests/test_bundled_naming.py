"""The bundled model is named for what it is, and says once, in one line, when it is given video of another world."""

import json
import shutil

import pytest

from videollm_online.apps.cli import main
from videollm_online.core.bundled import DEMO_MODEL_NAME, NOT_WORLD_NOTE, is_world_video, not_world_note
from videollm_online.core.checkpoint import BUNDLED_MODEL_DIR, display_name
from videollm_online.data.world import WorldConfig, write_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    write_world(
        out,
        1,
        seed=2,
        config=WorldConfig(width=96, height=96, fps=2, min_duration=6, max_duration=8, time_grid=0.5),
        progress=False,
    )
    return out


def test_world_videos_are_told_from_other_video(world, make_clip, tmp_path):
    video = world / "videos" / "000000.mp4"
    assert is_world_video(video)
    moved = tmp_path / "moved.mp4"  # a world video away from its world: its container tag still says so
    shutil.copy(video, moved)
    assert is_world_video(moved)
    assert not is_world_video(make_clip("real.mp4", frames=20, fps=10, size=(96, 96)))  # same size, not a world
    assert not is_world_video(tmp_path / "missing.mp4") and not is_world_video(tmp_path)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    assert not is_world_video(tmp_path / "junk.mp4")


def test_a_world_written_before_the_tag_is_known_by_its_annotation(make_clip, tmp_path):
    (tmp_path / "old" / "videos").mkdir(parents=True)
    (tmp_path / "old" / "annotations").mkdir()
    clip = make_clip("000000.mp4", frames=10, fps=2)
    untagged = shutil.move(clip, tmp_path / "old" / "videos" / "000000.mp4")
    assert not is_world_video(untagged)
    (tmp_path / "old" / "annotations" / "000000.json").write_text(json.dumps({"format": "synth_world/1"}))
    assert is_world_video(untagged)


def test_the_note_is_for_the_bundled_model_on_other_video_only(world, make_clip):
    clip = make_clip("real.mp4", frames=10, fps=10)
    assert not_world_note(DEMO_MODEL_NAME, clip) == NOT_WORLD_NOTE
    assert not_world_note(DEMO_MODEL_NAME, None) == NOT_WORLD_NOTE  # the webcam
    assert not_world_note(DEMO_MODEL_NAME, world / "videos" / "000000.mp4") is None
    assert not_world_note("chenjoya/videollm-online-8b-v1plus", clip) is None
    assert "\n" not in NOT_WORLD_NOTE
    assert "videollm-online download chenjoya/videollm-online-8b-v1plus" in NOT_WORLD_NOTE


@pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "videollm_online.json").exists(), reason="no bundled model")
def test_narrate_names_the_bundled_model_and_notes_other_video_once(world, make_clip, tmp_path, capsys):
    pytest.importorskip("gguf")
    assert display_name(str(BUNDLED_MODEL_DIR)) == DEMO_MODEL_NAME
    clip = make_clip("real.mp4", frames=30, fps=10, size=(128, 96))  # 3 s of a gradient: not the world
    history = tmp_path / "real.json"
    assert main(["narrate", str(clip), "--output", str(history), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("trained on the synthetic world") == 1
    assert json.loads(history.read_text())["model"] == DEMO_MODEL_NAME
    assert str(BUNDLED_MODEL_DIR) not in history.read_text()

    assert main(["narrate", str(world / "videos" / "000000.mp4"), "--output", str(tmp_path / "w.json"), "-q"]) == 0
    assert "trained on the synthetic world" not in capsys.readouterr().err
