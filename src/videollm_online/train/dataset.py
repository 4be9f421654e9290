"""Training samples: a stream conversation, tokenized with its labels, plus the frames its stream messages consume.

A sample row is `{"video": ID, "conversation": [...], "start_frame": 0}`; its stream messages take consecutive
frames of that video from `start_frame` on. Frames come from a `FrameStore` as uint8 pixels (the vision encoder runs
in the step, trainable or not) or as precomputed features (the encoder stays frozen and is not run).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset

from ..core.text import IGNORE_INDEX, StreamTemplate
from ..data.frames import FrameStore


def check_train_inputs(config: Any) -> None:
    """Before any weights load: the rows of `config.data` (and `eval_data`) well formed, their frames directory
    holding preprocessed videos of the model's frame size, and at least one row whose video is there (UserError
    naming the file, the row and the field otherwise). Rows of missing or short videos are dropped later, with a
    warning, as long as some are usable."""
    from pathlib import Path

    from ..core.checkpoint import model_config
    from ..data.schema import check_rows
    from ..utils.errors import UserError
    from ..utils.files import read_jsonl

    resolution = model_config(config.model).frame_resolution
    key = "features" if config.features else "frames"
    for data, frames in ((config.data, config.frames), (config.eval_data, config.eval_frames or config.frames)):
        if data is None:
            continue
        rows = check_rows(read_jsonl(data), data)
        store = FrameStore(frames, key)
        files = sorted(store.directory.glob("*.safetensors"))
        if not files:
            raise UserError(
                f"{store.directory} holds no preprocessed videos (*.safetensors): make them with "
                "`videollm-online data preprocess VIDEOS --out DIR --preset ...`"
            )
        if key == "frames":
            shape = _frames_shape(store, files[0].stem)
            if shape is not None and tuple(shape[1:3]) != (resolution, resolution):
                raise UserError(
                    f"{files[0]} holds {shape[1]}x{shape[2]} px frames, but the model {config.model} "
                    f"reads {resolution}x{resolution}: preprocess the videos with its preset"
                )
        present = {path.stem for path in files}
        usable = [row for row in rows if row["video"] in present]
        if not usable:
            missing = sorted({row["video"] for row in rows})
            raise UserError(
                f"{data}: none of its videos has frames in {store.directory} (e.g. "
                f"{', '.join(missing[:3])}): check --frames, or preprocess these videos"
            )
        counts = {video: store.num_frames(video) for video in {row["video"] for row in usable}}
        if not any(
            row.get("start_frame", 0) + conversation_frames(row["conversation"]) <= counts[row["video"]]
            for row in usable
        ):
            raise UserError(
                f"{data}: every row needs more frames than its video has in {Path(store.directory)} "
                "(check start_frame and num_frames against the frames' fps)"
            )


def _frames_shape(store: FrameStore, video: str) -> list[int] | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(store.path(video), framework="pt") as file:
            return list(file.get_slice(store.key).get_shape())
    except (SafetensorError, OSError, KeyError):
        return None


def conversation_frames(conversation: list[dict[str, Any]]) -> int:
    return sum(m.get("num_frames", 0) for m in conversation if m.get("role") == "stream")


class StreamDataset(Dataset):
    """Rows whose video is missing from the store, or has fewer frames than the conversation needs (a corrupt or
    cut video), are dropped up front with a warning that counts them, so a bad video never stops a run."""

    def __init__(
        self, rows: list[dict[str, Any]], store: FrameStore, template: StreamTemplate, max_length: int | None = None
    ):
        self.store = store
        self.template = template
        self.max_length = max_length
        available: dict[str, int] = {}
        self.rows, dropped = [], []
        for index, row in enumerate(rows):
            if "video" not in row or "conversation" not in row:
                raise ValueError(f"sample {index} needs 'video' and 'conversation'")
            video = row["video"]
            if video not in available:
                available[video] = store.num_frames(video) if store.path(video).exists() else 0
            needed = int(row.get("start_frame", 0)) + conversation_frames(row["conversation"])
            if needed > available[video]:
                dropped.append(f"{video} (needs {needed}, has {available[video]})")
            else:
                self.rows.append(row)
        if dropped:
            warnings.warn(
                f"dropped {len(dropped)} of {len(rows)} samples whose frames are missing or short: "
                f"{', '.join(dropped[:5])}{' ...' if len(dropped) > 5 else ''}",
                stacklevel=2,
            )
        if not self.rows:
            raise ValueError(f"no usable samples: all {len(rows)} need frames the store {store.directory} lacks")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        tokens = self.template.tokenize(row["conversation"])
        start = int(row.get("start_frame", 0))
        needed = conversation_frames(row["conversation"])
        frames = self.store.load(row["video"], start, start + needed)
        if frames.shape[0] != needed:
            raise ValueError(
                f"sample {index} (video {row['video']}) needs {needed} frames from {start}, "
                f"the store has {frames.shape[0]}"
            )
        input_ids, labels = tokens.input_ids, tokens.labels
        if self.max_length is not None and len(input_ids) > self.max_length:
            raise ValueError(
                f"sample {index} has {len(input_ids)} tokens, over max_length {self.max_length}: "
                "split long videos into shorter conversations"
            )
        return {"input_ids": input_ids, "labels": labels, "frames": frames}


class StreamCollator:
    """Pads ids (with eos) and labels (IGNORE_INDEX) to the longest sample; concatenates frames in sample order.
    uint8 frames stay uint8 (`pixel_values`, normalised by the model on its device: normalising a batch of
    frames in a DataLoader worker took seconds and starved the GPU); float frames are features."""

    def __init__(self, template: StreamTemplate):
        self.template = template

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(sample["input_ids"]) for sample in batch)
        pad = self.template.ids.eos
        input_ids = torch.full((len(batch), length), pad, dtype=torch.long)
        labels = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, sample in enumerate(batch):
            n = len(sample["input_ids"])
            input_ids[row, :n] = torch.tensor(sample["input_ids"])
            labels[row, :n] = torch.tensor(sample["labels"])
            attention_mask[row, :n] = 1
        frames = torch.cat([sample["frames"] for sample in batch])
        out = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if frames.shape[0] == 0:  # text-only samples (e.g. the robustness set): vision encoders reject empty batches
            return out
        if frames.dtype == torch.uint8:
            out["pixel_values"] = frames  # (N, R, R, 3) uint8
        else:
            out["frame_features"] = frames  # (N, T, Hv)
        return out
