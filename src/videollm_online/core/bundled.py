"""The bundled demo model: the name users see for it, and the one-line note when it meets video it was not trained on.

The bundled checkpoint was trained on the synthetic world of `data synth-world` only (coloured shapes on a table),
so on any other video what it says is noise. A world video is told by the tag `render_episode` writes into the
video's container (`comment`: "videollm-online synth_world/1"); a world written before that tag existed is told by
its annotation file beside it (`WORLD/annotations/ID.json` for `WORLD/videos/ID.mp4`).
"""

from __future__ import annotations

import json
from pathlib import Path

DEMO_MODEL_NAME = "demo model (synthetic world)"
"""What the bundled checkpoint is called in the UI, the logs and the histories (never its install path)."""
RELEASED_MODEL = "chenjoya/videollm-online-8b-v1plus"
NOT_WORLD_NOTE = (
    f"note: the {DEMO_MODEL_NAME} was trained on the synthetic world's coloured shapes only, so on other video what "
    f"it says means little; for real video run the released model on a GPU: `videollm-online download "
    f"{RELEASED_MODEL}`, then add `--model {RELEASED_MODEL} --device cuda`"
)


def is_world_video(source: str | Path) -> bool:
    """True for a video written by `data synth-world` (its container tag, or its annotation beside it)."""
    from ..data.world import FORMAT, VIDEO_COMMENT

    path = Path(source)
    if not path.is_file():
        return False  # a webcam, a stream URL, an image folder: not a world video
    try:
        import av

        with av.open(str(path)) as container:
            if container.metadata.get("comment") == VIDEO_COMMENT:
                return True
    except (OSError, ValueError, av.error.FFmpegError):
        return False
    annotation = path.parent.parent / "annotations" / f"{path.stem}.json"
    try:
        return path.parent.name == "videos" and json.loads(annotation.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def not_world_note(model_name: str, source: str | Path | None) -> str | None:
    """The note to show once when the bundled model is given something other than a world video (None: no note).
    `source` None stands for a live source (webcam)."""
    if model_name != DEMO_MODEL_NAME:
        return None
    if source is not None and is_world_video(source):
        return None
    return NOT_WORLD_NOTE
