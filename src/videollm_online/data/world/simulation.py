"""The simulated table (`_World`) and the event kinds that change it: each builds an untimed event (`_Draft`) with
the fields its narration templates need, or None when the world does not allow it. Names with an underscore are
the world package's own, shared with `tasks` and `generate`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..world_language import (
    CONTAINER_SHAPES,
    EDGES,
    PALETTE,
    PLACE_AT,
    PLACE_TO,
    PLACES,
    SIZE_SAID,
    SOLID_SHAPES,
    describe_object,
    place_of,
)
from .episode import ObjectSpec, ObjectState
from .geometry import BORDER, CAPACITY, CONTAINED_SCALE, MAX_STACK, SLOTS, STACK_OFFSET, object_radius


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
        return describe_object(article, spec.size if with_size else "", self.state[oid].colour, spec.shape)

    def taken(self, colour: str, shape: str, exclude: str | None = None) -> bool:
        return any(o != exclude and s.colour == colour and self.specs[o].shape == shape for o, s in self.state.items())

    def free(self, pos: tuple[float, float], r: float, ignore: Iterable[str] = ()) -> bool:
        x, y = pos
        if not (r + BORDER <= x <= 1 - r - BORDER and r + BORDER <= y <= 1 - r - BORDER):
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
        and w.stack_height(b) < MAX_STACK
    ]
    base = _pick(rng, bases)
    if base is None:
        return None
    bx, by = w.state[base].pos
    pos = (bx, _r4(by - STACK_OFFSET * w.radius(base)))
    if pos[1] - w.radius(obj, 1.0) < BORDER:
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
        and sum(w.state[o].inside == b for o in w.visible() if o != obj) < CAPACITY
    ]
    box = _pick(rng, boxes)
    if box is None:
        return None
    bx, by = w.state[box].pos
    used = {w.state[o].pos for o in w.visible() if w.state[o].inside == box and o != obj}
    slots = [(_r4(bx + dx), _r4(by + dy)) for dx, dy in SLOTS]
    pos = next(p for p in slots if p not in used)
    after = ObjectState(True, w.state[obj].colour, pos, CONTAINED_SCALE, inside=box)
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


def make_event_draft(world: _World, rng: np.random.Generator, kind: str, **kwargs: Any) -> _Draft | None:
    """Build an untimed event of `kind` (see `EVENT_KINDS`), or None when the world does not allow it."""
    try:
        builder = EVENT_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}; valid kinds: {', '.join(EVENT_KINDS)}") from None
    return builder(world, rng, **kwargs)


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
