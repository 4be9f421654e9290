"""A procedural tabletop world of activity videos with exact ground truth, deterministic per seed.

`generate_episode` simulates a few shapes on a textured table and a sequence of timed, non-overlapping events (enter,
appear, leave, move, move next to, recolour, put on, put into), optionally grouped into the ordered steps of a goal;
the result is pure data whose annotation (JSON) holds Ego4D-style narrations, COIN/GoalStep-style step segments and a
state timeline (initial state + each event's resulting object state) that `state_at` replays. `render_episode` draws
an episode frame by frame (camera jitter, lighting drift, noise, motion blur) into an H.264 mp4 with PyAV, and
`write_world` writes a resumable dataset: `videos/{id}.mp4`, `annotations/{id}.json` and `index.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import string
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..utils.files import write_json_atomic

FORMAT = "synth_world/1"
VIDEO_COMMENT = f"videollm-online {FORMAT}"
"""Written into every world video's container (its `comment` tag): how `bundled.is_world_video` knows one."""
"""Version tag written into every annotation and index."""

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (40, 160, 60),
    "blue": (35, 85, 220),
    "yellow": (245, 210, 30),
    "purple": (140, 65, 190),
    "orange": (255, 130, 20),
    "white": (245, 245, 245),
    "black": (22, 22, 22),
}
"""Object colours: far apart in hue or lightness, so they survive lighting drift, noise and low resolution."""

SOLID_SHAPES = ("circle", "square", "triangle", "star")
CONTAINER_SHAPES = ("box", "ring")
"""Hollow shapes that small solid shapes can be put into; containers are always large."""
SHAPES = SOLID_SHAPES + CONTAINER_SHAPES
SIZES = ("small", "large")
EDGES = ("left", "right", "top", "bottom")
# How often a narration names the object's size: an object coming into the scene ("a small red circle"), any other.
SIZE_SAID = {"a_obj": 0.3, "obj": 0.2}

_RADIUS = {"small": 0.05, "large": 0.085}  # in units of the frame's shorter side
_CONTAINER_RADIUS = 0.12
_CONTAINED_SCALE = 0.75  # objects in a container are drawn smaller so that two fit
_CAPACITY = 2
_SLOTS = ((-0.04, 0.0), (0.04, 0.0))
_STACK_OFFSET = 0.6  # an object on another sits this many base radii above the base's centre
_MAX_STACK = 3
_BORDER = 0.02

_ROWS = ("top", "centre", "bottom")
_COLS = ("left", "centre", "right")


def _cell_name(row: str, col: str) -> str:
    if row == "centre":
        return col
    return row if col == "centre" else f"{row} {col}"


PLACES: dict[str, tuple[float, float]] = {
    _cell_name(row, col): ((j + 0.5) / 3, (i + 0.5) / 3) for i, row in enumerate(_ROWS) for j, col in enumerate(_COLS)
}
"""The nine named places (a 3 x 3 grid over the frame) and their centres in normalised (x, y), y pointing down."""

PLACE_AT = {
    name: (
        "in the centre"
        if name == "centre"
        else f"in the {name} corner"
        if " " in name
        else f"at the {name}"
        if name in ("top", "bottom")
        else f"on the {name}"
    )
    for name in PLACES
}
PLACE_TO = {
    name: ("to the centre" if name == "centre" else f"to the {name} corner" if " " in name else f"to the {name}")
    for name in PLACES
}
_SIDES = {
    "left": ("top left", "left", "bottom left"),
    "right": ("top right", "right", "bottom right"),
    "top": ("top left", "top", "top right"),
    "bottom": ("bottom left", "bottom", "bottom right"),
}
_SIDE_AT = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


def object_radius(shape: str, size: str) -> float:
    """Drawn radius of an object at full scale, in units of the frame's shorter side."""
    return _CONTAINER_RADIUS if shape in CONTAINER_SHAPES else _RADIUS[size]


def place_of(x: float, y: float) -> str:
    """The named place (cell of the 3 x 3 grid) of a normalised position."""
    col = _COLS[min(2, max(0, int(x * 3)))]
    row = _ROWS[min(2, max(0, int(y * 3)))]
    return _cell_name(row, col)


def num_frames(duration: float, fps: float) -> int:
    """Frames sampled at `fps` from `duration` seconds of video: frame i shows time i / fps, for i / fps < duration."""
    return max(1, math.ceil(duration * fps - 1e-6))


# ---------------------------------------------------------------------------------------------------- configuration
@dataclass
class WorldConfig:
    """How episodes are generated and rendered."""

    width: int = 256
    """Frame width in pixels (even, at least 32)."""
    height: int = 256
    """Frame height in pixels (even, at least 32)."""
    fps: int = 10
    """Frame rate of the rendered mp4 (the source rate; training subsamples it)."""
    min_duration: float = 20.0
    """Shortest episode, seconds."""
    max_duration: float = 60.0
    """Longest episode, seconds; a task that would run past it loses its last steps."""
    event_duration: tuple[float, float] = (0.5, 2.0)
    """Range of an event's duration (the motion or colour fade), seconds."""
    idle_gap: tuple[float, float] = (1.0, 4.0)
    """Range of the idle time before each event (and after the last one), seconds."""
    max_objects: int = 6
    """Most objects in one episode (task objects plus distractors)."""
    task_prob: float = 0.75
    """Probability that an episode pursues a goal made of ordered steps; otherwise it is free play."""
    camera_jitter: float = 0.015
    """Amplitude of the camera's smooth random translation, as a fraction of the frame size."""
    zoom_jitter: float = 0.04
    """Amplitude of the camera's random zoom-in (1 + zoom_jitter at most)."""
    lighting_drift: float = 0.12
    """Amplitude of the global brightness, tint and light-direction drift (relative gain)."""
    noise_std: float = 4.0
    """Standard deviation of per-pixel Gaussian noise, in 0-255 units."""
    motion_blur: bool = True
    """Average three sub-frame renders while an object moves."""
    crf: int = 23
    """x264 constant rate factor (0 lossless .. 51 worst)."""
    time_grid: float = 0.0
    """When > 0, events start and end on multiples of this many seconds. Set it to the training frame period
    (0.5 s at 2 fps) so the frame a narration follows shows the finished event."""

    def __post_init__(self) -> None:
        for name in ("event_duration", "idle_gap"):
            try:
                setattr(self, name, tuple(float(v) for v in getattr(self, name)))
            except (TypeError, ValueError):
                raise ValueError(f"WorldConfig.{name} must be a pair of numbers, got {getattr(self, name)!r}") from None
        for name in ("width", "height", "fps", "max_objects", "crf"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"WorldConfig.{name} must be an int, got {value!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 32 or value > 4096 or value % 2:
                raise ValueError(f"WorldConfig.{name} must be even and in [32, 4096] (yuv420p), got {value}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"WorldConfig.fps must be in [1, 120], got {self.fps}")
        if not 0 < self.min_duration <= self.max_duration <= 3600:
            raise ValueError(
                f"WorldConfig needs 0 < min_duration <= max_duration <= 3600, "
                f"got {self.min_duration} and {self.max_duration}"
            )
        for name, low in (("event_duration", 0.1), ("idle_gap", 0.0)):
            value = getattr(self, name)
            if len(value) != 2 or not low <= value[0] <= value[1] or value[1] <= 0:
                raise ValueError(f"WorldConfig.{name} must be (lo, hi) with {low} <= lo <= hi and hi > 0, got {value}")
        if not 2 <= self.max_objects <= 12:
            raise ValueError(f"WorldConfig.max_objects must be in [2, 12], got {self.max_objects}")
        for name, hi in (
            ("task_prob", 1.0),
            ("camera_jitter", 0.1),
            ("zoom_jitter", 0.3),
            ("lighting_drift", 0.5),
            ("noise_std", 50.0),
        ):
            value = getattr(self, name)
            if not 0 <= value <= hi:
                raise ValueError(f"WorldConfig.{name} must be in [0, {hi}], got {value}")
        if not 0 <= self.time_grid <= 5:
            raise ValueError(f"WorldConfig.time_grid must be in [0, 5] seconds, got {self.time_grid}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"WorldConfig.crf must be in [0, 51], got {self.crf}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorldConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown WorldConfig fields {sorted(unknown)}; valid fields: {', '.join(sorted(names))}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------------- episode data
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


def _describe(article: str, size: str, colour: str, shape: str) -> str:
    """'the red circle', 'a small red circle', 'an orange star' ('a' becomes 'an' before a vowel)."""
    words = [w for w in (size, colour, shape) if w]
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *words])


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
        return _describe(article, self.size if with_size else "", self.colour, self.shape)


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


# ---------------------------------------------------------------------------------------------------- simulation
def _pick(rng: np.random.Generator, items: list | tuple) -> Any:
    return items[int(rng.integers(len(items)))] if len(items) else None


def _shuffled(rng: np.random.Generator, items: Iterable) -> list:
    items = list(items)
    return [items[i] for i in rng.permutation(len(items))]


def _r4(v: float) -> float:
    return round(float(v), 4)


@dataclass
class _Draft:
    """An untimed event: what changes, and the fields its sentence templates need."""

    kind: str
    object: str
    args: dict[str, Any]
    after: ObjectState
    fields: dict[str, str]


class _World:
    """The simulated table: object specs plus their current states, with the geometry the events need."""

    def __init__(self, specs: dict[str, ObjectSpec], state: dict[str, ObjectState]):
        self.specs = specs
        self.state = state
        self.avoid_colours: set[str] = set()

    def copy(self) -> _World:
        world = _World(self.specs, {oid: dataclasses.replace(s) for oid, s in self.state.items()})
        world.avoid_colours = set(self.avoid_colours)
        return world

    def radius(self, oid: str, scale: float | None = None) -> float:
        spec = self.specs[oid]
        return object_radius(spec.shape, spec.size) * (self.state[oid].scale if scale is None else scale)

    def visible(self) -> list[str]:
        return [oid for oid, s in self.state.items() if s.visible]

    def children(self, oid: str) -> list[str]:
        return [o for o, s in self.state.items() if s.visible and oid in (s.on, s.inside)]

    def movable(self, oid: str) -> bool:
        return self.state[oid].visible and not self.children(oid)

    def stack_height(self, oid: str) -> int:
        height = 1
        while (oid := self.state[oid].on) is not None:
            height += 1
        return height

    def place(self, oid: str) -> str:
        while (parent := self.state[oid].on or self.state[oid].inside) is not None:
            oid = parent
        return place_of(*self.state[oid].pos)

    def describe(self, oid: str, article: str = "the", with_size: bool = False) -> str:
        spec = self.specs[oid]
        return _describe(article, spec.size if with_size else "", self.state[oid].colour, spec.shape)

    def taken(self, colour: str, shape: str, exclude: str | None = None) -> bool:
        return any(o != exclude and s.colour == colour and self.specs[o].shape == shape for o, s in self.state.items())

    def free(self, pos: tuple[float, float], r: float, ignore: Iterable[str] = ()) -> bool:
        x, y = pos
        if not (r + _BORDER <= x <= 1 - r - _BORDER and r + _BORDER <= y <= 1 - r - _BORDER):
            return False
        ignore = set(ignore)
        for oid in self.visible():
            if oid in ignore:
                continue
            ox, oy = self.state[oid].pos
            if math.hypot(x - ox, y - oy) < r + self.radius(oid) + 0.015:
                return False
        return True

    def spot(
        self, rng: np.random.Generator, r: float, place: str | None = None, ignore: Iterable[str] = ()
    ) -> tuple[float, float] | None:
        """A random free position (in `place`, or anywhere), or None."""
        ignore = tuple(ignore)
        for _ in range(40):
            cell = place or _pick(rng, list(PLACES))
            cx, cy = PLACES[cell]
            pos = (_r4(cx + rng.uniform(-0.1, 0.1)), _r4(cy + rng.uniform(-0.1, 0.1)))
            if place_of(*pos) == cell and self.free(pos, r, ignore):
                return pos
        return None

    def apply(self, draft: _Draft) -> None:
        self.state[draft.object] = dataclasses.replace(draft.after)


def _offscreen(pos: tuple[float, float], edge: str, r: float) -> list[float]:
    x, y = pos
    far = r + 0.04
    ends = {"left": [_r4(-far), y], "right": [_r4(1 + far), y], "top": [x, _r4(-far)], "bottom": [x, _r4(1 + far)]}
    return ends[edge]


def _nearest_edge(pos: tuple[float, float]) -> str:
    x, y = pos
    return min(zip((x, 1 - x, y, 1 - y), EDGES))[1]


def _candidates(w: _World, obj: str | None, ok: Callable[[str], bool], frozen: frozenset[str]) -> list[str]:
    if obj is not None:
        return [obj] if ok(obj) else []
    return [o for o in w.specs if o not in frozen and ok(o)]


def _said(w: _World, rng: np.random.Generator, obj: str, article: str = "the") -> str:
    """How a narration names `obj`: "the red circle", its size said only sometimes (`SIZE_SAID`)."""
    return w.describe(obj, article, rng.random() < SIZE_SAID["a_obj" if article == "a" else "obj"])


# Each event kind: (world, rng, obj=None, target=None, place=None, frozen=...) -> _Draft | None. Unset arguments are
# chosen at random among valid ones; None means the event is impossible in this world state.
def _ev_enter(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    obj = _pick(rng, _candidates(w, obj, lambda o: not w.state[o].visible, frozen))
    if obj is None or (pos := w.spot(rng, w.radius(obj, 1.0), place)) is None:
        return None
    edge = _pick(rng, EDGES)
    after = ObjectState(True, w.state[obj].colour, pos)
    return _Draft(
        "enter",
        obj,
        {"edge": edge, "from": _offscreen(pos, edge, w.radius(obj, 1.0))},
        after,
        {"a_obj": _said(w, rng, obj, "a"), "edge": edge},
    )


def _ev_appear(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    obj = _pick(rng, _candidates(w, obj, lambda o: not w.state[o].visible, frozen))
    if obj is None or (pos := w.spot(rng, w.radius(obj, 1.0), place)) is None:
        return None
    after = ObjectState(True, w.state[obj].colour, pos)
    return _Draft(
        "appear",
        obj,
        {"place": place_of(*pos)},
        after,
        {"a_obj": _said(w, rng, obj, "a"), "place_at": PLACE_AT[place_of(*pos)]},
    )


def _ev_leave(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    obj = _pick(rng, _candidates(w, obj, w.movable, frozen))
    if obj is None:
        return None
    state = w.state[obj]
    edge = place or _nearest_edge(state.pos)
    after = ObjectState(False, state.colour, tuple(_offscreen(state.pos, edge, w.radius(obj, 1.0))))
    return _Draft("leave", obj, {"edge": edge}, after, {"obj": _said(w, rng, obj), "edge": edge})


def _ev_move(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    obj = _pick(rng, _candidates(w, obj, w.movable, frozen))
    if obj is None:
        return None
    place = place or _pick(rng, [p for p in PLACES if p != w.place(obj)])
    if place == w.place(obj) or (pos := w.spot(rng, w.radius(obj, 1.0), place, ignore=[obj])) is None:
        return None
    after = ObjectState(True, w.state[obj].colour, pos)
    return _Draft("move", obj, {"place": place}, after, {"obj": _said(w, rng, obj), "place_to": PLACE_TO[place]})


def _ev_move_next_to(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    obj = _pick(rng, _candidates(w, obj, w.movable, frozen))
    if obj is None:
        return None
    others = [target] if target else [o for o in w.specs if o not in frozen]
    other = _pick(
        rng,
        [o for o in others if o != obj and w.state[o].visible and w.state[o].inside is None and w.state[o].on is None],
    )
    if other is None:
        return None
    r = w.radius(obj, 1.0)
    ox, oy = w.state[other].pos
    for side in _shuffled(rng, ("left", "right")):
        dx = (w.radius(other) + r + 0.025) * (-1 if side == "left" else 1)
        pos = (_r4(ox + dx), _r4(oy))
        if w.free(pos, r, ignore=[obj]):
            after = ObjectState(True, w.state[obj].colour, pos)
            return _Draft(
                "move_next_to",
                obj,
                {"other": other, "side": side},
                after,
                {"obj": _said(w, rng, obj), "other": w.describe(other)},
            )
    return None


def _ev_recolour(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    obj = _pick(rng, _candidates(w, obj, lambda o: w.state[o].visible, frozen))
    if obj is None:
        return None
    state, shape = w.state[obj], w.specs[obj].shape
    colours = [place] if place else [c for c in PALETTE if c not in w.avoid_colours]
    colour = _pick(rng, [c for c in colours if c != state.colour and not w.taken(c, shape, exclude=obj)])
    if colour is None:
        return None
    return _Draft(
        "recolour",
        obj,
        {"colour": colour},
        dataclasses.replace(state, colour=colour),
        {"obj": _said(w, rng, obj), "colour": colour},
    )


def _ev_put_on(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    def solid(o: str) -> bool:
        return w.specs[o].shape in SOLID_SHAPES

    obj = _pick(rng, _candidates(w, obj, lambda o: solid(o) and w.movable(o), frozen))
    if obj is None:
        return None
    bases = [target] if target else [o for o in w.visible() if o not in frozen]
    bases = [
        b
        for b in bases
        if b != obj
        and solid(b)
        and w.state[b].visible
        and not w.children(b)
        and w.state[b].inside is None
        and w.stack_height(b) < _MAX_STACK
    ]
    base = _pick(rng, bases)
    if base is None:
        return None
    bx, by = w.state[base].pos
    pos = (bx, _r4(by - _STACK_OFFSET * w.radius(base)))
    if pos[1] - w.radius(obj, 1.0) < _BORDER:
        return None
    after = ObjectState(True, w.state[obj].colour, pos, on=base)
    return _Draft("put_on", obj, {"other": base}, after, {"obj": _said(w, rng, obj), "other": w.describe(base)})


def _ev_put_into(
    w: _World,
    rng: np.random.Generator,
    obj: str | None = None,
    target: str | None = None,
    place: str | None = None,
    frozen: frozenset[str] = frozenset(),
) -> _Draft | None:
    def fits(o: str) -> bool:
        return w.specs[o].shape in SOLID_SHAPES and w.specs[o].size == "small" and w.movable(o)

    obj = _pick(rng, _candidates(w, obj, fits, frozen))
    if obj is None:
        return None
    boxes = [target] if target else [o for o in w.visible() if o not in frozen]
    boxes = [
        b
        for b in boxes
        if w.specs[b].shape in CONTAINER_SHAPES
        and w.state[b].visible
        and w.state[b].inside is None
        and w.state[b].on is None
        and sum(w.state[o].inside == b for o in w.visible() if o != obj) < _CAPACITY
    ]
    box = _pick(rng, boxes)
    if box is None:
        return None
    bx, by = w.state[box].pos
    used = {w.state[o].pos for o in w.visible() if w.state[o].inside == box and o != obj}
    slots = [(_r4(bx + dx), _r4(by + dy)) for dx, dy in _SLOTS]
    pos = next(p for p in slots if p not in used)
    after = ObjectState(True, w.state[obj].colour, pos, _CONTAINED_SCALE, inside=box)
    return _Draft("put_into", obj, {"other": box}, after, {"obj": _said(w, rng, obj), "other": w.describe(box)})


EVENT_KINDS: dict[str, Callable[..., _Draft | None]] = {
    "enter": _ev_enter,
    "appear": _ev_appear,
    "leave": _ev_leave,
    "move": _ev_move,
    "move_next_to": _ev_move_next_to,
    "recolour": _ev_recolour,
    "put_on": _ev_put_on,
    "put_into": _ev_put_into,
}
"""The event kinds of the world, by name."""

# Per kind, phrasings as (present, past, ongoing); the episode's rng picks one per event.
TEMPLATES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "enter": (
        (
            "You bring {a_obj} in from the {edge}.",
            "You brought {a_obj} in from the {edge}.",
            "You are bringing {a_obj} in from the {edge}.",
        ),
        (
            "You slide {a_obj} into view from the {edge}.",
            "You slid {a_obj} into view from the {edge}.",
            "You are sliding {a_obj} into view from the {edge}.",
        ),
        (
            "You push {a_obj} in from the {edge}.",
            "You pushed {a_obj} in from the {edge}.",
            "You are pushing {a_obj} in from the {edge}.",
        ),
    ),
    "appear": (
        (
            "You put down {a_obj} {place_at}.",
            "You put down {a_obj} {place_at}.",
            "You are putting down {a_obj} {place_at}.",
        ),
        ("You place {a_obj} {place_at}.", "You placed {a_obj} {place_at}.", "You are placing {a_obj} {place_at}."),
        (
            "You set {a_obj} down {place_at}.",
            "You set {a_obj} down {place_at}.",
            "You are setting {a_obj} down {place_at}.",
        ),
    ),
    "leave": (
        ("You take {obj} away.", "You took {obj} away.", "You are taking {obj} away."),
        (
            "You slide {obj} off to the {edge}.",
            "You slid {obj} off to the {edge}.",
            "You are sliding {obj} off to the {edge}.",
        ),
        ("You move {obj} out of view.", "You moved {obj} out of view.", "You are moving {obj} out of view."),
    ),
    "move": (
        ("You move {obj} {place_to}.", "You moved {obj} {place_to}.", "You are moving {obj} {place_to}."),
        ("You slide {obj} {place_to}.", "You slid {obj} {place_to}.", "You are sliding {obj} {place_to}."),
        ("You shift {obj} {place_to}.", "You shifted {obj} {place_to}.", "You are shifting {obj} {place_to}."),
    ),
    "move_next_to": (
        (
            "You move {obj} next to {other}.",
            "You moved {obj} next to {other}.",
            "You are moving {obj} next to {other}.",
        ),
        ("You put {obj} beside {other}.", "You put {obj} beside {other}.", "You are putting {obj} beside {other}."),
        (
            "You place {obj} next to {other}.",
            "You placed {obj} next to {other}.",
            "You are placing {obj} next to {other}.",
        ),
    ),
    "recolour": (
        ("You paint {obj} {colour}.", "You painted {obj} {colour}.", "You are painting {obj} {colour}."),
        (
            "You change the colour of {obj} to {colour}.",
            "You changed the colour of {obj} to {colour}.",
            "You are changing the colour of {obj} to {colour}.",
        ),
        ("You turn {obj} {colour}.", "You turned {obj} {colour}.", "You are turning {obj} {colour}."),
    ),
    "put_on": (
        ("You put {obj} on {other}.", "You put {obj} on {other}.", "You are putting {obj} on {other}."),
        (
            "You stack {obj} on top of {other}.",
            "You stacked {obj} on top of {other}.",
            "You are stacking {obj} on top of {other}.",
        ),
        ("You place {obj} on {other}.", "You placed {obj} on {other}.", "You are placing {obj} on {other}."),
    ),
    "put_into": (
        ("You put {obj} into {other}.", "You put {obj} into {other}.", "You are putting {obj} into {other}."),
        ("You drop {obj} into {other}.", "You dropped {obj} into {other}.", "You are dropping {obj} into {other}."),
        ("You place {obj} in {other}.", "You placed {obj} in {other}.", "You are placing {obj} in {other}."),
    ),
}


def make_event_draft(world: _World, rng: np.random.Generator, kind: str, **kwargs: Any) -> _Draft | None:
    """Build an untimed event of `kind` (see `EVENT_KINDS`), or None when the world does not allow it."""
    try:
        builder = EVENT_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}; valid kinds: {', '.join(EVENT_KINDS)}") from None
    return builder(world, rng, **kwargs)


# ---------------------------------------------------------------------------------------------------- narration parsing
@dataclass(frozen=True)
class EventKey:
    """The canonical content of a narration: which event happened to which object. Synonyms and tenses of the
    templates map to one key; what a sentence may leave unsaid is None."""

    kind: str
    """An `EVENT_KINDS` name."""
    colour: str
    """The object's colour as the sentence names it (for a recolour: before the change)."""
    shape: str
    size: str | None = None
    """Said only sometimes ("the small red circle")."""
    target: str | None = None
    """Where or what to: the place (appear, move; a `PLACES` name), the edge (enter, leave), the new colour
    (recolour), or the other object as "colour shape" (move_next_to, put_on, put_into). None when unsaid (leave:
    "You take the red circle away.")."""

    def matches(self, other: EventKey) -> bool:
        """Same event: kind, colour and shape equal; size and target equal where both sentences say them."""

        def agree(a: str | None, b: str | None) -> bool:
            return a is None or b is None or a == b

        return (
            (self.kind, self.colour, self.shape) == (other.kind, other.colour, other.shape)
            and agree(self.size, other.size)
            and agree(self.target, other.target)
        )


def _alternation(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


def _object_pattern(prefix: str) -> str:
    # Articles are not part of the event: "a", "an" and "the" are all accepted in every object slot.
    return (
        f"(?:the|an?) (?:(?P<{prefix}size>{_alternation(SIZES)}) )?(?P<{prefix}colour>{_alternation(PALETTE)}) "
        f"(?P<{prefix}shape>{_alternation(SHAPES)})"
    )


_PLACE_BY_PHRASE = {
    **{phrase: name for name, phrase in PLACE_AT.items()},
    **{phrase: name for name, phrase in PLACE_TO.items()},
}
_FIELD_PATTERNS = {
    "a_obj": _object_pattern("obj_"),
    "obj": _object_pattern("obj_"),
    "other": _object_pattern("other_"),
    "edge": f"(?P<edge>{_alternation(EDGES)})",
    "place_at": f"(?P<place>{_alternation(PLACE_AT.values())})",
    "place_to": f"(?P<place>{_alternation(PLACE_TO.values())})",
    "colour": f"(?P<colour>{_alternation(PALETTE)})",
}


def _normalize_narration(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .!")


def _compile_templates() -> list[tuple[str, re.Pattern]]:
    """One regex per (kind, phrasing, tense) of `TEMPLATES`, with a named group per field."""
    compiled = []
    for kind, phrasings in TEMPLATES.items():
        for phrasing in phrasings:
            for form in phrasing:
                pattern = ""
                for literal, name, _, _ in string.Formatter().parse(_normalize_narration(form)):
                    pattern += re.escape(literal)
                    if name is not None:
                        if name not in _FIELD_PATTERNS:
                            raise ValueError(f"template field {{{name}}} of {kind!r} has no parsing pattern")
                        pattern += _FIELD_PATTERNS[name]
                compiled.append((kind, re.compile(pattern)))
    return compiled


_TEMPLATE_PATTERNS = _compile_templates()


@functools.lru_cache(maxsize=8192)
def parse_narration(text: str) -> EventKey | None:
    """The event a narration sentence states, read with the generator's own templates (any phrasing and tense,
    case, spacing and the final full stop ignored), or None when no template reads it or two read it differently."""
    sentence = _normalize_narration(text)
    keys = set()
    for kind, pattern in _TEMPLATE_PATTERNS:
        found = pattern.fullmatch(sentence)
        if found is None:
            continue
        fields = found.groupdict()
        if fields.get("other_colour"):
            target = f"{fields['other_colour']} {fields['other_shape']}"
        elif fields.get("place"):
            target = _PLACE_BY_PHRASE[fields["place"]]
        else:
            target = fields.get("edge") or fields.get("colour")
        keys.add(EventKey(kind, fields["obj_colour"], fields["obj_shape"], fields["obj_size"], target))
    return keys.pop() if len(keys) == 1 else None


def same_event(said: str, reference: str) -> bool:
    """Whether two narration sentences state the same event (`EventKey.matches`); sentences that do not parse
    match only when equal after normalisation."""
    a, b = parse_narration(said), parse_narration(reference)
    if a is None or b is None:
        return _normalize_narration(said) == _normalize_narration(reference)
    return a.matches(b)


EVENT_FIELDS = ("kind", "colour", "shape", "target")
"""The parts of a narrated event that `event_field_counts` scores one by one."""


def event_field_counts(
    said: Sequence[tuple[float, str]], narrations: Sequence[tuple[float, str]], window: float = 1.0
) -> dict[str, int]:
    """Why narrations are missed: for each ground-truth narration, the turn said nearest in time, if one is within
    `window` seconds, compared part by part.

    Counts: `narrations`; `near` (a turn within the window); `parsed` (of those, both sentences read into events);
    and, of the parsed, how many have each of `EVENT_FIELDS` right (`target`: over the pairs where both sentences
    say one, counted in `target_said`). A model that says the right event at the wrong moment is `near` but wrong;
    one that names the right object doing the wrong thing has `colour` and `shape` right but not `kind`."""
    counts = dict.fromkeys(("narrations", "near", "parsed", *EVENT_FIELDS, "target_said"), 0)
    for time, text in narrations:
        counts["narrations"] += 1
        nearest = min(said, key=lambda turn: abs(turn[0] - time), default=None)
        if nearest is None or abs(nearest[0] - time) > window + 1e-9:
            continue
        counts["near"] += 1
        reference, spoken = parse_narration(text), parse_narration(nearest[1])
        if reference is None or spoken is None:
            continue
        counts["parsed"] += 1
        for name in ("kind", "colour", "shape"):
            counts[name] += getattr(spoken, name) == getattr(reference, name)
        if spoken.target is not None and reference.target is not None:
            counts["target_said"] += 1
            counts["target"] += spoken.target == reference.target
    return counts


def event_keys(episode: Episode | Mapping[str, Any]) -> list[EventKey]:
    """The full key (size and target always set) of each event of an episode, from its record: the ground truth a
    parsed narration is compared with."""
    if not isinstance(episode, Episode):
        episode = Episode.from_annotation(episode)
    specs = {spec.id: spec for spec in episode.objects}
    colours = {oid: state.colour for oid, state in episode.initial_state.items()}
    keys = []
    for event in episode.events:
        spec = specs[event.object]
        if "other" in event.args:
            target = f"{colours[event.args['other']]} {specs[event.args['other']].shape}"
        elif event.kind in ("enter", "leave"):
            target = event.args["edge"]
        else:
            target = event.args["place"] if event.kind in ("appear", "move") else event.args["colour"]
        keys.append(EventKey(event.kind, colours[event.object], spec.shape, spec.size, target))
        colours[event.object] = event.after.colour
    return keys


_FREE_WEIGHTS = {
    "enter": 2.0,
    "appear": 1.0,
    "leave": 1.0,
    "move": 3.0,
    "move_next_to": 2.0,
    "recolour": 2.0,
    "put_on": 1.0,
    "put_into": 1.5,
}


def _free_event(w: _World, rng: np.random.Generator, frozen: frozenset[str]) -> _Draft | None:
    kinds = list(_FREE_WEIGHTS)
    weights = np.array([_FREE_WEIGHTS[k] for k in kinds])
    for i in rng.choice(len(kinds), size=len(kinds), replace=False, p=weights / weights.sum()):
        kind = kinds[int(i)]
        if kind == "leave" and len(w.visible()) < 3:
            continue
        for _ in range(3):
            if (draft := make_event_draft(w, rng, kind, frozen=frozen)) is not None:
                return draft
    return None


# ---------------------------------------------------------------------------------------------------- tasks
_Plan = tuple[str, list[tuple[str, list[_Draft]]]]  # goal, [(step text, drafts)]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _plan_sort(w: _World, rng: np.random.Generator, objs: list[str]) -> _Plan | None:
    colours = list(dict.fromkeys(w.state[o].colour for o in objs))
    if len(colours) != 2 or not all(w.movable(o) for o in objs):
        return None
    sides = list(_pick(rng, [("left", "right"), ("top", "bottom")]))
    sides = _shuffled(rng, sides)
    groups = [[o for o in objs if w.state[o].colour == colour] for colour in colours]
    names = [f"the {c} shapes" if len(group) > 1 else w.describe(group[0]) for c, group in zip(colours, groups)]
    goal = _pick(rng, ["sort the shapes by colour: {0} {1} and {2} {3}", "put {0} {1} and {2} {3}"])
    goal = goal.format(names[0], _SIDE_AT[sides[0]], names[1], _SIDE_AT[sides[1]])
    steps = []
    for name, group, side in zip(names, groups, sides):
        drafts = []
        for oid in group:
            if w.place(oid) in _SIDES[side]:
                continue
            for cell in _shuffled(rng, _SIDES[side]):
                if (draft := _ev_move(w, rng, obj=oid, place=cell)) is not None:
                    break
            else:
                return None
            w.apply(draft)
            drafts.append(draft)
        if drafts:
            steps.append((f"move {name} to the {side}", drafts))
    return (goal, steps) if steps else None


def _plan_stack(w: _World, rng: np.random.Generator, objs: list[str]) -> _Plan | None:
    blocks = [o for o in objs if w.specs[o].shape == "square"]
    if len(blocks) < 2 or not all(w.movable(o) and w.state[o].on is None and w.state[o].inside is None for o in blocks):
        return None
    blocks = sorted(_shuffled(rng, blocks), key=lambda o: w.specs[o].size != "large")
    goal = _pick(rng, ["stack the blocks", "build a tower with the blocks", "stack the squares into a tower"])
    steps = []
    if w.state[blocks[0]].pos[1] < 0.5:
        for cell in _shuffled(rng, _SIDES["bottom"]):
            if (draft := _ev_move(w, rng, obj=blocks[0], place=cell)) is not None:
                break
        else:
            return None
        w.apply(draft)
        steps.append((f"move {w.describe(blocks[0])} to the bottom", [draft]))
    for below, above in zip(blocks, blocks[1:]):
        if (draft := _ev_put_on(w, rng, obj=above, target=below)) is None:
            return None
        w.apply(draft)
        steps.append((f"put {w.describe(above)} on {w.describe(below)}", [draft]))
    return goal, steps


def _plan_fill(w: _World, rng: np.random.Generator, objs: list[str]) -> _Plan | None:
    boxes = [o for o in objs if w.specs[o].shape in CONTAINER_SHAPES]
    items = [o for o in objs if w.specs[o].shape in SOLID_SHAPES]
    if len(boxes) != 1 or not items:
        return None
    box = boxes[0]
    goal = _pick(rng, ["put {items} into {box}", "tidy {items} into {box}"])
    goal = goal.format(items=_join([w.describe(o) for o in items]), box=w.describe(box))
    steps = []
    for oid in items:
        if (draft := _ev_put_into(w, rng, obj=oid, target=box)) is None:
            return None
        w.apply(draft)
        steps.append((f"put {w.describe(oid)} into {w.describe(box)}", [draft]))
    return goal, steps


def _plan_paint(w: _World, rng: np.random.Generator, objs: list[str]) -> _Plan | None:
    for colour in _shuffled(rng, PALETTE):
        todo = [o for o in objs if w.state[o].colour != colour]
        if len(todo) >= 2 and not any(w.taken(colour, w.specs[o].shape, exclude=o) for o in todo):
            break
    else:
        return None
    goal = _pick(rng, ["paint {items} {colour}", "make {items} {colour}"])
    goal = goal.format(items=_join([w.describe(o) for o in todo]), colour=colour)
    steps = []
    for oid in todo:
        draft = _ev_recolour(w, rng, obj=oid, place=colour)
        if draft is None:
            return None
        steps.append((f"paint {w.describe(oid)} {colour}", [draft]))
        w.apply(draft)
    return goal, steps


def _plan_clear(w: _World, rng: np.random.Generator, objs: list[str]) -> _Plan | None:
    goal = _pick(rng, ["clear the table", "clear everything off the table", "tidy everything away"])
    steps = []
    while leavable := [o for o in w.visible() if w.movable(o)]:
        oid = _pick(rng, leavable)
        what = w.describe(oid)
        draft = _ev_leave(w, rng, obj=oid)
        w.apply(draft)
        steps.append((_pick(rng, ["take away {}", "remove {}"]).format(what), [draft]))
    return (goal, steps) if 2 <= len(steps) <= 6 else None


TASK_KINDS: dict[str, Callable[[_World, np.random.Generator, list[str]], _Plan | None]] = {
    "sort_by_colour": _plan_sort,
    "stack_blocks": _plan_stack,
    "fill_container": _plan_fill,
    "paint": _plan_paint,
    "clear_table": _plan_clear,
}
"""Goal-directed task planners by name: each turns the world into (goal, ordered steps of events) or None."""


# ---------------------------------------------------------------------------------------------------- scenes
def _scene(
    rng: np.random.Generator, task: str | None, max_objects: int
) -> tuple[list[tuple[str, str, str]], int, set[str]]:
    """Objects as (shape, size, colour): the task's objects first (their count is returned), then distractors;
    and the colours distractors must avoid. (colour, shape) pairs are unique, so "the red circle" names one object."""
    colours = list(PALETTE)
    used: set[tuple[str, str]] = set()
    objects: list[tuple[str, str, str]] = []
    avoid_colours: set[str] = set()
    avoid_shapes: set[str] = set()

    def add(shape: str, size: str, colour: str) -> None:
        used.add((colour, shape))
        objects.append((shape, "large" if shape in CONTAINER_SHAPES else size, colour))

    def size() -> str:
        return _pick(rng, SIZES)

    if task == "sort_by_colour":
        pair = _shuffled(rng, colours)[:2]
        counts = (2, int(rng.integers(1, 3)) if max_objects >= 4 else 1)
        for colour, count in zip(pair, counts):
            for shape in _shuffled(rng, SOLID_SHAPES)[:count]:
                add(shape, size(), colour)
        avoid_colours = set(pair)
    elif task == "stack_blocks":
        for i, colour in enumerate(_shuffled(rng, colours)[: int(rng.integers(2, 4))]):
            add("square", "large" if i == 0 else size(), colour)
        avoid_shapes = {"square"}
    elif task == "fill_container":
        add(_pick(rng, CONTAINER_SHAPES), "large", _pick(rng, colours))
        for _ in range(int(rng.integers(1, _CAPACITY + 1))):
            while (pair := (_pick(rng, colours), _pick(rng, SOLID_SHAPES))) in used:
                pass
            add(pair[1], "small", pair[0])
    elif task == "paint":
        for shape in _shuffled(rng, SOLID_SHAPES)[: int(rng.integers(2, 4))]:
            add(shape, size(), _pick(rng, colours))
    if len(objects) > max_objects:  # the task needs more objects than allowed: free play
        return _scene(rng, None, max_objects)
    num_task = len(objects)
    total = max(num_task, 2) + int(rng.integers(0, 3)) if task else int(rng.integers(2, 5))
    shapes = [s for s in SHAPES if s not in avoid_shapes]
    shape_weights = np.array([1.0 if s in SOLID_SHAPES else 0.5 for s in shapes])
    allowed = [c for c in colours if c not in avoid_colours]
    while len(objects) < min(total, max_objects):
        shape = shapes[int(rng.choice(len(shapes), p=shape_weights / shape_weights.sum()))]
        colour = _pick(rng, allowed)
        if (colour, shape) not in used:
            add(shape, size(), colour)
    return objects, num_task, avoid_colours


# ---------------------------------------------------------------------------------------------------- episodes
class _Clock:
    """Lays events end to end: each starts after an idle gap and lasts an event duration (times in 0.01 s)."""

    def __init__(self, rng: np.random.Generator, config: WorldConfig):
        self.rng, self.config, self.t = rng, config, 0.0

    def slot(self, after: float | None = None) -> tuple[float, float]:
        start = round((self.t if after is None else after) + self.rng.uniform(*self.config.idle_gap), 2)
        end = round(start + max(0.1, self.rng.uniform(*self.config.event_duration)), 2)
        grid = self.config.time_grid
        if grid:
            start = round(math.ceil(start / grid - 1e-6) * grid, 2)
            end = round(max(start + grid, math.ceil(end / grid - 1e-6) * grid), 2)
        return start, end


def _timed(draft: _Draft, start: float, end: float, rng: np.random.Generator) -> Event:
    present, past, ongoing = _pick(rng, TEMPLATES[draft.kind])
    return Event(
        draft.kind,
        draft.object,
        start,
        end,
        draft.args,
        dataclasses.replace(draft.after),
        present.format(**draft.fields),
        past.format(**draft.fields),
        ongoing.format(**draft.fields),
    )


def _background(rng: np.random.Generator) -> Background:
    bases = [
        (128, 128, 128),
        (162, 150, 128),
        (104, 114, 130),
        (118, 130, 108),
        (150, 124, 108),
        (96, 100, 106),
        (172, 166, 158),
        (132, 118, 140),
    ]
    base = np.array(_pick(rng, bases)) + rng.integers(-10, 11, size=3)
    other = base + rng.choice([-1, 1]) * rng.integers(18, 36) + rng.integers(-8, 9, size=3)
    kind = _pick(rng, ["noise", "stripes", "checker"])
    params: dict[str, Any] = {"texture_seed": int(rng.integers(2**31)), "angle": _r4(rng.uniform(0, 180))}
    if kind == "noise":
        params["grid"] = int(rng.integers(4, 13))
    elif kind == "stripes":
        params["period"], params["sharpness"] = _r4(rng.uniform(0.06, 0.25)), _r4(rng.uniform(1.0, 4.0))
    else:
        params["cell"] = _r4(rng.uniform(0.06, 0.2))
    colours = [[int(v) for v in np.clip(c, 30, 225)] for c in (base, other)]
    return Background(kind, colours, params)


def _check_seed(seed: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def generate_episode(seed: int, config: WorldConfig | None = None) -> Episode:
    """Simulate one episode (pure data, no pixels). The same seed and config always give the same episode."""
    _check_seed(seed)
    config = config or WorldConfig()
    rng = np.random.default_rng(int(seed))
    target = float(rng.uniform(config.min_duration, config.max_duration))
    task_kind = _pick(rng, list(TASK_KINDS)) if rng.random() < config.task_prob else None
    scene, num_task, avoid_colours = _scene(rng, task_kind, config.max_objects)
    specs, state = {}, {}
    for i, (shape, size, colour) in enumerate(scene):
        angle = _r4(rng.uniform(-25, 25) if shape in ("square", "box") else rng.uniform(0, 360))
        specs[f"o{i}"] = ObjectSpec(f"o{i}", shape, size, 0.0 if shape in ("circle", "ring") else angle)
        state[f"o{i}"] = ObjectState(False, colour)
    world = _World(specs, state)
    world.avoid_colours = avoid_colours
    reserved = list(specs)[:num_task]
    # Initial layout: most objects are on the table; at most two task objects come in during the prelude.
    late = set(_shuffled(rng, reserved)[: int(rng.integers(0, 3))])
    for oid in _shuffled(rng, specs):
        on_table = oid not in late and (oid in reserved or rng.random() < 0.6)
        if on_table and (pos := world.spot(rng, world.radius(oid))) is not None:
            world.state[oid] = ObjectState(True, world.state[oid].colour, pos)
    if not world.visible():
        first = next(iter(specs))
        world.state[first] = ObjectState(True, world.state[first].colour, (0.5, 0.5))
    initial = {oid: dataclasses.replace(s) for oid, s in world.state.items()}

    clock, events = _Clock(rng, config), []
    limit = config.max_duration - config.idle_gap[0]

    def commit(draft: _Draft | None, end_limit: float) -> bool:
        if draft is None:
            return False
        start, end = clock.slot()
        if end > end_limit:
            return False
        world.apply(draft)
        events.append(_timed(draft, start, end, rng))
        clock.t = end
        return True

    # Prelude: missing task objects come in, mixed with a few free events that leave the task's objects alone.
    frozen = frozenset(reserved)
    prelude = [oid for oid in reserved if not world.state[oid].visible] + [None] * int(rng.integers(0, 3))
    for oid in _shuffled(rng, prelude):
        if oid is None:
            if clock.t < 0.3 * target:
                commit(_free_event(world, rng, frozen), 0.5 * target)
        elif not commit(make_event_draft(world, rng, _pick(rng, ["enter", "appear"]), obj=oid), limit):
            task_kind = None
    # The task, planned on a copy of the world; steps that would end past the limit are dropped.
    task = Task()
    plan = TASK_KINDS[task_kind](world.copy(), rng, reserved) if task_kind else None
    if plan is not None:
        goal, planned = plan
        t = clock.t
        kept: list[tuple[str, list[Event]]] = []
        for text, drafts in planned:
            timed = []
            for draft in drafts:
                start, end = clock.slot(after=t)
                timed.append(_timed(draft, start, end, rng))
                t = end
            if t > limit:
                break
            kept.append((text, timed))
        if kept:
            task = Task(goal, [Step(timed[0].start, timed[-1].end, text) for text, timed in kept])
            for _, timed in kept:
                for event in timed:
                    world.state[event.object] = dataclasses.replace(event.after)
                    events.append(event)
            clock.t = events[-1].end
    # Epilogue: free events until the target duration.
    world.avoid_colours = set()
    target = min(max(target, clock.t + config.idle_gap[0]), config.max_duration)
    while commit(_free_event(world, rng, frozenset()), target - config.idle_gap[0]):
        pass
    duration = math.ceil(max(target, clock.t + config.idle_gap[0]) * 10 - 1e-6) / 10
    return Episode(int(seed), duration, _background(rng), list(specs.values()), initial, events, task)


# ---------------------------------------------------------------------------------------------------- rendering
_SS = 2  # supersampling of the object layer


def _smoothstep(s: float) -> float:
    s = min(1.0, max(0.0, s))
    return s * s * (3 - 2 * s)


def _lerp(a: Iterable[float], b: Iterable[float], s: float) -> tuple[float, ...]:
    return tuple(x + (y - x) * s for x, y in zip(a, b))


def _texture(background: Background, width: int, height: int, unit: float) -> np.ndarray:
    """The table texture as float32 (H, W, 3)."""
    p = background.params
    rng = np.random.default_rng(p["texture_seed"])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = math.radians(p.get("angle", 0.0))
    u = xs * math.cos(angle) + ys * math.sin(angle)
    v = -xs * math.sin(angle) + ys * math.cos(angle)
    if background.kind == "noise":
        grid = int(p["grid"])
        low = Image.fromarray(rng.random((grid, grid)).astype(np.float32))
        mix = np.asarray(low.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    elif background.kind == "stripes":
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * u / (p["period"] * unit))
        mix = np.clip((mix - 0.5) * p["sharpness"] + 0.5, 0, 1)
    elif background.kind == "checker":
        cell = p["cell"] * unit
        mix = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown background kind {background.kind!r}; valid kinds: noise, stripes, checker")
    c0, c1 = (np.array(c, dtype=np.float32) for c in background.colours)
    image = c0 + (c1 - c0) * np.clip(mix, 0, 1)[..., None]
    image += rng.normal(0, 3.0, size=(height, width, 1)).astype(np.float32)  # fixed grain of the table
    return image


def _polygon(cx: float, cy: float, radii: list[float], angle: float, offset: float = -90.0) -> list[tuple]:
    n = len(radii)
    return [
        (
            cx + r * math.cos(math.radians(offset + angle + 360 * i / n)),
            cy + r * math.sin(math.radians(offset + angle + 360 * i / n)),
        )
        for i, r in enumerate(radii)
    ]


def _draw_object(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    rgb: tuple[int, int, int],
    shadow: bool,
) -> None:
    """Draw one shape of radius `r` (pixels) centred at (cx, cy), or its shadow."""
    if shadow:
        fill, line = (0, 0, 0, 70), (0, 0, 0, 70)
    else:
        fill = (*rgb, 255)
        line = (*(int(c * 0.55) for c in rgb), 255) if sum(rgb) > 120 else (90, 90, 90, 255)
    edge = max(1, round(r * 0.06))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=line, width=edge)
    elif shape == "ring":
        thick = max(2, round(r * 0.26))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=thick)
        if not shadow:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=line, width=edge)
            inner = r - thick
            if inner > 0:  # a ring just appearing in a small frame is all rim
                draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), outline=line, width=edge)
    elif shape in ("square", "box"):
        corners = _polygon(cx, cy, [r * 1.25] * 4, angle, offset=45.0)
        if shape == "square":
            draw.polygon(corners, fill=fill, outline=line, width=edge)
        else:
            thick = max(2, round(r * 0.22))
            if not shadow:
                draw.polygon(corners, fill=(*(int(c * 0.45) for c in rgb), 110))
            draw.polygon(corners, outline=fill, width=thick)
            if not shadow:
                draw.polygon(corners, outline=line, width=edge)
                draw.polygon(
                    _polygon(cx, cy, [r * 1.25 - thick * 1.41] * 4, angle, offset=45.0), outline=line, width=edge
                )
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, [r * 1.3] * 3, angle), fill=fill, outline=line, width=edge)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r * 1.3, r * 0.58] * 5, angle), fill=fill, outline=line, width=edge)
    else:
        raise ValueError(f"unknown shape {shape!r}; valid shapes: {', '.join(SHAPES)}")


class _Renderer:
    """Draws frames of one episode: a fixed textured canvas larger than the frame, objects composited on it, then a
    jittered camera crop, lighting and noise. Per-episode randomness comes from the episode seed only."""

    def __init__(self, episode: Episode, config: WorldConfig):
        self.episode, self.config = episode, config
        self.width, self.height = config.width, config.height
        self.unit = min(self.width, self.height)
        self.margin = math.ceil(max(self.width, self.height) * config.camera_jitter * 1.3) + 2
        self.canvas_size = (self.width + 2 * self.margin, self.height + 2 * self.margin)
        self.specs = {spec.id: spec for spec in episode.objects}
        self.states = [{oid: dataclasses.replace(s) for oid, s in episode.initial_state.items()}]
        for event in episode.events:
            self.states.append({**self.states[-1], event.object: event.after})
        self.starts = [event.start for event in episode.events]
        rng = np.random.default_rng([episode.seed, 1])
        # (frequencies in Hz, phases) of the camera's x, x-shake, y, y-shake, zoom and of the light's terms
        self.camera = rng.uniform([0.04, 0.25, 0.04, 0.25, 0.02], [0.2, 0.7, 0.2, 0.7, 0.12]), rng.uniform(0, 6.3, 5)
        self.light = rng.uniform([0.02, 0.1, 0.02, 0.01], [0.08, 0.25, 0.1, 0.05]), rng.uniform(0, 6.3, 4)
        ys, xs = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        self.xs, self.ys = xs / self.width * 2 - 1, ys / self.height * 2 - 1

    @functools.cached_property
    def background(self) -> Image.Image:
        """The textured canvas, drawn on first use: `drawn` (the ground truth of a frame) never needs it."""
        texture = _texture(self.episode.background, *self.canvas_size, self.unit)
        return Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8), "RGB").convert("RGBA")

    def _objects(self, t: float) -> list[tuple[int, str, tuple[float, float], tuple[int, int, int], float]]:
        """(depth, id, pos, rgb, scale) of every object drawn at time t, in drawing order."""
        k = bisect_right(self.starts, t) - 1
        active = self.episode.events[k] if k >= 0 and t < self.episode.events[k].end else None
        state = self.states[k if active else k + 1]
        out = []
        for oid, s in state.items():
            depth, parent = 0, s.on or s.inside
            while parent is not None and depth < 10:
                depth, parent = depth + 1, state[parent].on or state[parent].inside
            if active is not None and oid == active.object:
                out.append((99, oid, *self._interpolate(active, s, t)))
            elif s.visible:
                out.append((depth, oid, s.pos, PALETTE[s.colour], s.scale))
        return sorted(out, key=lambda item: item[:2])

    @staticmethod
    def _interpolate(event: Event, before: ObjectState, t: float) -> tuple[tuple[float, float], tuple, float]:
        s = _smoothstep((t - event.start) / max(event.end - event.start, 1e-6))
        after = event.after
        if event.kind == "appear":
            return after.pos, PALETTE[after.colour], max(0.05, after.scale * s)
        if event.kind == "recolour":
            rgb = tuple(int(round(c)) for c in _lerp(PALETTE[before.colour], PALETTE[after.colour], s))
            return before.pos, rgb, before.scale
        start = tuple(event.args["from"]) if event.kind == "enter" else before.pos
        x, y = _lerp(start, after.pos, s)
        scale = (1.0 if event.kind == "enter" else before.scale) * (1 - s) + after.scale * s
        if event.kind in ("put_on", "put_into", "move_next_to"):  # lifted while carried
            y -= 0.03 * math.sin(math.pi * s)
            scale *= 1 + 0.1 * math.sin(math.pi * s)
        return (x, y), PALETTE[before.colour], scale

    def _compose(self, t: float) -> Image.Image:
        """The whole canvas (background and objects) at time t."""
        width, height = self.canvas_size
        layer = Image.new("RGBA", (width * _SS, height * _SS), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        px = self.unit * _SS
        shadow = (0.012 * px, 0.018 * px)
        for _, oid, (x, y), rgb, scale in self._objects(t):
            spec = self.specs[oid]
            r = object_radius(spec.shape, spec.size) * scale * px
            cx, cy = (self.margin + x * self.width) * _SS, (self.margin + y * self.height) * _SS
            _draw_object(draw, spec.shape, cx + shadow[0], cy + shadow[1], r, spec.angle, rgb, shadow=True)
            _draw_object(draw, spec.shape, cx, cy, r, spec.angle, rgb, shadow=False)
        layer = layer.resize((width, height), Image.Resampling.BOX)
        return Image.alpha_composite(self.background, layer)

    def _moving(self, t0: float, t1: float) -> bool:
        return any(e.start < t1 and e.end > t0 and e.kind != "recolour" for e in self.episode.events)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as uint8 (H, W, 3)."""
        config, t = self.config, index / self.config.fps
        exposure = 0.6 / config.fps
        times = (
            [t - exposure * j / 2 for j in range(3)] if config.motion_blur and self._moving(t - exposure, t) else [t]
        )
        # camera: smooth wander plus a small per-frame shake, and a zoom-in that never leaves the canvas
        freq, phase = self.camera
        rng = np.random.default_rng([self.episode.seed, 2, index])
        amp = config.camera_jitter * max(self.width, self.height)
        dx = amp * (
            0.6 * math.sin(2 * math.pi * freq[0] * t + phase[0])
            + 0.3 * math.sin(2 * math.pi * freq[1] * t + phase[1])
            + 0.1 * rng.uniform(-1, 1)
        )
        dy = amp * (
            0.6 * math.sin(2 * math.pi * freq[2] * t + phase[2])
            + 0.3 * math.sin(2 * math.pi * freq[3] * t + phase[3])
            + 0.1 * rng.uniform(-1, 1)
        )
        zoom = 1 + config.zoom_jitter * (0.5 + 0.5 * math.sin(2 * math.pi * freq[4] * t + phase[4]))
        cx, cy = self.margin + self.width / 2 + dx, self.margin + self.height / 2 + dy
        half_w, half_h = self.width / 2 / zoom, self.height / 2 / zoom
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        image = np.zeros((self.height, self.width, 3), dtype=np.float32)
        for sub_t in times:
            view = (
                self._compose(sub_t)
                .convert("RGB")
                .resize((self.width, self.height), Image.Resampling.BILINEAR, box=box)
            )
            image += np.asarray(view, dtype=np.float32)
        image /= len(times)
        # lighting: global gain, a colour tint and a slowly turning light direction
        lf, lp = self.light
        drift = config.lighting_drift
        gain = 1 + drift * (
            0.7 * math.sin(2 * math.pi * lf[0] * t + lp[0]) + 0.3 * math.sin(2 * math.pi * lf[1] * t + lp[1])
        )
        tint = np.array(
            [1 + 0.25 * drift * math.sin(2 * math.pi * lf[2] * t + lp[2] + c * 2.1) for c in range(3)], dtype=np.float32
        )
        theta = lp[3] + 2 * math.pi * lf[3] * t
        shading = 1 + 0.5 * drift * (math.cos(theta) * self.xs + math.sin(theta) * self.ys)
        image *= (gain * shading)[..., None] * tint
        if config.noise_std > 0:
            image += rng.standard_normal(image.shape, dtype=np.float32) * config.noise_std
        return np.clip(image + 0.5, 0, 255).astype(np.uint8)

    def drawn(self, t: float) -> list[DrawnObject]:
        """The objects frame time `t` shows, in drawing order: the object of an event in progress at its
        interpolated centre and scale (carried: on / inside nothing), with the nearer palette colour of a fade."""
        k = bisect_right(self.starts, t) - 1
        active = self.episode.events[k] if k >= 0 and t < self.episode.events[k].end else None
        carried = active.object if active is not None and active.kind != "recolour" else None
        state = self.states[k if active else k + 1]
        items = self._objects(t)
        centres = {oid: pos for _, oid, pos, _, _ in items}
        out = []
        for _, oid, (x, y), rgb, scale in items:
            on, inside = (None, None) if oid == carried else (state[oid].on, state[oid].inside)
            root = oid
            for _ in range(_MAX_STACK + 2):  # up the stack / out of the container to what stands on the table
                parent = None if root == carried else state[root].on or state[root].inside
                if parent is None or parent not in centres:
                    break
                root = parent
            colour = min(PALETTE, key=lambda name: sum((a - b) ** 2 for a, b in zip(PALETTE[name], rgb)))
            spec = self.specs[oid]
            out.append(
                DrawnObject(
                    oid,
                    spec.shape,
                    spec.size,
                    colour,
                    (float(x), float(y)),
                    place_of(*centres[root]),
                    float(scale),
                    on,
                    inside,
                    active is not None and oid == active.object,
                )
            )
        return out


@dataclass(frozen=True)
class DrawnObject:
    """An object as one rendered frame shows it (see `render_frames`)."""

    id: str
    shape: str
    size: str
    colour: str
    """The palette colour nearest to the drawn one (during a colour change: the nearer of the two)."""
    xy: tuple[float, float]
    """Drawn centre in normalised table coordinates; outside [0, 1] while entering or leaving."""
    place: str
    """Named place of the centre of the stack or container the object belongs to (its own while carried)."""
    scale: float
    """Drawn size relative to the object's own (below 1 while appearing or inside a container)."""
    on: str | None
    inside: str | None
    active: bool
    """The object of the event in progress (moving, appearing or changing colour)."""


def render_frames(
    episode: Episode, indices: Iterable[int], config: WorldConfig | None = None
) -> Iterator[tuple[np.ndarray, list[DrawnObject]]]:
    """Frames `indices` of an episode, each with the objects it shows: (uint8 H x W x 3 identical to
    `render_episode`'s, `DrawnObject`s at the frame's time). One renderer serves all, so it is cheaper per frame
    than `render_frame`."""
    config = config or WorldConfig()
    renderer = _Renderer(episode, config)
    for index in indices:
        yield renderer.frame(index), renderer.drawn(index / config.fps)


def drawn_objects(
    episode: Episode, indices: Iterable[int], config: WorldConfig | None = None
) -> Iterator[list[DrawnObject]]:
    """The objects frames `indices` of an episode show (those of `render_frames`), without drawing the frames: the
    ground truth of frames already rendered into a video."""
    config = config or WorldConfig()
    renderer = _Renderer(episode, config)
    for index in indices:
        yield renderer.drawn(index / config.fps)


def render_frame(episode: Episode, index: int, config: WorldConfig | None = None) -> np.ndarray:
    """One frame (uint8 H x W x 3) of an episode, identical to the one `render_episode` encodes."""
    return _Renderer(episode, config or WorldConfig()).frame(index)


def render_episode(episode: Episode, path: str | os.PathLike, config: WorldConfig | None = None) -> Path:
    """Render an episode frame by frame into an H.264 (yuv420p) mp4 at `config.fps`, written atomically."""
    import av

    config = config or WorldConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    renderer = _Renderer(episode, config)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            container.metadata["comment"] = VIDEO_COMMENT
            stream = container.add_stream(
                "libx264", rate=config.fps, options={"crf": str(config.crf), "preset": "veryfast"}
            )
            stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
            for index in range(num_frames(episode.duration, config.fps)):
                frame = av.VideoFrame.from_ndarray(renderer.frame(index), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---------------------------------------------------------------------------------------------------- datasets
@dataclass
class WorldWriteResult:
    """What `write_world` did."""

    ids: list[str]
    written: list[str]
    skipped: list[str]


def episode_seed(seed: int, index: int) -> int:
    """The seed of video `index` of a world written with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def write_world(
    out_dir: str | os.PathLike,
    num_videos: int,
    seed: int = 0,
    config: WorldConfig | None = None,
    progress: bool = True,
    workers: int = 1,
) -> WorldWriteResult:
    """Write `num_videos` episodes under `out_dir`, resumably.

    Layout: `index.json` = {"format", "seed", "config", "videos": [id, ...]}; per video `videos/{id}.mp4` and
    `annotations/{id}.json` (the episode's annotation plus "id" and "video": {"path", "fps", "width", "height",
    "num_frames"}). Both files are written to a temporary name and renamed; the annotation is written last, so a
    video counts as done when its annotation exists, and done videos are skipped. Re-running with a larger
    `num_videos` extends the world; a different seed or config in the same directory is refused. `workers` > 1
    renders videos in that many processes.
    """
    _check_seed(seed)
    if not isinstance(num_videos, int) or num_videos < 0:
        raise ValueError(f"num_videos must be an int >= 0, got {num_videos!r}")
    config = config or WorldConfig()
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    meta = {"format": FORMAT, "seed": int(seed), "config": config.to_dict()}
    index_path = out / "index.json"
    ids = [f"{i:06d}" for i in range(num_videos)]
    if index_path.exists():
        old = json.loads(index_path.read_text())
        if {k: old.get(k) for k in meta} != meta:
            raise ValueError(
                f"{out} holds a world written with another format, seed or config (format "
                f"{old.get('format')!r}, seed {old.get('seed')!r}); use another directory"
            )
        ids = old["videos"] if len(old["videos"]) > len(ids) else ids
    write_json_atomic(index_path, {**meta, "videos": ids})
    from tqdm import tqdm

    result = WorldWriteResult(ids[:num_videos], [], [])
    todo = []
    for i in range(num_videos):
        vid = ids[i]
        if (out / "annotations" / f"{vid}.json").exists() and (out / "videos" / f"{vid}.mp4").exists():
            result.skipped.append(vid)
        else:
            todo.append((str(out), i, vid, int(seed), config))
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            done = pool.imap_unordered(_write_video, todo)
            result.written += list(
                tqdm(done, total=len(todo), desc="synthetic videos", unit="video", disable=not progress)
            )
    else:
        result.written += [
            _write_video(job) for job in tqdm(todo, desc="synthetic videos", unit="video", disable=not progress)
        ]
    result.written.sort()
    return result


def _write_video(job: tuple[str, int, str, int, WorldConfig]) -> str:
    """Render one video and then its annotation (the annotation marks it done)."""
    out_dir, i, vid, seed, config = job
    out = Path(out_dir)
    video_path, annotation_path = out / "videos" / f"{vid}.mp4", out / "annotations" / f"{vid}.json"
    episode = generate_episode(episode_seed(seed, i), config)
    render_episode(episode, video_path, config)
    annotation = episode.to_annotation()
    video = {
        "path": f"videos/{vid}.mp4",
        "fps": config.fps,
        "width": config.width,
        "height": config.height,
        "num_frames": num_frames(episode.duration, config.fps),
    }
    write_json_atomic(annotation_path, {"format": FORMAT, "id": vid, "video": video, **annotation})
    return vid


def load_world(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The annotations of the finished videos of a world written by `write_world`, in index order."""
    out = Path(out_dir)
    index = json.loads((out / "index.json").read_text())
    paths = [out / "annotations" / f"{vid}.json" for vid in index["videos"]]
    return [json.loads(p.read_text()) for p in paths if p.exists() and (out / "videos" / f"{p.stem}.mp4").exists()]
