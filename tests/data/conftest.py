"""A small hand-built world annotation whose state at every time is known by construction."""

from __future__ import annotations

from typing import Any

import pytest


def _state(
    visible: bool,
    colour: str,
    pos: list[float] | None,
    scale: float = 1.0,
    on: str | None = None,
    inside: str | None = None,
) -> dict[str, Any]:
    return {"visible": visible, "colour": colour, "pos": pos, "scale": scale, "on": on, "inside": inside}


def _event(
    kind: str,
    obj: str,
    start: float,
    end: float,
    after: dict[str, Any],
    text: str,
    past: str,
    ongoing: str,
    **args: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "object": obj,
        "start": start,
        "end": end,
        "args": args,
        "after": after,
        "text": text,
        "text_past": past,
        "text_ongoing": ongoing,
    }


@pytest.fixture
def hand_annotation() -> dict[str, Any]:
    """A red circle (left) and a blue square (bottom right) on the table; a green box comes in from the right, the
    circle is put into the box, the square is painted yellow, then the circle is taken away."""
    events = [
        _event(
            "enter",
            "o2",
            1.0,
            2.0,
            _state(True, "green", [0.8, 0.5]),
            "You bring a green box in from the right.",
            "You brought a green box in from the right.",
            "You are bringing a green box in from the right.",
            edge="right",
            **{"from": [1.16, 0.5]},
        ),
        _event(
            "put_into",
            "o0",
            4.0,
            5.0,
            _state(True, "red", [0.76, 0.5], 0.75, inside="o2"),
            "You put the red circle into the green box.",
            "You put the red circle into the green box.",
            "You are putting the red circle into the green box.",
            other="o2",
        ),
        _event(
            "recolour",
            "o1",
            6.5,
            7.0,
            _state(True, "yellow", [0.8, 0.85]),
            "You paint the blue square yellow.",
            "You painted the blue square yellow.",
            "You are painting the blue square yellow.",
            colour="yellow",
        ),
        _event(
            "leave",
            "o0",
            8.0,
            9.0,
            _state(False, "red", [0.76, 1.1]),
            "You take the red circle away.",
            "You took the red circle away.",
            "You are taking the red circle away.",
            edge="bottom",
        ),
    ]
    return {
        "format": "synth_world/1",
        "seed": 0,
        "duration": 10.0,
        "background": {
            "kind": "checker",
            "colours": [[120, 120, 120], [140, 140, 140]],
            "params": {"texture_seed": 1, "angle": 0.0, "cell": 0.1},
        },
        "objects": [
            {"id": "o0", "shape": "circle", "size": "small", "angle": 0.0},
            {"id": "o1", "shape": "square", "size": "large", "angle": 0.0},
            {"id": "o2", "shape": "box", "size": "large", "angle": 0.0},
        ],
        "initial_state": {
            "o0": _state(True, "red", [0.2, 0.5]),
            "o1": _state(True, "blue", [0.8, 0.85]),
            "o2": _state(False, "green", None),
        },
        "events": events,
        "narrations": [{"time": e["end"], "text": e["text"]} for e in events],
        "task": {
            "goal": "put the red circle into the green box",
            "steps": [{"start": 4.0, "end": 5.0, "text": "put the red circle into the green box"}],
        },
    }
