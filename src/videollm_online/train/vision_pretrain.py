"""Vision pretraining: teach the vision tower to see the synthetic world before the LLM learns to talk about it.

Frames are rendered on the fly in DataLoader workers from random episodes (unlimited data, deterministic per seed
and worker count), and go through the video path the model meets later (yuv420p, then the `narrate` letterbox to
the model's resolution), so the camera jitter, lighting drift, noise and motion blur of the videos are all there.
Linear heads read each frame's ground truth off the very tokens the LLM gets: each of the 3 x 3 pooled tokens says
what stands in its place cell (how many objects, their colours, shapes, sizes, colour-shape pairs, stacked or in a
container, where in the cell, and the parts of events: the object being moved, objects coming in or going out at the
frame's edge, objects appearing), the CLS token says what the whole frame shows (how many objects, which colour-shape
pairs, whether an event is in progress). The result is a project checkpoint (trained `vision/`, fresh connector) that
`videollm-online train --model` continues from; held-out episodes (the evaluation world's seeds, never trained on)
give a per-head accuracy report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..core.config import PRESETS, LiveConfig
from ..core.model import FrameEncoder, LiveModel, preprocess_frames
from ..core.text import StreamTemplate
from ..data.frames import FrameStore
from ..data.world import (
    DrawnObject,
    WorldConfig,
    episode_seed,
    generate_episode,
    num_frames,
    object_radius,
    render_frames,
)
from ..data.world_language import PALETTE, PLACES, SHAPES, SIZES, place_of
from ..utils.errors import UserError
from ..utils.files import write_json_atomic

logger = logging.getLogger(__name__)
FINAL_DIR = "final"
HEADS_FILE = "vision_heads.safetensors"
LOG_FILE = "vision_log.jsonl"
METRICS_FILE = "vision_metrics.json"


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class VisionPretrainConfig:
    """What to pretrain, on which world, and how."""

    output_dir: str
    """The checkpoint goes to output_dir/final; the log (JSON lines) and the final metrics (JSON) beside it."""
    model: str = "demo-resnet"
    """A preset name (fresh encoder and connector) or a checkpoint whose encoder to train further."""
    video_size: int = 256
    """Width and height of the world's videos (`data synth-world --size`): frames are rendered at this size and
    then letterboxed to the model's resolution, as the videos are."""
    video_fps: int = 2
    """Frame rate of the world's videos (`--video-fps`); sets the motion blur and which times frames show."""
    time_grid: float = 0.5
    """Event time grid of the world (`--time-grid`)."""
    max_steps: int = -1
    """Optimiser steps; -1: until `max_time_minutes` is spent."""
    max_time_minutes: float | None = None
    """Wall-clock budget: the learning rate decays over it (or over max_steps, whichever ends first)."""
    batch_size: int = 256
    """Frames per step."""
    learning_rate: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    warmup_ratio: float = 0.05
    """Share of the steps (or of the time budget) over which the learning rate warms up."""
    frames_per_episode: int = 8
    """Frames taken from an episode before the next one: rendered (its texture drawn once) or read (`world_dir`)."""
    workers: int = 0
    """DataLoader processes rendering (or reading) frames (0: in the main process)."""
    world_dir: str | None = None
    """Train on the recorded frames of a world written by `data synth-world` and preprocessed (`data preprocess`
    into world_dir/frames at the model's resolution and the world's fps), with targets from its annotations,
    instead of rendering random episodes: nothing is drawn in the loop, so the GPU sets the pace, and the frames
    went through H.264 like every video the model meets. Its episodes must not be held-out ones."""
    frames_dir: str | None = None
    """Preprocessed frames of `world_dir` (default: world_dir/frames)."""
    device: str | None = None
    """Torch device; None: cuda when available, else cpu."""
    bf16: bool = False
    """bfloat16 autocast (GPU only)."""
    seed: int = 0
    """Seed of the training episodes and of the heads' initialisation."""
    heldout_seed: int = 2
    """World seed of the held-out episodes (`data synth-world --seed` of the evaluation world): its first
    `heldout_videos` episodes are never trained on, and the accuracy report renders frames from them."""
    heldout_videos: int = 50
    """Held-out videos of the `heldout_seed` world."""
    eval_frames: int = 1024
    """Held-out frames in each accuracy report."""
    eval_every: int = 500
    """Steps between accuracy reports (also one before the first step and one at the end)."""
    log_every: int = 25
    """Steps between log lines."""
    save_dtype: str | None = None
    """Store the checkpoint's weights in this dtype (e.g. float16)."""

    def __post_init__(self) -> None:
        if self.max_steps <= 0 and self.max_time_minutes is None:
            raise ValueError("give max_steps > 0 or max_time_minutes: vision pretraining has unlimited data")
        if self.max_time_minutes is not None and self.max_time_minutes <= 0:
            raise ValueError(f"max_time_minutes must be > 0, got {self.max_time_minutes}")
        for name in ("batch_size", "frames_per_episode", "heldout_videos", "eval_frames", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("need learning_rate > 0, weight_decay >= 0 and 0 <= warmup_ratio < 1")
        self.world_config()  # raises on a bad world

    def world_config(self) -> WorldConfig:
        """The world the frames come from (that of `data synth-world --size S --video-fps F --time-grid G`)."""
        return WorldConfig(width=self.video_size, height=self.video_size, fps=self.video_fps, time_grid=self.time_grid)


# ---------------------------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class Head:
    """One group of outputs of a linear head: one class (softmax) or any number of them (sigmoids)."""

    name: str
    classes: tuple[str, ...]
    multi: bool
    positive_weight: float = 1.0
    """Weight of a yes in the loss of a sigmoid head: rare yeses (a few cells in a thousand) otherwise teach the
    encoder next to nothing, and the head learns to say no."""


CELLS = tuple(PLACES)
"""The place cells, row-major from the top left: the order of the pooled tokens."""
PAIRS = tuple(f"{colour} {shape}" for colour in PALETTE for shape in SHAPES)
SPOTS = tuple(f"{row} {col}" for row in ("upper", "middle", "lower") for col in ("left", "centre", "right"))
"""Where an object's own centre stands within its place cell (a 3 x 3 grid in the cell), row-major."""
MAX_CELL_COUNT = 3
MAX_OBJECTS = 12
MIN_VISIBLE_SCALE = 0.35
"""An appearing object counts once drawn at this fraction of its size."""
GROWING_BELOW = 0.7
"""An object drawn smaller than this fraction of its size is appearing (one put into a container shrinks only to
0.75)."""
CELL_HEADS = (
    Head("count", tuple(str(i) for i in range(MAX_CELL_COUNT)) + (f"{MAX_CELL_COUNT}+",), multi=False),
    Head("colour", tuple(PALETTE), multi=True),
    Head("shape", SHAPES, multi=True),
    Head("size", SIZES, multi=True),
    Head("pair", PAIRS, multi=True),
    Head("stacked", ("stacked",), multi=True),
    Head("contained", ("contained",), multi=True),
    # What events are made of, which the LLM reads off consecutive frames: where exactly an object stands (a 9 x 9
    # grid over the frame, so a move within a cell shows), which object the event in progress moves, and objects
    # not yet or no longer fully there (coming in or going out at the frame's edge, growing where they appear).
    Head("spot", SPOTS, multi=True),
    Head("event", ("event",), multi=True, positive_weight=10.0),  # ~3 % of cells
    Head("edge", ("edge",), multi=True, positive_weight=30.0),  # ~0.1 % of cells, as for growing
    Head("growing", ("growing",), multi=True, positive_weight=30.0),
)
"""Read off each pooled token: what stands in its place cell (an object counts in the cell of the stack or
container it belongs to, as narrations place it), and where in the cell and in which state of an event."""
FRAME_HEADS = (
    Head("objects", tuple(str(i) for i in range(MAX_OBJECTS + 1)), multi=False),
    Head("pairs", PAIRS, multi=True),
    Head("active", ("active",), multi=True),
)
"""Read off the CLS token (or the mean pooled token without one): the whole frame."""


def _width(heads: Sequence[Head]) -> int:
    return sum(len(head.classes) for head in heads)


def _slices(heads: Sequence[Head]) -> Iterator[tuple[Head, slice]]:
    offset = 0
    for head in heads:
        yield head, slice(offset, offset + len(head.classes))
        offset += len(head.classes)


def _slices_by_name(heads: Sequence[Head]) -> dict[str, slice]:
    return {head.name: part for head, part in _slices(heads)}


def _centre_in_frame(obj: DrawnObject) -> bool:
    x, y = obj.xy
    return 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0


def in_view(obj: DrawnObject) -> bool:
    """Whether a frame shows an object well enough to be asked about: centre inside the frame, mostly grown."""
    return _centre_in_frame(obj) and obj.scale >= MIN_VISIBLE_SCALE


def at_edge(obj: DrawnObject) -> bool:
    """Whether an object is partly in the frame: its centre outside, some of it inside (coming in or going out)."""
    x, y = obj.xy
    reach = object_radius(obj.shape, obj.size) * obj.scale
    return not _centre_in_frame(obj) and -reach < x < 1 + reach and -reach < y < 1 + reach


def spot_of(obj: DrawnObject) -> str:
    """The `SPOTS` name of where an object's own centre stands in its place cell (clamped to the cell)."""
    cx, cy = PLACES[obj.place]  # the cell spans 1/6 either side of its centre
    col = min(2, max(0, int(((obj.xy[0] - cx) * 3 + 0.5) * 3)))
    row = min(2, max(0, int(((obj.xy[1] - cy) * 3 + 0.5) * 3)))
    return SPOTS[row * 3 + col]


def frame_targets(objects: Sequence[DrawnObject]) -> tuple[np.ndarray, np.ndarray]:
    """Targets of one frame: (9, cell outputs) and (frame outputs,), float32; one-hot for single-class heads."""
    cells = np.zeros((len(CELLS), _width(CELL_HEADS)), dtype=np.float32)
    frame = np.zeros(_width(FRAME_HEADS), dtype=np.float32)
    cell_slices, frame_slices = _slices_by_name(CELL_HEADS), _slices_by_name(FRAME_HEADS)
    visible = [obj for obj in objects if in_view(obj)]
    counts = [0] * len(CELLS)
    for obj in visible:
        row = cells[CELLS.index(obj.place)]
        counts[CELLS.index(obj.place)] += 1
        for head, value in (
            ("colour", obj.colour),
            ("shape", obj.shape),
            ("size", obj.size),
            ("pair", f"{obj.colour} {obj.shape}"),
            ("spot", spot_of(obj)),
        ):
            row[cell_slices[head].start + _classes(CELL_HEADS, head).index(value)] = 1.0
        if obj.on is not None:
            row[cell_slices["stacked"].start] = 1.0
        if obj.inside is not None:
            row[cell_slices["contained"].start] = 1.0
        if obj.active:
            row[cell_slices["event"].start] = 1.0
        frame[frame_slices["pairs"].start + PAIRS.index(f"{obj.colour} {obj.shape}")] = 1.0
    for obj in objects:
        if at_edge(obj):
            cells[CELLS.index(place_of(*obj.xy)), cell_slices["edge"].start] = 1.0
        elif obj.scale < GROWING_BELOW and _centre_in_frame(obj):
            cells[CELLS.index(obj.place), cell_slices["growing"].start] = 1.0
    for cell, count in enumerate(counts):
        cells[cell, cell_slices["count"].start + min(count, MAX_CELL_COUNT)] = 1.0
    frame[frame_slices["objects"].start + min(len(visible), MAX_OBJECTS)] = 1.0
    frame[frame_slices["active"].start] = float(any(obj.active for obj in visible))
    return cells, frame


def _classes(heads: Sequence[Head], name: str) -> tuple[str, ...]:
    return next(head.classes for head in heads if head.name == name)


# ---------------------------------------------------------------------------------------------------- data
def video_frame(image: np.ndarray, resolution: int) -> np.ndarray:
    """A rendered frame (H, W, 3) as the model receives it from a world video: through yuv420p (the mp4's pixel
    format) and the `narrate` letterbox to `resolution`. Only the H.264 quantisation is missing (about 1 grey level
    of mean difference, against 2 without the yuv420p step)."""
    import av

    from ..video.letterbox import letterbox

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuv420p")
    return letterbox(frame, resolution)


def _sample(image: np.ndarray, objects: list[DrawnObject], resolution: int) -> dict[str, torch.Tensor]:
    cells, frame = frame_targets(objects)
    return {
        "pixels": torch.from_numpy(video_frame(image, resolution)),
        "cells": torch.from_numpy(cells),
        "frame": torch.from_numpy(frame),
    }


class RandomWorldFrames(IterableDataset):
    """An endless stream of frames of random episodes with their targets. Each DataLoader worker draws its own
    episodes from (seed, worker id, worker count), so a run is reproducible for a given seed and worker count."""

    def __init__(
        self,
        world: WorldConfig,
        resolution: int,
        seed: int,
        frames_per_episode: int,
        exclude: frozenset[int] = frozenset(),
    ):
        self.world, self.resolution, self.seed = world, resolution, seed
        self.frames_per_episode, self.exclude = frames_per_episode, exclude

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([self.seed, worker, workers])
        while True:
            seed = int(rng.integers(2**32))
            if seed in self.exclude:
                continue
            episode = generate_episode(seed, self.world)
            total = num_frames(episode.duration, self.world.fps)
            indices = np.sort(rng.choice(total, size=min(self.frames_per_episode, total), replace=False))
            for image, objects in render_frames(episode, indices.tolist(), self.world):
                yield _sample(image, objects, self.resolution)


@dataclass(frozen=True)
class RecordedWorld:
    """The usable videos of a written and preprocessed world: their annotation files and their frames.

    Only names, no annotations: DataLoader workers are spawned, and a spawned worker's start blocks the parent until
    the worker has imported torch and read its pickled copy of the dataset, unless that copy fits in the pipe's
    buffer (64 KiB). With the 1800 annotations in it (several MB), 15 workers started one after another and the first
    batch came after 78 s on the GPU machine; with names (2 KB for 100 videos) they start together."""

    annotation_dir: Path
    files: tuple[str, ...]
    """Annotation file names, in order."""
    store: FrameStore

    def annotation(self, file: str) -> dict[str, Any]:
        return json.loads((self.annotation_dir / file).read_text())

    def annotations(self) -> list[dict[str, Any]]:
        return [self.annotation(file) for file in self.files]


class RecordedWorldFrames(IterableDataset):
    """An endless stream of frames of a written and preprocessed world, with their targets: each visit reads
    `frames_per_episode` random frames of a random video (its worker's share of the videos) from the frames store
    and computes what they show from the episode's annotation, without drawing anything."""

    def __init__(self, recorded: RecordedWorld, world: WorldConfig, seed: int, frames_per_episode: int):
        self.recorded, self.world = recorded, world
        self.seed, self.frames_per_episode = seed, frames_per_episode

    def samples(self, annotation: dict[str, Any], indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Frames `indices` of one video with their targets."""
        from ..data.world import Episode, drawn_objects

        frames = self.recorded.store.load_indices(annotation["id"], indices)
        episode = Episode.from_annotation(annotation)
        out = []
        for pixels, objects in zip(frames, drawn_objects(episode, indices, self.world)):
            cells, frame = frame_targets(objects)
            out.append({"pixels": pixels, "cells": torch.from_numpy(cells), "frame": torch.from_numpy(frame)})
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        files = self.recorded.files
        share = [self.recorded.annotation(file) for file in (files[worker::workers] or files)]
        rng = np.random.default_rng([self.seed, worker, workers])
        while True:
            annotation = share[int(rng.integers(len(share)))]
            total = self.recorded.store.num_frames(annotation["id"])
            indices = np.sort(rng.choice(total, size=min(self.frames_per_episode, total), replace=False)).tolist()
            yield from self.samples(annotation, indices)


def recorded_world(config: VisionPretrainConfig, resolution: int) -> RecordedWorld:
    """The usable videos of `config.world_dir` (those with preprocessed frames), checked: frames at the model's
    resolution and the world's fps for every video, no held-out episode."""
    world_dir = Path(config.world_dir)
    annotation_dir = world_dir / "annotations"
    if not annotation_dir.is_dir():
        raise UserError(f"{world_dir} has no annotations/: give a world written by `videollm-online data synth-world`")
    frames_dir = Path(config.frames_dir) if config.frames_dir else world_dir / "frames"
    store = FrameStore(frames_dir)
    paths = sorted(annotation_dir.glob("*.json"))
    heldout = set(heldout_seeds(config.heldout_seed, config.heldout_videos))
    usable = []
    for path in paths:
        annotation = json.loads(path.read_text())
        if int(annotation["seed"]) in heldout:
            raise UserError(
                f"{world_dir} holds held-out episode {annotation['id']} (world seed "
                f"{config.heldout_seed}): pretrain on a world written with another --seed"
            )
        if not store.path(annotation["id"]).exists():
            continue
        metadata = store.metadata(annotation["id"])
        if (
            float(metadata.get("fps", config.video_fps)) != config.video_fps
            or int(metadata.get("resolution", resolution)) != resolution
        ):
            raise UserError(
                f"{store.path(annotation['id'])} holds frames at {metadata.get('fps')} fps and "
                f"{metadata.get('resolution')} px; this needs {config.video_fps} fps (--video-fps) and "
                f"{resolution} px (the model's): preprocess with `data preprocess --preset` of the model"
            )
        usable.append(path.name)
    if not usable:
        raise UserError(
            f"no preprocessed frames in {frames_dir} for the videos of {world_dir}: run "
            f"`videollm-online data preprocess {world_dir / 'videos'} --out {frames_dir} --preset ...`"
        )
    if len(usable) < len(paths):
        logger.warning(
            "%d of %d videos of %s have no preprocessed frames: training on the other %d",
            len(paths) - len(usable),
            len(paths),
            world_dir,
            len(usable),
        )
    return RecordedWorld(annotation_dir, tuple(usable), store)


class WorldFrames(Dataset):
    """Fixed frames, as (episode seed, frame index) pairs, with their targets."""

    def __init__(self, items: Sequence[tuple[int, int]], world: WorldConfig, resolution: int):
        self.items, self.world, self.resolution = list(items), world, resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        seed, index = self.items[i]
        image, objects = next(render_frames(generate_episode(seed, self.world), [index], self.world))
        return _sample(image, objects, self.resolution)


def heldout_seeds(world_seed: int, videos: int) -> list[int]:
    """Episode seeds of the first `videos` videos of the world written with `world_seed`."""
    return [episode_seed(world_seed, i) for i in range(videos)]


def heldout_items(world: WorldConfig, world_seed: int, videos: int, frames: int) -> list[tuple[int, int]]:
    """`frames` (episode seed, frame index) pairs spread over the held-out videos, the same for the same arguments."""
    seeds = heldout_seeds(world_seed, videos)
    totals = [num_frames(generate_episode(seed, world).duration, world.fps) for seed in seeds]
    rng = np.random.default_rng([world_seed, videos, frames])
    return [(seeds[j % videos], int(rng.integers(totals[j % videos]))) for j in range(frames)]


# ---------------------------------------------------------------------------------------------------- model
class VisionPretrainModel(nn.Module):
    """The frame encoder (vision tower + pooling) with linear heads on its frame tokens."""

    def __init__(self, frame_encoder: FrameEncoder):
        super().__init__()
        config = frame_encoder.config
        if config.frame_token_pooled != 3:
            raise UserError(
                f"vision pretraining reads the 3 x 3 place grid off the pooled tokens; this model pools "
                f"{config.frame_token_pooled} x {config.frame_token_pooled} (frame_token_pooled)"
            )
        self.frame_encoder = frame_encoder
        self.cell_head = nn.Linear(frame_encoder.hidden_size, _width(CELL_HEADS))
        self.frame_head = nn.Linear(frame_encoder.hidden_size, _width(FRAME_HEADS))

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised pixels (N, 3, R, R) -> cell logits (N, 9, C) and frame logits (N, F)."""
        tokens = self.frame_encoder(pixel_values)  # (N, T, Hv): [CLS] then the 3x3 grid, row-major
        cells = tokens[:, -len(CELLS) :]  # (N, 9, Hv)
        whole = tokens[:, 0] if self.frame_encoder.config.frame_token_cls else cells.mean(1)  # (N, Hv)
        return self.cell_head(cells), self.frame_head(whole)


def _head_losses(logits: torch.Tensor, targets: torch.Tensor, heads: Sequence[Head]) -> dict[str, torch.Tensor]:
    losses = {}
    for head, part in _slices(heads):
        x, y = logits[..., part].float(), targets[..., part]
        if head.multi:  # summed over the head's labels, averaged over cells and frames
            weight = torch.tensor(head.positive_weight, device=x.device)
            losses[head.name] = (
                F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=weight).sum(-1).mean()
            )
        else:
            losses[head.name] = F.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
    return losses


def pretrain_loss(
    model: VisionPretrainModel, pixel_values: torch.Tensor, cells: torch.Tensor, frame: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """The sum of all heads' losses, and each head's loss."""
    cell_logits, frame_logits = model(pixel_values)
    losses = {**_head_losses(cell_logits, cells, CELL_HEADS), **_head_losses(frame_logits, frame, FRAME_HEADS)}
    return sum(losses.values()), {name: float(value.detach()) for name, value in losses.items()}


class Accuracy:
    """Per-head accuracy over held-out frames, with the score of always guessing the most frequent answer.

    `count` and `objects`: the right number (cell / frame). `colour`, `shape`, `size`, `pair`, `spot`: the object's,
    in cells holding exactly one object (top class). `stacked`, `contained`, `event`, `edge`, `growing`, `active`: yes
    or no right, with the recall of the yeses. Results are keyed by head name, so names are unique over the cell and
    frame heads. `*_set`: all labels of a multi-label head right, in every cell (or frame for `pairs_set`).
    `cell`: a cell read entirely right (count and every label)."""

    def __init__(self) -> None:
        self.right: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.answers: dict[str, dict[Any, int]] = {}

    def _add(self, name: str, right: torch.Tensor, answers: torch.Tensor | None = None) -> None:
        self.right[name] = self.right.get(name, 0) + int(right.sum())
        self.total[name] = self.total.get(name, 0) + right.numel()
        if answers is not None:
            counts = self.answers.setdefault(name, {})
            for value, n in zip(*np.unique(answers.cpu().numpy(), return_counts=True)):
                counts[value] = counts.get(value, 0) + int(n)

    def update(
        self, cell_logits: torch.Tensor, cells: torch.Tensor, frame_logits: torch.Tensor, frame: torch.Tensor
    ) -> None:
        parts = _slices_by_name(CELL_HEADS)
        count = cells[..., parts["count"]].argmax(-1)  # (N, 9)
        single = count == 1
        cell_all = torch.ones_like(count, dtype=torch.bool)
        for head, part in _slices(CELL_HEADS):
            x, y = cell_logits[..., part], cells[..., part]
            if not head.multi:
                right = x.argmax(-1) == y.argmax(-1)
                self._add(head.name, right, y.argmax(-1))
            else:
                bits = (x > 0) == (y > 0.5)
                right = bits.all(-1)
                if len(head.classes) == 1:
                    self._add(head.name, right, y[..., 0])
                    self._add(f"{head.name}_recall", right[y[..., 0] > 0.5])
                else:
                    self._add(head.name, (x.argmax(-1) == y.argmax(-1))[single], y.argmax(-1)[single])
                    self._add(f"{head.name}_set", right)
            cell_all &= right
        self._add("cell", cell_all)
        for head, part in _slices(FRAME_HEADS):
            x, y = frame_logits[..., part], frame[..., part]
            if not head.multi:
                self._add(head.name, x.argmax(-1) == y.argmax(-1), y.argmax(-1))
            elif len(head.classes) == 1:
                right = (x[..., 0] > 0) == (y[..., 0] > 0.5)
                self._add(head.name, right, y[..., 0])
                self._add(f"{head.name}_recall", right[y[..., 0] > 0.5])
            else:
                self._add(f"{head.name}_set", ((x > 0) == (y > 0.5)).all(-1))

    def result(self) -> dict[str, dict[str, float | int]]:
        out = {}
        for name, total in self.total.items():
            entry: dict[str, float | int] = {
                "accuracy": round(self.right[name] / total, 4) if total else 0.0,
                "n": total,
            }
            if name in self.answers and total:
                entry["majority"] = round(max(self.answers[name].values()) / total, 4)
            out[name] = entry
        return out


@torch.no_grad()
def evaluate(
    model: VisionPretrainModel,
    loader: Iterable[dict[str, torch.Tensor]],
    live_config: LiveConfig,
    device: torch.device,
    autocast: bool,
) -> dict[str, dict[str, float | int]]:
    """Per-head accuracy (see `Accuracy`) over batches of held-out frames."""
    was_training = model.training
    model.eval()
    accuracy = Accuracy()
    for batch in loader:
        pixels = preprocess_frames(batch["pixels"], live_config, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            cell_logits, frame_logits = model(pixels)
        accuracy.update(cell_logits.float(), batch["cells"].to(device), frame_logits.float(), batch["frame"].to(device))
    model.train(was_training)
    return accuracy.result()


# ---------------------------------------------------------------------------------------------------- training
@dataclass
class VisionPretrainResult:
    final_dir: Path
    metrics: dict[str, Any]
    model: LiveModel = field(repr=False)


def load_for_pretraining(spec: str):
    """(LiveModel, template): a fresh model of a preset, or a checkpoint to train further."""
    from ..core.checkpoint import build_model, load_checkpoint

    if spec in PRESETS and not Path(spec).exists():
        return build_model(LiveConfig.from_name(spec))
    try:
        return load_checkpoint(spec)
    except (OSError, ValueError) as error:
        if isinstance(error, UserError):
            raise
        raise UserError(f"cannot load model {spec!r}: {error}") from error


def _loader(dataset, config: VisionPretrainConfig, device: torch.device, shuffle: bool = False) -> DataLoader:
    kwargs: dict[str, Any] = {
        "batch_size": config.batch_size,
        "num_workers": config.workers,
        "pin_memory": device.type == "cuda",
    }
    if config.workers:
        # spawn, not fork: the parent holds threads (PyAV, CUDA, torch) whose locks a forked worker can inherit held
        kwargs.update(multiprocessing_context="spawn")
    return DataLoader(dataset, shuffle=shuffle, **kwargs)


def _optimizer(model: nn.Module, config: VisionPretrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]  # no decay on biases and norms
    other = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.95),
    )


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _training_frames(config: VisionPretrainConfig, world: WorldConfig, resolution: int) -> IterableDataset:
    """The training frames: from a recorded world (`world_dir`), else rendered on the fly, held-out seeds excluded."""
    if config.world_dir:
        return RecordedWorldFrames(recorded_world(config, resolution), world, config.seed, config.frames_per_episode)
    exclude = frozenset(heldout_seeds(config.heldout_seed, config.heldout_videos))
    return RandomWorldFrames(world, resolution, config.seed, config.frames_per_episode, exclude)


def _heldout_batches(
    config: VisionPretrainConfig, world: WorldConfig, resolution: int, device: torch.device
) -> list[dict[str, torch.Tensor]]:
    """The held-out frames, rendered once before training and kept (a few hundred KB a frame at most): every report
    then costs only the forwards, and no rendering processes compete with the training loader's."""
    items = heldout_items(world, config.heldout_seed, config.heldout_videos, config.eval_frames)
    return list(_loader(WorldFrames(items, world, resolution), config, device))


def _train_step(
    model: VisionPretrainModel,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    live_config: LiveConfig,
    device: torch.device,
    bf16: bool,
) -> tuple[float, dict[str, float], int]:
    """One optimisation step on a batch: its loss, the heads' parts of it and the number of frames."""
    pixels = preprocess_frames(batch["pixels"].to(device, non_blocking=True), live_config, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss, parts = pretrain_loss(
            model,
            pixels,
            batch["cells"].to(device, non_blocking=True),
            batch["frame"].to(device, non_blocking=True),
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return float(loss.detach()), parts, len(pixels)


class _TrainLog:
    """The training log (`LOG_FILE`, one JSON line per entry, echoed to stderr with `progress`) and the loop's
    throughput: frames seen and time spent waiting for data, in total and since the last step entry."""

    def __init__(self, path: Path, progress: bool) -> None:
        path.write_text("")
        self.path, self.progress = path, progress
        self.started = time.monotonic()
        self.frames_seen, self.waited = 0, 0.0
        self._losses: list[float] = []
        self._window = (self.started, 0, 0.0)

    def _write(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(entry) + "\n")

    def start_window(self) -> None:
        """Throughput counts from here (after the first report)."""
        self._window = (time.monotonic(), self.frames_seen, self.waited)

    def eval(self, step: int, accuracy: dict[str, Any]) -> None:
        self._write({"step": step, "eval": accuracy, "elapsed_s": round(time.monotonic() - self.started, 2)})
        if self.progress:
            _print(
                f"step {step}: held-out accuracy "
                + ", ".join(f"{name} {entry['accuracy']:.3f}" for name, entry in accuracy.items() if "_" not in name)
            )

    def step(self, loss: float, frames: int) -> None:
        self._losses.append(loss)
        self.frames_seen += frames

    def steps(self, step: int, parts: dict[str, float], lr: float) -> None:
        """The entry of the steps since the last one: mean loss, the last step's heads, throughput."""
        now = time.monotonic()
        span = now - self._window[0]
        entry = {
            "step": step,
            "loss": round(sum(self._losses) / len(self._losses), 4),
            "heads": {k: round(v, 4) for k, v in parts.items()},
            "lr": lr,
            "frames_per_s": round((self.frames_seen - self._window[1]) / span, 1),
            "data_wait_frac": round((self.waited - self._window[2]) / span, 3),
            "elapsed_s": round(now - self.started, 2),
        }
        self._write(entry)
        if self.progress:
            _print(
                f"step {step}: loss {entry['loss']:.4f}, {entry['frames_per_s']:.0f} frames/s, "
                f"waiting for data {entry['data_wait_frac']:.0%}, lr {entry['lr']:.2e}"
            )
        self._losses = []
        self.start_window()


def _save_outputs(
    live: LiveModel,
    template: StreamTemplate,
    model: VisionPretrainModel,
    config: VisionPretrainConfig,
    metrics: dict[str, Any],
) -> Path:
    """Write output_dir/final (the checkpoint, its config noting the pretraining), the heads and the metrics."""
    from safetensors.torch import save_file

    from ..core.checkpoint import save_checkpoint

    output_dir = Path(config.output_dir)
    live.config.extra["vision_pretrain"] = {
        **dataclasses.asdict(config),
        "steps": metrics["steps"],
        "frames_seen": metrics["frames_seen"],
        "accuracy": {k: v["accuracy"] for k, v in metrics["accuracy"].items()},
    }
    final = save_checkpoint(live, template, output_dir / FINAL_DIR, save_vision=True, dtype=config.save_dtype)
    save_file(
        {f"cell_head.{k}": v.contiguous() for k, v in model.cell_head.state_dict().items()}
        | {f"frame_head.{k}": v.contiguous() for k, v in model.frame_head.state_dict().items()},
        output_dir / HEADS_FILE,
    )
    write_json_atomic(output_dir / METRICS_FILE, metrics)
    return final


def pretrain_vision(config: VisionPretrainConfig, progress: bool = True) -> VisionPretrainResult:
    """Train the frame encoder with the heads; write output_dir/final (a checkpoint), the log and the metrics."""
    from .trainer import TimeBudget

    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.bf16 and not (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        raise UserError("--bf16 needs a GPU with bfloat16 support; leave it out on a CPU")
    torch.manual_seed(config.seed)
    live, template = load_for_pretraining(config.model)
    live_config = live.config
    model = VisionPretrainModel(live.frame_encoder)
    model.frame_encoder.requires_grad_(True)
    model.to(device).train()
    world, resolution = config.world_config(), live_config.frame_resolution

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    train_loader = _loader(_training_frames(config, world, resolution), config, device)
    eval_batches = _heldout_batches(config, world, resolution, device)
    optimizer = _optimizer(model, config)
    seconds = config.max_time_minutes * 60 if config.max_time_minutes is not None else math.inf
    budget = TimeBudget(seconds, config.warmup_ratio, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, budget.factor)

    def report(step: int) -> dict[str, Any]:
        accuracy = evaluate(model, eval_batches, live_config, device, config.bf16)
        log.eval(step, accuracy)
        return accuracy

    log = _TrainLog(output_dir / LOG_FILE, progress)
    first = accuracy = report(0)
    step = 0
    log.start_window()
    fetch = loop_started = time.monotonic()
    for batch in train_loader:
        log.waited += time.monotonic() - fetch
        budget.begin()  # the budget counts from the first batch, not from the workers' start-up
        loss, parts, frames = _train_step(model, batch, optimizer, scheduler, live_config, device, config.bf16)
        step += 1
        log.step(loss, frames)
        if step % config.log_every == 0:
            log.steps(step, parts, scheduler.get_last_lr()[0])
        if step % config.eval_every == 0:
            accuracy = report(step)
        if 0 < config.max_steps <= step or budget.spent():
            break
        fetch = time.monotonic()
    train_seconds = time.monotonic() - loop_started  # the training loop: workers starting, steps, reports
    if step % config.eval_every:
        accuracy = report(step)

    model.to("cpu").eval()
    metrics = {
        "model": config.model,
        "device": str(device),
        "steps": step,
        "frames_seen": log.frames_seen,
        "train_seconds": round(train_seconds, 1),
        "frames_per_s": round(log.frames_seen / max(train_seconds, 1e-9), 1),
        "data_wait_frac": round(log.waited / max(train_seconds, 1e-9), 3),
        "resolution": resolution,
        "eval_frames": config.eval_frames,
        "accuracy": accuracy,
        "accuracy_at_start": first,
        "config": dataclasses.asdict(config),
    }
    final = _save_outputs(live, template, model, config, metrics)
    return VisionPretrainResult(final, metrics, live)
