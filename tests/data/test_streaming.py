"""Streaming conversations: golden narration and turn interleaving, and live chat grounded in the world's truth."""

from __future__ import annotations

import pytest

from videollm_online.data.streaming import (
    DEFAULT_SYSTEM_PROMPT,
    NARRATION_INSTRUCTIONS,
    build_conversation,
    live_chat,
    narration_stream,
    num_stream_frames,
)
from videollm_online.data.world import generate_episode, state_at

SYSTEM = {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def stream(num_frames, learn=True):
    return {"role": "stream", "num_frames": num_frames, "learn": learn}


def said(content):
    return {"role": "assistant", "content": content, "learn": True}


def test_system_prompt_is_exact():
    assert DEFAULT_SYSTEM_PROMPT == (
        "A multimodal AI assistant is helping users with some activities. Below is their conversation, interleaved "
        "with the list of video frames received by the assistant."
    )


def test_narration_stream_golden():
    narrations = [
        {"time": 1.2, "text": "You pick up the cup."},
        {"time": 1.4, "text": "You drink."},
        {"time": 3.0, "text": "You put the cup down."},
    ]
    conversation = narration_stream(narrations, duration=5.0, fps=2, instruction="Narrate.")
    assert conversation == [
        SYSTEM,
        {"role": "user", "content": "Narrate."},
        stream(3),  # frames at 0, 0.5, 1.0: the frame at 1.0 is the last one before 1.2 and 1.4
        said("You pick up the cup. You drink."),  # same frame: merged
        stream(4),  # 1.5, 2.0, 2.5, 3.0 (a turn at 3.0 comes after the frame at 3.0)
        said("You put the cup down."),
        stream(3, learn=2),  # 3.5, 4.0, 4.5: silence, and never learn to speak at the end
    ]
    assert sum(m["num_frames"] for m in conversation if m["role"] == "stream") == num_stream_frames(5.0, 2) == 10


def test_narration_stream_edges():
    conversation = narration_stream(
        [{"time": 0.0, "text": "A."}, {"time": 2.0, "text": "B."}], 2.0, fps=2, seed=3, system_prompt=None
    )
    assert conversation[0]["role"] == "user" and conversation[0]["content"] in NARRATION_INSTRUCTIONS
    assert conversation[1:] == [stream(1), said("A."), stream(3), said("B.")]  # a turn at the very end: last frame
    assert narration_stream([], 1.0, seed=3) == [SYSTEM, conversation[0], stream(2, learn=1)]
    assert narration_stream([], 1.0, seed=3) == narration_stream([], 1.0, seed=3)
    with pytest.raises(ValueError, match="outside the video"):
        narration_stream([{"time": 2.5, "text": "late"}], 2.0)


def test_build_conversation_golden_with_questions():
    turns = [
        {"time": 2.2, "role": "assistant", "content": "You sit down."},
        {"time": 1.0, "role": "user", "content": "What do you see?"},
        {"time": 1.0, "role": "assistant", "content": "A table."},
    ]
    assert build_conversation(turns, duration=3.0, fps=2, system_prompt=None) == [
        stream(3, learn=2),  # frames 0, 0.5, 1.0; the user speaks, so the model learns silence on the first two only
        {"role": "user", "content": "What do you see?"},
        said("A table."),
        stream(2),  # 1.5, 2.0
        said("You sit down."),
        stream(1, learn=0),  # 2.5, the last frame
    ]
    with pytest.raises(ValueError, match="role"):
        build_conversation([{"time": 0.0, "role": "robot", "content": "x"}], 1.0)


def _questions_with_times(conversation, fps):
    """(time, question, answer) of each user turn, from the frames streamed before it."""
    frames, out = 0, []
    for i, message in enumerate(conversation):
        if message["role"] == "stream":
            frames += message["num_frames"]
        elif message["role"] == "user" and frames:
            out.append(((frames - 1) / fps, message["content"], conversation[i + 1]["content"]))
    return out


def test_live_chat_is_grounded_in_the_world():
    numbers = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
    kinds_seen = set()
    for seed in range(12):
        annotation = generate_episode(seed).to_annotation()
        conversation = live_chat(annotation, fps=2, seed=seed, num_questions=6)
        assert conversation == live_chat(annotation, fps=2, seed=seed, num_questions=6)
        assert conversation[0] == SYSTEM and conversation[1]["role"] == "user"
        total = num_stream_frames(annotation["duration"], 2)
        assert sum(m["num_frames"] for m in conversation if m["role"] == "stream") == total
        narrated = [
            m["content"]
            for m, before in zip(conversation[1:], conversation)
            if m["role"] == "assistant" and before["role"] == "stream"
        ]
        assert narrated == [n["text"] for n in annotation["narrations"]]
        questions = _questions_with_times(conversation, 2)
        assert len(questions) == 6
        for t, question, answer in questions:
            views = state_at(annotation, t)
            if question.startswith("How many"):
                kinds_seen.add("count")
                assert answer.startswith("There is nothing") or numbers[answer.split()[2].rstrip(":")] == len(views)
            elif question.startswith("What colour is the "):
                kinds_seen.add("colour")
                words = question[len("What colour is the ") : -1].split()
                match = [v for v in views if v.shape == words[-1] and (len(words) == 1 or v.size == words[0])]
                assert len(match) == 1 and answer.rstrip(".").split()[-1] == match[0].colour
            elif question.startswith("Where is the "):
                kinds_seen.add("where")
                colour, shape = question[len("Where is the ") : -1].split()
                assert any(v.colour == colour and v.shape == shape for v in views)
            elif question in ("What did I just do?", "What was my last action?"):
                kinds_seen.add("last")
                done = [e for e in annotation["events"] if e["end"] <= t]
                assert answer == (done[-1]["text_past"] if done else "You have not done anything yet.")
    assert kinds_seen == {"count", "colour", "where", "last"}


def test_live_chat_hand_built(hand_annotation):
    conversation = live_chat(
        hand_annotation, fps=2, seed=1, num_questions=3, question_kinds=("where",), instruction="Go."
    )
    assert conversation[:2] == [SYSTEM, {"role": "user", "content": "Go."}]

    def expected(t, name):
        return {
            "the red circle": "on the left" if t < 5 else "in the green box",
            "the blue square": "in the bottom right corner",
            "the yellow square": "in the bottom right corner",
            "the green box": "on the right",
        }[name]

    questions = _questions_with_times(conversation, 2)
    assert len(questions) == 3
    for t, question, answer in questions:
        name = question[len("Where is ") : -1]
        assert answer == f"{name[0].upper()}{name[1:]} is {expected(t, name)}."
    goal_chat = live_chat(hand_annotation, seed=0, num_questions=1, question_kinds=("next_step",))
    assert "put the red circle into the green box" in goal_chat[1]["content"]
    with pytest.raises(ValueError, match="valid kinds"):
        live_chat(hand_annotation, question_kinds=("weather",))
