"""Reading world narrations back into events: `parse_narration` turns a sentence into an `EventKey` with the world
generator's own templates, `same_event` matches two sentences by the event they state, `event_field_counts` says which
part of a missed narration was wrong, and `event_keys` gives an annotation's ground truth. Only the world's language
(`data/world_language`) is needed, not the generator."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..data.world_language import EDGES, PALETTE, PLACE_AT, PLACE_TO, SHAPES, SIZES, TEMPLATES


@dataclass(frozen=True)
class EventKey:
    """The canonical content of a narration: which event happened to which object. Synonyms and tenses of the
    templates map to one key; what a sentence may leave unsaid is None."""

    kind: str
    """An event kind: a `TEMPLATES` key (the generator's `EVENT_KINDS`)."""
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


def event_keys(annotation: Mapping[str, Any]) -> list[EventKey]:
    """The full key (size and target always set) of each event of an episode, from its annotation (or an `Episode`,
    read through its annotation): the ground truth a parsed narration is compared with."""
    if hasattr(annotation, "to_annotation"):
        annotation = annotation.to_annotation()
    specs = {spec["id"]: spec for spec in annotation["objects"]}
    colours = {oid: state["colour"] for oid, state in annotation["initial_state"].items()}
    keys = []
    for event in annotation["events"]:
        kind, obj, args = event["kind"], event["object"], event["args"]
        spec = specs[obj]
        if "other" in args:
            target = f"{colours[args['other']]} {specs[args['other']]['shape']}"
        elif kind in ("enter", "leave"):
            target = args["edge"]
        else:
            target = args["place"] if kind in ("appear", "move") else args["colour"]
        keys.append(EventKey(kind, colours[obj], spec["shape"], spec["size"], target))
        colours[obj] = event["after"]["colour"]
    return keys
