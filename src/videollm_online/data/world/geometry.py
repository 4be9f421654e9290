"""Sizes of the objects on the table and the rules of where they fit, in units of the frame's shorter side."""

from __future__ import annotations

from ..world_language import CONTAINER_SHAPES

RADIUS = {"small": 0.05, "large": 0.085}  # in units of the frame's shorter side
CONTAINER_RADIUS = 0.12
CONTAINED_SCALE = 0.75  # objects in a container are drawn smaller so that two fit
CAPACITY = 2
SLOTS = ((-0.04, 0.0), (0.04, 0.0))
STACK_OFFSET = 0.6  # an object on another sits this many base radii above the base's centre
MAX_STACK = 3
BORDER = 0.02


def object_radius(shape: str, size: str) -> float:
    """Drawn radius of an object at full scale, in units of the frame's shorter side."""
    return CONTAINER_RADIUS if shape in CONTAINER_SHAPES else RADIUS[size]
