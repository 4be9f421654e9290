"""Sizes of the objects on the table and the rules of where they fit, in units of the frame's shorter side."""

from __future__ import annotations

from ..world_language import CONTAINER_SHAPES

_RADIUS = {"small": 0.05, "large": 0.085}  # in units of the frame's shorter side
_CONTAINER_RADIUS = 0.12
_CONTAINED_SCALE = 0.75  # objects in a container are drawn smaller so that two fit
_CAPACITY = 2
_SLOTS = ((-0.04, 0.0), (0.04, 0.0))
_STACK_OFFSET = 0.6  # an object on another sits this many base radii above the base's centre
_MAX_STACK = 3
_BORDER = 0.02


def object_radius(shape: str, size: str) -> float:
    """Drawn radius of an object at full scale, in units of the frame's shorter side."""
    return _CONTAINER_RADIUS if shape in CONTAINER_SHAPES else _RADIUS[size]
