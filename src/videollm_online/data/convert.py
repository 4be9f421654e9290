"""`videollm-online data convert`: a dataset's annotation files -> training rows (JSONL), with optional
augmented copies and a cap on frames per conversation, and a report of what was skipped and why."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from ..utils.files import write_jsonl
from .augment import augment_conversation
from .datasets import ConvertOptions, get_loader
from .datasets.common import stream_frames


def clip_frames(row: dict[str, Any], max_frames: int) -> dict[str, Any] | None:
    """The row cut before its first stream message that would pass `max_frames` frames (the seed's clip), or None
    when nothing learned is left."""
    total = 0
    for i, message in enumerate(row["conversation"]):
        if message["role"] == "stream":
            if total + message["num_frames"] > max_frames:
                conversation = row["conversation"][:i]
                break
            total += message["num_frames"]
    else:
        return row
    if not any(m.get("learn") for m in conversation):
        return None
    return {**row, "conversation": conversation, "end_frame": row["start_frame"] + stream_frames(conversation)}


@dataclass
class ConvertReport:
    rows: int = 0
    augmented: int = 0
    skipped: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        lines = [f"{self.rows} conversations written ({self.augmented} of them augmented copies)"]
        lines += [f"skipped {count}: {reason}" for reason, count in sorted(self.skipped.items())]
        return lines


def convert(
    dataset: str, options: ConvertOptions, out: str | Path, *, augment_copies: int = 0, max_frames: int | None = None
) -> ConvertReport:
    """Convert one dataset and write its rows to `out` (JSONL, atomically). `augment_copies` adds that many
    augmented copies of each conversation (seeded by `options.seed`)."""
    if augment_copies < 0:
        raise ValueError(f"augment_copies must be >= 0, got {augment_copies}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    try:
        converted = get_loader(dataset)(options)
    except (KeyError, TypeError, AttributeError, IndexError) as error:  # a loader met a file of another shape
        raise UserError(
            f"{dataset}: the annotation files under {options.anno_root} are not in the shape this "
            f"dataset has ({type(error).__name__}: {error})"
        ) from error
    report = ConvertReport(skipped=Counter(converted.skipped))
    rng = random.Random(options.seed)
    rows = []
    for row in converted.rows:
        if max_frames is not None:
            row = clip_frames(row, max_frames)
            if row is None:
                report.skipped[f"nothing learned within {max_frames} frames"] += 1
                continue
        rows.append(row)
        for copy_index in range(augment_copies):
            conversation = augment_conversation(row["conversation"], rng)
            rows.append({**row, "conversation": conversation, "augmented": copy_index + 1})
            report.augmented += 1
    write_jsonl(out, rows)
    report.rows = len(rows)
    return report
