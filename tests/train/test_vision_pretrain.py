"""Vision pretraining on frames rendered on the fly or read from a preprocessed world: targets, the video path,
determinism, learning on a fixed batch, and the command end to end (checkpoint reloads with identical outputs, and
`train --model` continues from it)."""

from __future__ import annotations

import json
import pickle
from itertools import islice

import numpy as np
import pytest
import torch

from tiny_models import tiny_config
from videollm_online.apps.cli import main
from videollm_online.core.checkpoint import build_model, load_checkpoint
from videollm_online.core.model import preprocess_frames
from videollm_online.data.world import (
    DrawnObject,
    WorldConfig,
    generate_episode,
    render_episode,
    render_frames,
)
from videollm_online.train.vision_pretrain import (
    CELL_HEADS,
    CELLS,
    FRAME_HEADS,
    PAIRS,
    SPOTS,
    RandomWorldFrames,
    RecordedWorldFrames,
    VisionPretrainConfig,
    VisionPretrainModel,
    WorldFrames,
    frame_targets,
    heldout_items,
    pretrain_loss,
    pretrain_vision,
    recorded_world,
    video_frame,
)
from videollm_online.utils.errors import UserError
from videollm_online.video import open_video

WORLD = WorldConfig(width=64, height=64, fps=2, time_grid=0.5, min_duration=8.0, max_duration=10.0)


def _part(heads, name: str) -> slice:
    offset = 0
    for head in heads:
        if head.name == name:
            return slice(offset, offset + len(head.classes))
        offset += len(head.classes)
    raise KeyError(name)


def test_targets_say_what_stands_in_each_cell():
    def obj(oid, shape, size, colour, place, xy, on=None, inside=None, scale=1.0, active=False):
        return DrawnObject(oid, shape, size, colour, xy, place, scale, on, inside, active)

    objects = [
        obj("o0", "square", "large", "red", "top left", (0.15, 0.15)),
        obj("o1", "square", "small", "blue", "top left", (0.15, 0.1), on="o0"),
        obj("o2", "box", "large", "green", "centre", (0.5, 0.5)),
        obj("o3", "star", "small", "yellow", "centre", (0.48, 0.5), inside="o2", scale=0.75, active=True),
        obj("o4", "circle", "small", "white", "left", (-0.03, 0.5)),  # entering: centre off the frame, partly in
        obj("o5", "circle", "large", "black", "bottom", (0.5, 0.85), scale=0.1),  # just appearing
        obj("o6", "star", "small", "red", "right", (1.2, 0.5)),  # gone: wholly off the frame (radius 0.05)
    ]
    cells, frame = frame_targets(objects)
    assert cells.shape == (9, sum(len(h.classes) for h in CELL_HEADS))
    assert frame.shape == (sum(len(h.classes) for h in FRAME_HEADS),)
    count = cells[:, _part(CELL_HEADS, "count")].argmax(1)
    assert count.tolist() == [2, 0, 0, 0, 2, 0, 0, 0, 0]  # CELLS is row-major: top left, top, top right, left, ...
    assert CELLS[0] == "top left" and CELLS[4] == "centre"
    top_left, centre = cells[0], cells[4]
    assert top_left[_part(CELL_HEADS, "colour")].tolist() == [1, 0, 1, 0, 0, 0, 0, 0]  # red, blue
    assert top_left[_part(CELL_HEADS, "size")].tolist() == [1, 1]
    assert top_left[_part(CELL_HEADS, "stacked")].tolist() == [1] and centre[_part(CELL_HEADS, "stacked")] == 0
    assert centre[_part(CELL_HEADS, "contained")].tolist() == [1]
    pairs = {PAIRS[i] for i in np.flatnonzero(centre[_part(CELL_HEADS, "pair")])}
    assert pairs == {"green box", "yellow star"}
    assert cells[[1, 2, 3, 5, 6, 7, 8]][:, _part(CELL_HEADS, "colour")].sum() == 0  # o4, o5 do not count
    assert frame[_part(FRAME_HEADS, "objects")].argmax() == 4
    assert frame[_part(FRAME_HEADS, "pairs")].sum() == 4 and frame[_part(FRAME_HEADS, "active")].tolist() == [1]
    # Where in its cell each object stands (o1 sits high on o0), and the parts of events.
    spots = {cell: {SPOTS[i] for i in np.flatnonzero(cells[cell, _part(CELL_HEADS, "spot")])} for cell in range(9)}
    assert spots == {0: {"middle centre", "upper centre"}, 4: {"middle centre"}} | {
        c: set() for c in (1, 2, 3, 5, 6, 7, 8)
    }
    for head, cell in (("event", 4), ("edge", 3), ("growing", 7)):  # o3 moving, o4 coming in, o5 appearing
        assert cells[:, _part(CELL_HEADS, head)].flatten().tolist() == [float(c == cell) for c in range(9)], head


def test_head_names_are_unique():
    """The accuracy report keys its entries by head name: a cell head and a frame head must not share one."""
    names = [head.name for head in CELL_HEADS + FRAME_HEADS]
    assert len(names) == len(set(names)), names


def test_rendered_frames_look_like_decoded_video_frames(tmp_path):
    episode = generate_episode(3, WORLD)
    render_episode(episode, tmp_path / "v.mp4", WORLD)
    with open_video(str(tmp_path / "v.mp4"), fps=2, resolution=32) as stream:
        decoded = [frame.image for frame in stream]
    rendered = [image for image, _ in render_frames(episode, range(len(decoded)), WORLD)]
    ours = [video_frame(image, 32) for image in rendered]
    assert ours[0].shape == decoded[0].shape == (32, 32, 3) and ours[0].dtype == np.uint8
    error = np.mean([np.abs(a.astype(float) - b.astype(float)).mean() for a, b in zip(ours, decoded)])
    assert error < 3.0  # what remains is the H.264 quantisation


def test_random_frames_are_reproducible_and_skip_held_out_episodes():
    def first(seed, exclude=frozenset(), n=3):
        return [s["pixels"] for s in islice(iter(RandomWorldFrames(WORLD, 32, seed, 2, exclude)), n)]

    a, b, c = first(5), first(5), first(6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    first_seed = int(np.random.default_rng([5, 0, 1]).integers(2**32))  # what worker 0 of 1 draws first
    skipped = first(5, frozenset({first_seed}), n=1)
    assert not torch.equal(skipped[0], a[0])
    items = heldout_items(WORLD, 2, 3, 10)
    assert items == heldout_items(WORLD, 2, 3, 10) and len({seed for seed, _ in items}) == 3


def test_rare_yeses_weigh_more_in_the_loss():
    """A yes of a weighted sigmoid head costs `positive_weight` times its cross-entropy; a no costs it once."""
    import math

    from videollm_online.train.vision_pretrain import Head, _head_losses

    heads = (Head("plain", ("plain",), multi=True), Head("rare", ("rare",), multi=True, positive_weight=10.0))
    logits = torch.zeros(1, 2)
    yes = _head_losses(logits, torch.ones(1, 2), heads)
    no = _head_losses(logits, torch.zeros(1, 2), heads)
    assert yes["plain"].item() == pytest.approx(math.log(2)) and yes["rare"].item() == pytest.approx(10 * math.log(2))
    assert no["plain"].item() == pytest.approx(math.log(2)) and no["rare"].item() == pytest.approx(math.log(2))


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    live, _ = build_model(tiny_config())
    model = VisionPretrainModel(live.frame_encoder).train()
    batch = [WorldFrames(heldout_items(WORLD, 9, 4, 8), WORLD, 32)[i] for i in range(8)]
    pixels = preprocess_frames(torch.stack([s["pixels"] for s in batch]), live.config)
    cells, frame = torch.stack([s["cells"] for s in batch]), torch.stack([s["frame"] for s in batch])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, parts = pretrain_loss(model, pixels, cells, frame)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert set(parts) == {h.name for h in CELL_HEADS + FRAME_HEADS}
    assert losses[-1] < 0.5 * losses[0], losses


def test_heads_need_the_three_by_three_grid():
    live, _ = build_model(tiny_config(frame_token_pooled=2, frame_num_tokens=5))
    with pytest.raises(UserError, match="3 x 3"):
        VisionPretrainModel(live.frame_encoder)
    with pytest.raises(ValueError, match="max_steps"):
        VisionPretrainConfig(output_dir="x")


def test_pretraining_writes_a_checkpoint_that_reloads_and_that_train_continues(tmp_path):
    config = VisionPretrainConfig(
        output_dir=str(tmp_path / "vision"),
        model="tiny",
        video_size=64,
        max_steps=4,
        batch_size=8,
        frames_per_episode=4,
        workers=1,
        heldout_videos=2,
        eval_frames=16,
        eval_every=2,
        log_every=2,
        seed=1,
    )
    result = pretrain_vision(config, progress=False)
    reloaded, _ = load_checkpoint(result.final_dir)
    pixels = preprocess_frames(
        torch.stack([WorldFrames(heldout_items(WORLD, 4, 2, 4), WORLD, 32)[i]["pixels"] for i in range(4)]),
        reloaded.config,
    )
    with torch.no_grad():
        assert torch.equal(reloaded.frame_encoder(pixels), result.model.frame_encoder(pixels))
        fresh, _ = build_model(tiny_config())
        assert not torch.equal(fresh.frame_encoder(pixels), reloaded.frame_encoder(pixels))
    assert (result.final_dir / "vision" / "model.safetensors").exists()
    assert reloaded.config.extra["vision_pretrain"]["steps"] == 4
    metrics = json.loads((tmp_path / "vision" / "vision_metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["frames_seen"] == 32 and metrics["frames_per_s"] > 0
    for name in ("count", "colour", "shape", "size", "pair", "cell", "objects", "pairs_set", "active"):
        assert 0 <= metrics["accuracy"][name]["accuracy"] <= 1 and metrics["accuracy"][name]["n"] > 0
    log = [json.loads(line) for line in (tmp_path / "vision" / "vision_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "eval" in e] == [0, 2, 4]
    assert [e["step"] for e in log if "loss" in e] == [2, 4] and all(e["frames_per_s"] > 0 for e in log if "loss" in e)

    world = tmp_path / "world"
    assert (
        main(
            [
                "data",
                "synth-world",
                "--out",
                str(world),
                "--videos",
                "1",
                "--seed",
                "7",
                "--size",
                "64",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "--min-duration",
                "8",
                "--max-duration",
                "10",
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "preprocess",
                str(world / "videos"),
                "--out",
                str(world / "frames"),
                "--fps",
                "2",
                "--resolution",
                "32",
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(world / "conversations.jsonl"),
                "--frames",
                str(world / "frames"),
                "--output-dir",
                str(tmp_path / "lm"),
                "--model",
                str(result.final_dir),
                "--batch-size",
                "1",
                "--lora-r",
                "4",
                "--lora-alpha",
                "8",
                "--max-steps",
                "2",
                "--train-vision",
                "--vision-learning-rate",
                "1e-5",
            ]
        )
        == 0
    )
    continued, _ = load_checkpoint(tmp_path / "lm" / "final")
    assert continued.config.extra["vision_pretrain"]["steps"] == 4  # the checkpoint's history travels on


def _write_world(out, seed: int, videos: int = 2, resolution: int = 32) -> None:
    assert (
        main(
            [
                "data",
                "synth-world",
                "--out",
                str(out),
                "--videos",
                str(videos),
                "--seed",
                str(seed),
                "--size",
                "64",
                "--video-fps",
                "2",
                "--time-grid",
                "0.5",
                "--min-duration",
                "8",
                "--max-duration",
                "10",
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "data",
                "preprocess",
                str(out / "videos"),
                "--out",
                str(out / "frames"),
                "--fps",
                "2",
                "--resolution",
                str(resolution),
                "-q",
            ]
        )
        == 0
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("recorded") / "world"
    _write_world(out, seed=7)
    return out


def test_recorded_frames_are_the_decoded_frames_with_the_targets_of_their_time(recorded):
    config = VisionPretrainConfig(
        output_dir="unused", model="tiny", video_size=64, max_steps=1, heldout_videos=2, world_dir=str(recorded)
    )
    videos = recorded_world(config, 32)
    annotations = videos.annotations()
    assert [a["id"] for a in annotations] == ["000000", "000001"]
    dataset = RecordedWorldFrames(videos, WORLD, seed=0, frames_per_episode=3)
    for annotation in annotations:
        episode = generate_episode(annotation["seed"], WORLD)
        rendered = list(render_frames(episode, range(int(episode.duration * 2)), WORLD))
        indices = list(range(1, len(rendered) - 1))
        samples = dataset.samples(annotation, indices)
        for i, sample in zip(indices, samples):
            cells, frame = frame_targets(rendered[i][1])
            assert np.array_equal(sample["cells"].numpy(), cells) and np.array_equal(sample["frame"].numpy(), frame)
            # the stored frame is the decoded frame i: nearer to rendered frame i than to its neighbours
            errors = [
                np.abs(sample["pixels"].numpy().astype(float) - video_frame(rendered[j][0], 32)).mean()
                for j in (i - 1, i, i + 1)
            ]
            assert errors[1] == min(errors) and errors[1] < 3.0, (i, errors)
    a = [s["pixels"] for s in islice(iter(dataset), 6)]
    b = [s["pixels"] for s in islice(iter(RecordedWorldFrames(videos, WORLD, 0, 3)), 6)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_recorded_frames_pickle_without_their_annotations(recorded):
    """Spawned DataLoader workers start one after another when the pickled dataset overflows the pipe's buffer (the
    parent waits for each to read it): the dataset carries annotation file names, and each worker reads its share."""
    config = VisionPretrainConfig(
        output_dir="unused", model="tiny", video_size=64, max_steps=1, heldout_videos=2, world_dir=str(recorded)
    )
    dataset = RecordedWorldFrames(recorded_world(config, 32), WORLD, seed=0, frames_per_episode=3)
    smallest_annotation = min(len(path.read_bytes()) for path in (recorded / "annotations").glob("*.json"))
    assert len(pickle.dumps(dataset)) < smallest_annotation
    copy = pickle.loads(pickle.dumps(dataset))
    assert all(torch.equal(x["pixels"], y["pixels"]) for x, y in zip(islice(iter(copy), 6), islice(iter(dataset), 6)))


def test_pretraining_on_a_recorded_world(recorded, tmp_path):
    config = VisionPretrainConfig(
        output_dir=str(tmp_path / "vision"),
        model="tiny",
        video_size=64,
        max_steps=3,
        batch_size=8,
        frames_per_episode=4,
        heldout_videos=2,
        eval_frames=8,
        eval_every=3,
        log_every=1,
        world_dir=str(recorded),
    )
    result = pretrain_vision(config, progress=False)
    assert result.metrics["steps"] == 3 and result.metrics["frames_seen"] == 24
    assert (result.final_dir / "vision" / "model.safetensors").exists()


def test_a_recorded_world_must_be_usable(recorded, tmp_path):
    def check(**kwargs):
        config = VisionPretrainConfig(
            output_dir="unused", model="tiny", video_size=64, max_steps=1, heldout_videos=2, **kwargs
        )
        return recorded_world(config, 32)

    with pytest.raises(UserError, match="resolution|px"):
        recorded_world(
            VisionPretrainConfig(output_dir="unused", video_size=64, max_steps=1, world_dir=str(recorded)), 64
        )
    with pytest.raises(UserError, match="no annotations"):
        check(world_dir=str(tmp_path))
    with pytest.raises(UserError, match="no preprocessed frames"):
        (tmp_path / "empty" / "annotations").mkdir(parents=True)
        (tmp_path / "empty" / "annotations" / "000000.json").write_text(
            (recorded / "annotations" / "000000.json").read_text()
        )
        (tmp_path / "empty" / "frames").mkdir()
        check(world_dir=str(tmp_path / "empty"))
    heldout = tmp_path / "heldout"
    _write_world(heldout, seed=2, videos=1)
    with pytest.raises(UserError, match="held-out episode"):
        check(world_dir=str(heldout))


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main(["train-vision", "--output-dir", str(tmp_path / "x")]) == 2
    assert "max_steps" in capsys.readouterr().err
    assert (
        main(
            [
                "train-vision",
                "--output-dir",
                str(tmp_path / "x"),
                "--max-steps",
                "1",
                "--model",
                str(tmp_path / "nowhere"),
            ]
        )
        == 2
    )
