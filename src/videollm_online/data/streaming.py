"""Offline timestamped annotations -> streaming conversations (system, user, assistant and stream messages).

Frames are sampled at `fps`: frame i shows video time i / fps. A turn at time t comes right after frame
floor(t * fps), so the frames before it are exactly those up to and including time t; an opening instruction comes
before any frame. `build_conversation` does this interleaving for any list of timed turns and is what
`narration_stream` (Ego4D-style narration) and `live_chat` (questions about a synthetic world episode, answered from its
ground truth) are built on, so loaders of real datasets can reuse them.

The `learn` of a stream message follows `videollm_online.core.text`: True when an assistant turn follows (the model
learns to stay silent on every frame and to speak after the last one); before a user turn or at the end of the
conversation the model must not learn to speak after the last frame, so `learn` is the int `num_frames - 1` (silence
is learned on all frames but the last).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .world import Episode, ObjectView, state_at
from .world_language import PLACE_AT

DEFAULT_SYSTEM_PROMPT = (
    "A multimodal AI assistant is helping users with some activities. Below is their conversation, interleaved with "
    "the list of video frames received by the assistant."
)

NARRATION_INSTRUCTIONS = (
    "Please narrate the video in real time.",
    "Please concisely narrate the video in real time.",
    "Describe what I am doing as it happens.",
    "Narrate my actions as I do them.",
    "Tell me what happens in the video, as it happens, in short sentences.",
)

LIVE_CHAT_INSTRUCTIONS = (
    "Please narrate what I do in real time, and answer my questions.",
    "Describe what I am doing as it happens, and help me when I ask.",
    "Narrate my actions as I do them and answer my questions about the scene.",
)
GOAL_INSTRUCTIONS = (
    "I want to {goal}. Narrate what I do in real time and answer my questions.",
    "My goal: {goal}. Please describe my actions as they happen and help me when I ask.",
    "Help me {goal}: narrate what I do and answer my questions.",
)

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def num_stream_frames(duration: float, fps: float) -> int:
    """Frames sampled at `fps` from `duration` seconds: times 0, 1/fps, ... while below `duration` (at least one)."""
    if duration <= 0 or fps <= 0:
        raise ValueError(f"duration and fps must be > 0, got {duration} and {fps}")
    return max(1, math.ceil(duration * fps - 1e-6))


def frame_index(time: float, fps: float) -> int:
    """The frame a turn at `time` follows: floor(time * fps)."""
    return math.floor(time * fps + 1e-6)


def build_conversation(
    turns: Iterable[Mapping[str, Any]],
    duration: float,
    fps: float = 2.0,
    *,
    instruction: str | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """Interleave timed turns `{"time", "role": "user" | "assistant", "content"}` with stream messages.

    Turns are ordered by time (stably: equal times keep their order); each follows frame floor(time * fps), and
    frames after the last turn end the conversation. Assistant turns that follow the same frame with nothing in
    between are merged into one. Assistant turns are learned, users' are not. Raises ValueError on a time outside
    [0, duration] or an unknown role.
    """
    total = num_stream_frames(duration, fps)
    conversation: list[dict[str, Any]] = []
    if system_prompt is not None:
        conversation.append({"role": "system", "content": system_prompt})
    if instruction is not None:
        conversation.append({"role": "user", "content": instruction})
    sent = 0
    for turn in sorted(turns, key=lambda turn: turn["time"]):
        time, role, content = float(turn["time"]), turn["role"], turn["content"]
        if not 0 <= time <= duration + 1e-6:
            raise ValueError(f"turn time {time} is outside the video [0, {duration}]: {content!r}")
        if role not in ("user", "assistant"):
            raise ValueError(f"turn role must be 'user' or 'assistant', got {role!r}")
        needed = min(frame_index(time, fps), total - 1) + 1
        if needed > sent:
            conversation.append({"role": "stream", "num_frames": needed - sent, "learn": True})
            sent = needed
        elif role == "assistant" and conversation and conversation[-1]["role"] == "assistant":
            conversation[-1]["content"] += " " + content
            continue
        conversation.append(
            {"role": role, "content": content, "learn": True}
            if role == "assistant"
            else {"role": role, "content": content}
        )
    if sent < total:
        conversation.append({"role": "stream", "num_frames": total - sent, "learn": True})
    for i, message in enumerate(conversation):
        if message["role"] == "stream":
            followed_by_assistant = i + 1 < len(conversation) and conversation[i + 1]["role"] == "assistant"
            message["learn"] = True if followed_by_assistant else message["num_frames"] - 1
    return conversation


def narration_stream(
    narrations: Sequence[Mapping[str, Any]],
    duration: float,
    fps: float = 2.0,
    instruction: str | None = None,
    *,
    seed: int = 0,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """An Ego4D-style narration conversation: the system prompt, an instruction (one of `NARRATION_INSTRUCTIONS`
    chosen by `seed` unless given), then each narration `{"time", "text"}` as a learned assistant turn at its time."""
    if instruction is None:
        instruction = random.Random(seed).choice(NARRATION_INSTRUCTIONS)
    turns = [{"time": n["time"], "role": "assistant", "content": n["text"]} for n in narrations]
    return build_conversation(turns, duration, fps, instruction=instruction, system_prompt=system_prompt)


# ---------------------------------------------------------------------------------------------------- live chat
def _count(n: int) -> str:
    return _NUMBERS[n] if n < len(_NUMBERS) else str(n)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _where(view: ObjectView, views: dict[str, ObjectView]) -> str:
    if view.inside is not None:
        return f"in {views[view.inside].describe()}"
    if view.on is not None:
        return f"on {views[view.on].describe()}"
    return PLACE_AT[view.position]


class _Scene:
    """Ground truth of one world episode at any time: events, narrations, steps and object states."""

    def __init__(self, annotation: Mapping[str, Any]):
        self.annotation = annotation
        self.events = list(annotation["events"])
        task = annotation.get("task") or {}
        self.goal, self.steps = task.get("goal"), list(task.get("steps", []))

    def active(self, t: float) -> Mapping[str, Any] | None:
        return next((e for e in self.events if e["start"] <= t < e["end"]), None)

    def done(self, t: float) -> list[Mapping[str, Any]]:
        return [e for e in self.events if e["end"] <= t]

    # Each question kind: (scene, t, rng) -> (question, answer), or None when it does not apply at t.
    def happening(self, t: float, rng: random.Random) -> tuple[str, str] | None:
        question = rng.choice(["What is happening?", "What am I doing right now?", "What is going on now?"])
        if (event := self.active(t)) is not None:
            return question, event["text_ongoing"]
        views = state_at(self.annotation, t)
        return (
            question,
            f"Nothing is changing right now; there {'is' if len(views) == 1 else 'are'} "
            f"{_count(len(views))} object{'' if len(views) == 1 else 's'} on the table.",
        )

    def count(self, t: float, rng: random.Random) -> tuple[str, str] | None:
        views = state_at(self.annotation, t)
        question = rng.choice(
            ["How many objects are there?", "How many shapes can you see?", "How many things are on the table?"]
        )
        if not views:
            return question, "There is nothing on the table right now."
        things = _join([v.describe("a") for v in views])
        return question, f"There {'is' if len(views) == 1 else 'are'} {_count(len(views))}: {things}."

    def colour(self, t: float, rng: random.Random) -> tuple[str, str] | None:
        views = state_at(self.annotation, t)
        named = []
        for v in views:
            if sum(o.shape == v.shape for o in views) == 1:
                named.append((f"the {v.shape}", v))
            elif sum(o.shape == v.shape and o.size == v.size for o in views) == 1:
                named.append((f"the {v.size} {v.shape}", v))
        if not named:
            return None
        name, view = rng.choice(named)
        return f"What colour is {name}?", rng.choice([f"{_capital(name)} is {view.colour}.", f"It is {view.colour}."])

    def where(self, t: float, rng: random.Random) -> tuple[str, str] | None:
        views = state_at(self.annotation, t)
        if not views:
            return None
        view = rng.choice(views)
        by_id = {v.id: v for v in views}
        return f"Where is {view.describe()}?", f"{_capital(view.describe())} is {_where(view, by_id)}."

    def last(self, t: float, rng: random.Random) -> tuple[str, str] | None:
        done = self.done(t)
        question = rng.choice(["What did I just do?", "What was my last action?"])
        return question, done[-1]["text_past"] if done else "You have not done anything yet."

    def next_step(self, t: float, rng: random.Random) -> tuple[str, str] | None:
        if not self.goal or not self.steps:
            return None
        question = rng.choice(["What is the next step?", "What should I do next?"])
        current = next((s for s in self.steps if s["start"] <= t < s["end"]), None)
        upcoming = next((s for s in self.steps if s["start"] > t), None)
        if upcoming is not None:
            answer = f"Next, {upcoming['text']}."
            if current is not None:
                answer = f"You are in the middle of this step: {current['text']}. After that, {upcoming['text']}."
        elif current is not None:
            answer = f"This is the last step: {current['text']}."
        else:
            answer = f"There are no steps left; you have finished: {self.goal}."
        return question, answer

    def summary(self, t: float, rng: random.Random) -> tuple[str, str] | None:
        question = rng.choice(["Summarise what happened so far.", "Can you sum up what I have done so far?"])
        done = self.done(t)
        if not done:
            return question, "Nothing has happened yet."
        answer = " ".join(e["text_past"] for e in done)
        if self.goal and self.steps:
            finished = sum(s["end"] <= t for s in self.steps)
            answer += (
                f" You have finished {_count(finished)} of {_count(len(self.steps))} steps of your goal: {self.goal}."
            )
        return question, answer


QUESTION_KINDS = ("happening", "count", "colour", "where", "last", "next_step", "summary")
"""The kinds of questions `live_chat` asks (names of `_Scene` methods)."""


def live_chat(
    annotation: Mapping[str, Any] | Episode,
    fps: float = 2.0,
    *,
    seed: int = 0,
    num_questions: int | None = None,
    question_kinds: Sequence[str] = QUESTION_KINDS,
    instruction: str | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> list[dict[str, Any]]:
    """A live-chat conversation about a synthetic world episode: an instruction (with the goal, for task episodes),
    every narration as an assistant turn, and user questions at random frames (never a frame that has a narration),
    answered from the ground truth (`state_at`, the events and the steps). Questions about the state are asked only
    while nothing moves. `num_questions` defaults to one per 10 s of video (fewer when too few frames qualify)."""
    if isinstance(annotation, Episode):
        annotation = annotation.to_annotation()
    unknown = set(question_kinds) - set(QUESTION_KINDS)
    if unknown:
        raise ValueError(f"unknown question kinds {sorted(unknown)}; valid kinds: {', '.join(QUESTION_KINDS)}")
    rng = random.Random(seed)
    scene = _Scene(annotation)
    duration = float(annotation["duration"])
    if instruction is None:
        instruction = (
            rng.choice(GOAL_INSTRUCTIONS).format(goal=scene.goal)
            if scene.goal and scene.steps
            else rng.choice(LIVE_CHAT_INSTRUCTIONS)
        )
    narrations = annotation["narrations"]
    turns = [{"time": n["time"], "role": "assistant", "content": n["text"]} for n in narrations]
    total = num_stream_frames(duration, fps)
    busy = {min(frame_index(n["time"], fps), total - 1) for n in narrations}
    free = [k for k in range(1, total) if k not in busy]
    wanted = max(1, round(duration / 10)) if num_questions is None else num_questions
    asked = 0
    for k in rng.sample(free, len(free)):
        if asked == wanted:
            break
        t = k / fps
        moving = scene.active(t) is not None
        kinds = [q for q in question_kinds if not moving or q in ("happening", "last", "next_step", "summary")]
        for kind in rng.sample(kinds, len(kinds)):
            if (qa := getattr(scene, kind)(t, rng)) is not None:
                turns += [
                    {"time": t, "role": "user", "content": qa[0]},
                    {"time": t, "role": "assistant", "content": qa[1]},
                ]
                asked += 1
                break
    return build_conversation(turns, duration, fps, instruction=instruction, system_prompt=system_prompt)


def world_conversations(
    annotations: Sequence[Mapping[str, Any]],
    fps: float = 2.0,
    *,
    seed: int = 0,
    kinds: Sequence[str] = ("narration", "live_chat"),
) -> list[dict[str, Any]]:
    """Training rows `{"video", "kind", "conversation", "start_frame"}` for a synthetic world's annotations: one
    narration stream and one live chat per video (seeded per video, so a video always gets the same dialogue)."""
    from ..utils.checks import check_fps

    check_fps("stream fps", fps)
    rows = []
    for index, annotation in enumerate(annotations):
        video = annotation["id"]
        if "narration" in kinds:
            conversation = narration_stream(annotation["narrations"], annotation["duration"], fps, seed=seed + index)
            rows.append({"video": video, "kind": "narration", "conversation": conversation, "start_frame": 0})
        if "live_chat" in kinds:
            conversation = live_chat(annotation, fps, seed=seed + index)
            rows.append({"video": video, "kind": "live_chat", "conversation": conversation, "start_frame": 0})
    return rows
