"""The words and sentence templates of the synthetic world: objects (colours, shapes, sizes), named places and
the narration templates of each event kind. The generator (`data/world`) speaks this language and the scorer
(`eval/events`) reads it; it lives apart from both so that scoring does not load the generator."""

from __future__ import annotations

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


def place_of(x: float, y: float) -> str:
    """The named place (cell of the 3 x 3 grid) of a normalised position."""
    col = _COLS[min(2, max(0, int(x * 3)))]
    row = _ROWS[min(2, max(0, int(y * 3)))]
    return _cell_name(row, col)


def describe_object(article: str, size: str, colour: str, shape: str) -> str:
    """'the red circle', 'a small red circle', 'an orange star' ('a' becomes 'an' before a vowel)."""
    words = [w for w in (size, colour, shape) if w]
    if article == "a" and words[0][0] in "aeiou":
        article = "an"
    return " ".join([article, *words])


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
