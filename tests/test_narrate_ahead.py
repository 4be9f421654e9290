"""`narrate` feeds a file's frames to the fast engine `--ahead N` at a time and says exactly what it says frame by
frame; which vision path ran (plain call on a CPU, `FrameEncoderRunner` on CUDA) is in the timing summary."""

import json

import pytest
import torch

from tiny_models import make_decisive, tiny_model
from videollm_online.apps.cli import main
from videollm_online.apps.narrate import VISION_INLINE, VISION_RUNNER, narrate_frames, warm_up
from videollm_online.core.checkpoint import BUNDLED_MODEL_DIR
from videollm_online.engine import open_session
from videollm_online.video import open_video


def narrate(clip, tmp_path, capsys, name, *extra):
    history = tmp_path / f"{name}.json"
    code = main([str(a) for a in ["narrate", clip, "--output", history, "--engine", "fast", *extra]])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(history.read_text())["conversation"], err


@pytest.mark.parametrize("ahead", [16, 5])
def test_tiny_model_says_the_same_with_blocks_of_frames(ahead, tiny_checkpoint, make_clip, tmp_path, capsys):
    clip = make_clip("clip.mp4", frames=100, fps=10, size=(96, 64))  # 10 s: 20 frames at 2 fps
    # 3.25 s falls inside the first block of frames (0 .. 7.5 s at 16 a block), between frames 6 and 7; 6.5 s is a
    # frame's own time; 9.9 s comes after the last frame (9.5 s): answered at the end
    queries = ["--query-at", "3.25:What now?", "--query-at", "6.5:And now?", "--query-at", "9.9:Anything else?"]
    common = ["--model", tiny_checkpoint, "--max-new-tokens", "4", *queries]
    blocks, err = narrate(clip, tmp_path, capsys, "blocks", *common, "--ahead", ahead)
    assert f"{ahead} frame(s) a step" in err and "vision inline" in err
    one_by_one, err = narrate(clip, tmp_path, capsys, "one", *common, "--ahead", 1)
    assert "1 frame(s) a step" in err
    assert blocks == one_by_one
    users = [turn["time"] for turn in blocks if turn["role"] == "user"]
    assert users == [3.25, 6.5, 9.9]
    said = [turn for turn in blocks if turn["role"] == "assistant"]
    assert len(said) > len(users)  # the model also spoke unprompted: blocks were rolled back where it did


def test_live_sources_keep_one_frame_at_a_time(tiny_checkpoint, make_clip, tmp_path, capsys):
    clip = make_clip("clip.mp4", frames=30, fps=10, size=(96, 64))
    _, err = narrate(
        clip, tmp_path, capsys, "live", "--model", tiny_checkpoint, "--max-new-tokens", "2", "--realtime", "--fps", "4"
    )
    assert "1 frame(s) a step" in err


@pytest.mark.skipif(not (BUNDLED_MODEL_DIR / "videollm_online.json").exists(), reason="no bundled model")
def test_bundled_model_says_the_same_with_blocks_of_frames(make_clip, tmp_path, capsys):
    pytest.importorskip("gguf")
    clip = make_clip("clip.mp4", frames=60, fps=5, size=(128, 96))  # 12 s: 24 frames at 2 fps
    common = ["--query-at", "5.2:How many objects are there?", "--max-new-tokens", "12", "-q"]
    blocks, _ = narrate(clip, tmp_path, capsys, "blocks", *common, "--ahead", 16)
    one_by_one, _ = narrate(clip, tmp_path, capsys, "one", *common, "--ahead", 1)
    assert blocks == one_by_one
    answer = blocks[[turn["role"] for turn in blocks].index("user") + 1]
    assert answer["role"] == "assistant" and answer["time"] == 5.2


def _frames(make_clip, model):
    clip = make_clip("clip.mp4", frames=40, fps=10, size=(96, 64))
    return open_video(str(clip), fps=2.0, resolution=model.config.frame_resolution)


def test_the_cpu_runs_the_plain_vision_path(make_clip):
    model, template = tiny_model()
    make_decisive(model, template, seed=2)
    with _frames(make_clip, model) as frames:
        events, times = narrate_frames(model, template, frames, engine="fast", ahead=16)
    assert times.summary()["vision_path"] == VISION_INLINE and times.summary()["ahead"] == 16
    # no CUDA graphs on a CPU: nothing is warmed up before the first frame, and nothing said about it
    assert times.summary()["warmup_graphs"] == 0 and times.summary()["warmup_s"] == 0.0
    with _frames(make_clip, model) as frames:
        assert times.frames == len(list(frames)) >= 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_the_frame_encoder_runner_and_says_the_same(make_clip):
    model, template = tiny_model()
    make_decisive(model, template, seed=2)
    said = {}
    for device in ("cpu", "cuda"):
        with _frames(make_clip, model.to(device)) as frames:
            events, times = narrate_frames(model, template, frames, engine="fast", ahead=16)
        said[device] = [(e.role, e.video_time) for e in events]
        assert times.vision_path == (VISION_RUNNER if device == "cuda" else VISION_INLINE)
        assert times.staged == (device == "cuda")  # a file's frames staged in page-locked buffers on CUDA only
    assert said["cuda"] == said["cpu"]


def test_the_warm_up_does_nothing_without_cuda_graphs():
    model, template = tiny_model()
    session = open_session(model, template, engine="fast", ahead=16)
    said = []
    assert warm_up(session, 1200, 16, queries=2, status=said.append) == (0, 0.0)
    assert said == [] and session.backend.static._graphs == {} and session.num_tokens == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_warms_up_the_files_shapes_before_the_first_frame(make_clip):
    model, template = tiny_model()
    make_decisive(model, template, seed=2)
    said = []
    with _frames(make_clip, model.to("cuda")) as frames:  # 4 s: 8 frames at 2 fps, counted from the duration
        events, times = narrate_frames(model, template, frames, engine="fast", ahead=16, status=said.append)
    # the block of 16 frames, the single frame and the reply token, at the one cache span 8 frames reach
    assert said == ["capturing 3 CUDA graphs for 8 frames (once, before the first frame) ..."]
    assert times.warmup_graphs == 3 and times.warmup > 0
    assert times.frames == 8 and times.summary()["warmup_graphs"] == 3
