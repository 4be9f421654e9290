"""The shape of a stream conversation and of a training row, checked where a file is read, with errors that name
the file, the row and the field (`rows.jsonl:3: conversation[1].content must be a string, got null`).

A conversation is a list of messages: `{"role": "system" | "user" | "assistant", "content": str}` or
`{"role": "stream", "num_frames": int >= 0}`, each optionally with `learn` (bool, or an int >= 0 for a stream) and
`time` (seconds >= 0). A training row is `{"video": str, "conversation": [...], "start_frame": int >= 0}`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..utils.errors import UserError

ROLES = ("system", "user", "assistant", "stream")
MAX_TEXT_CHARS = 100_000
"""Characters in one message: far above any real turn; a 10 MB string would only cost memory and time."""
MAX_CONVERSATION_FRAMES = 36_000
"""Frames in one conversation: five hours at 2 fps, past any model's context (num_frames 1e9 took over 6 GB)."""


def _json_name(value: Any) -> str:
    return json.dumps(value) if value is None or isinstance(value, bool) else type(value).__name__


def conversation_problem(conversation: Any) -> str | None:
    """What is wrong with a conversation (a field path and the problem), or None when it is well formed."""
    if not isinstance(conversation, list):
        return f"conversation must be a list of messages, got {_json_name(conversation)}"
    frames = 0
    for i, message in enumerate(conversation):
        where = f"conversation[{i}]"
        if not isinstance(message, dict):
            return f"{where} must be an object with a 'role', got {_json_name(message)}"
        role = message.get("role")
        if role not in ROLES:
            return f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}"
        if role == "stream":
            num_frames = message.get("num_frames")
            if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 0:
                return f"{where}.num_frames must be a whole number >= 0, got {num_frames!r}"
            frames += num_frames
            if frames > MAX_CONVERSATION_FRAMES:
                return (
                    f"{where}.num_frames: the conversation needs {frames} frames, over the limit of "
                    f"{MAX_CONVERSATION_FRAMES}: split it into shorter conversations"
                )
            learn = message.get("learn", False)
            if not isinstance(learn, (bool, int)) or (not isinstance(learn, bool) and learn < 0):
                return f"{where}.learn must be true, false or a whole number >= 0, got {learn!r}"
        else:
            content = message.get("content")
            if not isinstance(content, str):
                return f"{where}.content must be a string, got {_json_name(content)}"
            if len(content) > MAX_TEXT_CHARS:
                return f"{where}.content has {len(content)} characters, over the limit of {MAX_TEXT_CHARS}"
            if not isinstance(message.get("learn", False), bool):
                return f"{where}.learn must be true or false, got {message['learn']!r}"
        when = message.get("time")
        if when is not None and (
            isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when) or when < 0
        ):
            return f"{where}.time must be a finite number of seconds >= 0, got {when!r}"
    return None


def row_problem(row: Any) -> str | None:
    """What is wrong with a training row `{video, conversation, start_frame}`, or None."""
    if not isinstance(row, dict):
        return f"a row must be an object {{video, conversation, start_frame}}, got {_json_name(row)}"
    video = row.get("video")
    if not isinstance(video, str) or not video.strip() or video.startswith("/") or ".." in video.split("/"):
        return f"video must be a video id (a name inside the frames folder), got {video!r}"
    start = row.get("start_frame", 0)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        return f"start_frame must be a whole number >= 0, got {start!r}"
    return conversation_problem(row.get("conversation"))


def check_conversation(conversation: Any, where: str) -> list[dict[str, Any]]:
    """The conversation, or a UserError `where: field: problem`."""
    problem = conversation_problem(conversation)
    if problem:
        raise UserError(f"{where}: {problem}")
    return conversation


def check_rows(rows: list[Any], path: Any) -> list[dict[str, Any]]:
    """Training rows read from `path` (JSONL, so row N is line N of the non-empty lines), or a UserError naming the
    first bad one; an empty file is an error too."""
    if not rows:
        raise UserError(f"{path} holds no rows: expected JSON lines of {{video, conversation, start_frame}}")
    for number, row in enumerate(rows, 1):
        problem = row_problem(row)
        if problem:
            raise UserError(f"{path}:{number}: {problem}")
    return rows
