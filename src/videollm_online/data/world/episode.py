"""An episode as data (objects, their states, timed events, the task's steps) with its JSON annotation, and
`state_at`, which replays an annotation to the objects visible at a time."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..world_language import describe_object, place_of
from .config import FORMAT


@dataclass(frozen=True)
class ObjectSpec:
    """What never changes about an object."""

    id: str
    shape: str
    size: str
    angle: float = 0.0
    """Drawing rotation in degrees (squares, triangles, stars, boxes)."""


@dataclass
class ObjectState:
    """What events change about an object. `pos` is the normalised centre (None before it first enters)."""

    visible: bool
    colour: str
    pos: tuple[float, float] | None = None
    scale: float = 1.0
    on: str | None = None
    """Id of the object this one is stacked on."""
    inside: str | None = None
    """Id of the container this one is in."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "visible": self.visible,
            "colour": self.colour,
            "pos": None if self.pos is None else list(self.pos),
            "scale": self.scale,
            "on": self.on,
            "inside": self.inside,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectState:
        pos = data.get("pos")
        return cls(
            bool(data["visible"]),
            data["colour"],
            None if pos is None else (float(pos[0]), float(pos[1])),
            float(data.get("scale", 1.0)),
            data.get("on"),
            data.get("inside"),
        )


@dataclass
class Event:
    """One timed change of one object; `after` is the object's whole state once the event completes at `end`."""

    kind: str
    object: str
    start: float
    end: float
    args: dict[str, Any]
    after: ObjectState
    text: str
    """Present-tense narration, said at `end`."""
    text_past: str
    text_ongoing: str

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["after"] = self.after.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        return cls(
            data["kind"],
            data["object"],
            float(data["start"]),
            float(data["end"]),
            dict(data["args"]),
            ObjectState.from_dict(data["after"]),
            data["text"],
            data["text_past"],
            data["text_ongoing"],
        )


@dataclass
class Step:
    """A step of a goal (COIN / Ego4D GoalStep style), spanning its events."""

    start: float
    end: float
    text: str


@dataclass
class Task:
    goal: str | None = None
    steps: list[Step] = field(default_factory=list)


@dataclass
class Background:
    kind: str
    colours: list[list[int]]
    params: dict[str, Any]


@dataclass
class Episode:
    """A whole video as data: everything needed to render it and everything a model could be asked about it."""

    seed: int
    duration: float
    background: Background
    objects: list[ObjectSpec]
    initial_state: dict[str, ObjectState]
    events: list[Event]
    task: Task

    @property
    def narrations(self) -> list[dict[str, Any]]:
        return [{"time": event.end, "text": event.text} for event in self.events]

    def to_annotation(self) -> dict[str, Any]:
        """The JSON-ready annotation: {"format", "seed", "duration", "background": {"kind", "colours", "params"},
        "objects": [{"id", "shape", "size", "angle"}], "initial_state": {id: state}, "events": [{"kind", "object",
        "start", "end", "args", "after": state, "text", "text_past", "text_ongoing"}], "narrations": [{"time",
        "text"}], "task": {"goal", "steps": [{"start", "end", "text"}]}}, where a state is {"visible", "colour",
        "pos": [x, y] | null, "scale", "on", "inside"}. `write_world` adds "id" and "video"."""
        return {
            "format": FORMAT,
            "seed": self.seed,
            "duration": self.duration,
            "background": dataclasses.asdict(self.background),
            "objects": [dataclasses.asdict(spec) for spec in self.objects],
            "initial_state": {oid: state.to_dict() for oid, state in self.initial_state.items()},
            "events": [event.to_dict() for event in self.events],
            "narrations": self.narrations,
            "task": {"goal": self.task.goal, "steps": [dataclasses.asdict(step) for step in self.task.steps]},
        }

    @classmethod
    def from_annotation(cls, data: Mapping[str, Any]) -> Episode:
        background = data["background"]
        return cls(
            seed=int(data["seed"]),
            duration=float(data["duration"]),
            background=Background(
                background["kind"], [list(c) for c in background["colours"]], dict(background["params"])
            ),
            objects=[ObjectSpec(o["id"], o["shape"], o["size"], float(o.get("angle", 0.0))) for o in data["objects"]],
            initial_state={oid: ObjectState.from_dict(s) for oid, s in data["initial_state"].items()},
            events=[Event.from_dict(e) for e in data["events"]],
            task=Task(
                data["task"]["goal"],
                [Step(float(s["start"]), float(s["end"]), s["text"]) for s in data["task"]["steps"]],
            ),
        )


@dataclass(frozen=True)
class ObjectView:
    """A visible object at some time, as `state_at` reports it."""

    id: str
    shape: str
    size: str
    colour: str
    position: str
    """Named place (see `PLACES`) of the object, or of the object it is on / in."""
    on: str | None
    inside: str | None
    xy: tuple[float, float]

    def describe(self, article: str = "the", with_size: bool = False) -> str:
        return describe_object(article, self.size if with_size else "", self.colour, self.shape)


def state_at(annotation: Mapping[str, Any] | Episode, t: float) -> list[ObjectView]:
    """The objects visible at time `t` (seconds), in object order. An event counts once it completes (`end <= t`);
    only `objects`, `initial_state` and `events[*].object/end/after` of the annotation are read."""
    if isinstance(annotation, Episode):
        annotation = annotation.to_annotation()
    specs = {o["id"]: o for o in annotation["objects"]}
    state = {oid: dict(s) for oid, s in annotation["initial_state"].items()}
    for event in annotation["events"]:
        if event["end"] <= t + 1e-9:
            state[event["object"]] = dict(event["after"])
    views = []
    for oid, spec in specs.items():
        s = state[oid]
        if not s["visible"]:
            continue
        root, seen = oid, {oid}
        while (parent := state[root].get("on") or state[root].get("inside")) is not None and parent not in seen:
            root = parent
            seen.add(root)
        x, y = state[root]["pos"]
        views.append(
            ObjectView(
                oid,
                spec["shape"],
                spec["size"],
                s["colour"],
                place_of(x, y),
                s.get("on"),
                s.get("inside"),
                (float(s["pos"][0]), float(s["pos"][1])),
            )
        )
    return views
