"""The robustness set, as the seed has it: a handful of conversations that teach the model what to do without a
video (ask for one), with frames of pure noise, and with frames that show nothing (say so, instead of narrating).

Its frames are two synthetic videos written beside the real ones (`write_robustness_frames`): `robustness-noise`
(uniform random pixels, or uniform random features in a feature store, as the seed uses) and `robustness-blank`
(black pixels, or all-zero features). The text-only conversations index no frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...utils.errors import UserError
from .common import Converted, ConvertOptions, make_row, with_system_prompt

NOISE_VIDEO = "robustness-noise"
BLANK_VIDEO = "robustness-blank"
NOISE_FRAMES = 10
BLANK_FRAMES = 1


def _assistant(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "learn": True}


def robustness_conversations() -> list[tuple[str, list[dict[str, Any]]]]:
    """(video, conversation without system prompt) of each robustness sample."""
    no_video = [
        [
            {"role": "user", "content": "Please narrate the video for me as it plays."},
            _assistant("Sure! Start the video stream and I will narrate it."),
        ],
        [
            {"role": "user", "content": "Tell me briefly what you see."},
            _assistant("Sure! I do not have any video yet: please share the video stream."),
        ],
        [{"role": "user", "content": "..."}, _assistant("Hi! How can I help you?")],
    ]
    noise = [
        {"role": "stream", "num_frames": NOISE_FRAMES, "learn": False},
        {"role": "user", "content": "What is happening now?"},
        _assistant("Sorry, the video frames look like noise. Could you check the camera?"),
    ]
    blank = [
        {"role": "stream", "num_frames": BLANK_FRAMES, "learn": False},
        {"role": "user", "content": "What is the next step?"},
        _assistant("Sorry, I cannot see anything in the video. Could you check the camera?"),
    ]
    return [(BLANK_VIDEO, c) for c in no_video] + [(NOISE_VIDEO, noise), (BLANK_VIDEO, blank)]


def load_robustness(options: ConvertOptions) -> Converted:
    """`robustness`: the robustness conversations (no annotation files; write their frames with
    `write_robustness_frames`)."""
    rows = [
        make_row(video, "robustness", with_system_prompt(conversation, options.system_prompt), 0)
        for video, conversation in robustness_conversations()
    ]
    return Converted(rows=rows)


def robustness_example(directory: str | Path) -> Path:
    """A preprocessed video of `directory` whose kind and size the robustness frames copy (UserError if none)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(
            f"--frames {directory} is not a directory of preprocessed videos: give the frames (or "
            "features) directory of `videollm-online data preprocess`"
        )
    example = next((p for p in sorted(directory.glob("*.safetensors")) if not p.stem.startswith("robustness-")), None)
    if example is None:
        raise UserError(
            f"{directory} holds no preprocessed videos: run `videollm-online data preprocess` (or "
            "`data features`) first, so the robustness frames match their kind and size"
        )
    return example


def write_robustness_frames(directory: str | Path, *, seed: int = 0) -> list[Path]:
    """Write the two robustness videos into a frames or features directory, in the kind of data it already holds
    (read from one of its files): uint8 frames (N, R, R, 3) or features (N, T, Hv) of the same dtype."""
    from safetensors import safe_open

    from ..frames import _save_atomic

    directory = Path(directory)
    example = robustness_example(directory)
    with safe_open(example, framework="pt") as file:
        key = "frames" if "frames" in file.keys() else "features"
        shape, dtype = file.get_slice(key).get_shape()[1:], file.get_slice(key).get_dtype()
        metadata = dict(file.metadata() or {})
    generator = torch.Generator().manual_seed(seed)
    if key == "frames":
        noise = torch.randint(0, 256, (NOISE_FRAMES, *shape), generator=generator, dtype=torch.uint8)
        blank = torch.zeros((BLANK_FRAMES, *shape), dtype=torch.uint8)
    else:
        torch_dtype = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}.get(dtype, torch.float32)
        noise = torch.rand((NOISE_FRAMES, *shape), generator=generator).to(torch_dtype)
        blank = torch.zeros((BLANK_FRAMES, *shape), dtype=torch_dtype)
    written = []
    for video, tensor in ((NOISE_VIDEO, noise), (BLANK_VIDEO, blank)):
        path = directory / f"{video}.safetensors"
        _save_atomic({key: tensor.contiguous()}, path, {**metadata, "source": f"synthetic ({video})"})
        written.append(path)
    return written
