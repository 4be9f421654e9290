"""Augmentation of stream conversations, as the seed does it, so the model does not lean on its own past text.

In a streaming dialogue the model reads what it said before; at inference that text can be wrong, or missing, or
late. `augment_conversation` perturbs one learned assistant turn (never the last) of a conversation, into one of
four cases, chosen at random:

- wrong, then fixed: a wrong text (another turn's, or empty) is shown but not learned; one frame later the model
  learns to say the right text, opened by `CORRECTION_PREFIX`;
- late: the turn comes one frame later; the frame where it belonged teaches nothing, the turn itself is learned;
- wrong, not fixed: the wrong text is shown unlearned, and the frames up to the next turn teach nothing;
- missed: the turn is removed; its frame and the frames up to the next turn teach nothing.

A case that does not fit the neighbouring messages (e.g. one frame to the next turn) leaves the conversation as
it is, as in the seed. Frames are never added or removed, so a row's frame range stays valid.
"""

from __future__ import annotations

import copy
import random
from typing import Any

CORRECTION_PREFIX = "(Correction: my last response was wrong.)"


def _learned_frames(message: dict[str, Any]) -> int:
    learn = message.get("learn", False)
    if isinstance(learn, bool):
        return message["num_frames"] if learn else 0
    return min(int(learn), message["num_frames"])


def _stream(num_frames: int, learn: bool | int) -> dict[str, Any]:
    return {"role": "stream", "num_frames": num_frames, "learn": learn}


def _after_first(message: dict[str, Any]) -> bool | int:
    """The `learn` of a stream message whose first frame moves out of it."""
    learn = message.get("learn", False)
    return learn if isinstance(learn, bool) else max(0, int(learn) - 1)


def augment_conversation(conversation: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """A perturbed copy of `conversation` (see the module docstring); the input is not changed."""
    learned = [i for i, m in enumerate(conversation) if m["role"] == "assistant" and m.get("learn", False)]
    if len(learned) <= 1:
        return copy.deepcopy(conversation)
    i = rng.choice(learned[:-1])  # the last turn has nothing after it that could depend on it
    real = conversation[i]["content"]
    wrong_texts: list[str | None] = sorted(
        {conversation[j]["content"] for j in learned if conversation[j]["content"] != real}
    )
    wrong = rng.choice([*wrong_texts, "", None])  # None: nothing said at all
    return perturb(conversation, i, wrong, fixed=rng.random() < 0.5)


def perturb(conversation: list[dict[str, Any]], i: int, wrong: str | None, fixed: bool) -> list[dict[str, Any]]:
    """The assistant turn at index `i` replaced by `wrong` (None: missed), `fixed` one frame later or not."""
    conv = copy.deepcopy(conversation)
    real = conv[i]["content"]
    wrong_turn = None if wrong is None else {"role": "assistant", "content": wrong, "learn": False}
    before = conv[i - 1] if i > 0 else {"role": None}
    after = conv[i + 1] if i + 1 < len(conv) else {"role": None}
    before_is_stream, after_is_stream = before["role"] == "stream", after["role"] == "stream"
    if fixed:
        if wrong_turn is not None and after_is_stream and after["num_frames"] > 1:
            correction = {**conv[i], "content": f"{CORRECTION_PREFIX} {real}", "learn": True}
            return (
                conv[:i]
                + [wrong_turn, _stream(1, True), correction, _stream(after["num_frames"] - 1, _after_first(after))]
                + conv[i + 2 :]
            )
        if wrong_turn is None and before_is_stream and after_is_stream and after["num_frames"] > 1:
            late = _stream(before["num_frames"] + 1, min(_learned_frames(before), before["num_frames"] - 1))
            return (
                conv[: i - 1] + [late, conv[i], _stream(after["num_frames"] - 1, _after_first(after))] + conv[i + 2 :]
            )
        return conv
    if wrong_turn is not None:  # a wrong text stands
        if after_is_stream:
            return conv[:i] + [wrong_turn, _stream(after["num_frames"], False)] + conv[i + 2 :]
        return conv[:i] + [wrong_turn] + conv[i + 1 :]
    # the turn was missed
    if before_is_stream:
        learn = min(_learned_frames(before), before["num_frames"] - 1)
        if after_is_stream:
            return conv[: i - 1] + [_stream(before["num_frames"] + after["num_frames"], learn)] + conv[i + 2 :]
        return conv[: i - 1] + [_stream(before["num_frames"], learn)] + conv[i + 1 :]
    if after_is_stream:
        return conv[:i] + [_stream(after["num_frames"], False)] + conv[i + 2 :]
    return conv[:i] + conv[i + 1 :]
