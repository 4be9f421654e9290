"""`generate_episode`: one episode from a seed: the scene, a prelude, the task's steps and free events, each
timed and narrated."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..world_language import TEMPLATES
from .config import WorldConfig
from .episode import Background, Episode, Event, ObjectSpec, ObjectState, Step, Task
from .simulation import _Draft, _free_event, _pick, _r4, _shuffled, _World, make_event_draft
from .tasks import TASK_KINDS, _scene


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
