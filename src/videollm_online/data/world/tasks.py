"""Goal-directed tasks: the scene a task needs (its objects, then distractors) and the planners that turn the
world into a goal and its ordered steps of events."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..world_language import CONTAINER_SHAPES, PALETTE, SHAPES, SIZES, SOLID_SHAPES
from .geometry import CAPACITY
from .simulation import (
    _Draft,
    _ev_leave,
    _ev_move,
    _ev_put_into,
    _ev_put_on,
    _ev_recolour,
    _pick,
    _shuffled,
    _World,
)

_SIDES = {
    "left": ("top left", "left", "bottom left"),
    "right": ("top right", "right", "bottom right"),
    "top": ("top left", "top", "top right"),
    "bottom": ("bottom left", "bottom", "bottom right"),
}
_SIDE_AT = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


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
        for _ in range(int(rng.integers(1, CAPACITY + 1))):
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
