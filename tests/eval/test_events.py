"""Narration parsing: every sentence the world generator can write reads back as its event, synonyms and tenses
match each other, and different events do not."""

from __future__ import annotations

import string

import pytest

from videollm_online.data.world import WorldConfig, generate_episode
from videollm_online.data.world_language import PLACE_AT, PLACE_TO, TEMPLATES
from videollm_online.eval import event_match
from videollm_online.eval.events import EventKey, event_field_counts, event_keys, parse_narration, same_event

FIELDS = {
    "a_obj": "a small red circle",
    "obj": "the small red circle",
    "other": "the blue box",
    "edge": "left",
    "place_at": PLACE_AT["top right"],
    "place_to": PLACE_TO["top right"],
    "colour": "green",
}
TARGETS = {
    "enter": "left",
    "appear": "top right",
    "leave": "left",
    "move": "top right",
    "move_next_to": "blue box",
    "recolour": "green",
    "put_on": "blue box",
    "put_into": "blue box",
}


def consistent(parsed: EventKey | None, truth: EventKey) -> bool:
    """A sentence's key against the record's full key: what the sentence says must be the record's."""
    return (
        parsed is not None
        and (parsed.kind, parsed.colour, parsed.shape) == (truth.kind, truth.colour, truth.shape)
        and parsed.size in (None, truth.size)
        and (parsed.target == truth.target or (parsed.target is None and truth.kind == "leave"))
    )


def test_every_template_and_tense_parses_to_its_event():
    for kind, phrasings in TEMPLATES.items():
        for phrasing in phrasings:
            for form in phrasing:
                names = {name for _, name, _, _ in string.Formatter().parse(form) if name}
                key = parse_narration(form.format(**FIELDS))
                target = TARGETS[kind] if "edge" in names or kind != "leave" else None
                assert key == EventKey(kind, "red", "circle", "small", target), form


def test_every_generated_narration_parses_back_to_its_event_record():
    config, seen = WorldConfig(), set()
    for seed in range(400):
        episode = generate_episode(seed, config)
        for event, truth in zip(episode.events, event_keys(episode), strict=True):
            for tense, text in enumerate((event.text, event.text_past, event.text_ongoing)):
                assert consistent(parse_narration(text), truth), (seed, text, parse_narration(text), truth)
                seen.add((event.kind, text.split()[1] if tense != 2 else text.split()[3], tense))
            assert same_event(event.text, event.text_past) and same_event(event.text_ongoing, event.text)
    # every phrasing of every kind came up: within a kind the three phrasings start with different verbs
    verbs = {(kind, verb) for kind, verb, tense in seen if tense == 0}
    assert len(verbs) == sum(len(phrasings) for phrasings in TEMPLATES.values()), sorted(verbs)


def test_annotation_and_episode_give_the_same_keys():
    episode = generate_episode(3, WorldConfig())
    assert event_keys(episode.to_annotation()) == event_keys(episode)


@pytest.mark.parametrize(
    "said, reference",
    [
        ("You slide the red circle to the left.", "You move the red circle to the left."),
        ("You shift the small red circle to the left", "you move the red circle to the left."),
        ("You set a red star down in the centre.", "You put down a red star in the centre."),
        ("You drop the red star into the blue box.", "You placed the red star in the blue box."),
        ("You stack the red square on top of the green square.", "You put the red square on the green square."),
        ("You change the colour of the red circle to blue.", "You paint the red circle blue."),
        ("You take the red circle away.", "You slide the red circle off to the left."),
        ("You push an orange star in from the top.", "You bring an orange star in from the top."),
        ("You put the red circle beside the blue ring.", "You move the red circle next to the blue ring."),
    ],
)
def test_synonyms_match(said, reference):
    assert same_event(said, reference)


@pytest.mark.parametrize(
    "said, reference",
    [
        ("You move the red circle to the left.", "You move the blue circle to the left."),  # colour
        ("You move the red circle to the left.", "You move the red square to the left."),  # shape
        ("You move the small red circle to the left.", "You move the large red circle to the left."),  # size
        ("You move the red circle to the left.", "You move the red circle to the right."),  # place
        ("You move the red circle to the left.", "You move the red circle to the top left corner."),
        ("You move the red circle to the left.", "You slide the red circle off to the left."),  # move vs leave
        ("You place a red circle on the left.", "You move the red circle to the left."),  # appear vs move
        ("You put the red star on the blue square.", "You put the red star into the blue box."),  # on vs into
        ("You put the red star into the blue box.", "You put the red star into the blue ring."),  # other object
        ("You paint the red circle blue.", "You paint the red circle green."),  # new colour
        ("You bring a red circle in from the left.", "You bring a red circle in from the right."),  # edge
        ("You slide the red circle off to the left.", "You slide the red circle off to the right."),
        ("You move the red circle somewhere.", "You move the red circle to the left."),  # unparsable
    ],
)
def test_different_events_do_not_match(said, reference):
    assert not same_event(said, reference)


def test_what_is_not_a_narration_parses_to_none():
    for text in (
        "",
        "Hello there.",
        "You move the red circle.",
        "You move the red blob to the left.",
        "You paint the red circle purple and blue.",
        "You move the red circle to the left. Then more.",
    ):
        assert parse_narration(text) is None, text
    assert parse_narration("  YOU   move THE red circle TO the LEFT  ") == EventKey(
        "move", "red", "circle", None, "left"
    )
    assert same_event("Anything at all!", "anything at all")  # unparsable sentences fall back to equal text


def test_event_match_with_the_world_matcher_counts_synonyms():
    reference = [(2.0, "You move the red circle to the left."), (5.0, "You paint the blue star green.")]
    said = [
        (2.5, "You slide the red circle to the left."),
        (5.0, "You turn the blue star red."),
        (9.0, "You shift the red circle to the left."),
    ]
    exact = event_match(said, reference, window=1.0)
    world = event_match(said, reference, window=1.0, same=same_event)
    assert (exact.num_matched, world.num_matched) == (0, 1)
    assert (world.recall, world.precision) == (0.5, 1 / 3)


def test_event_field_counts_say_which_part_of_a_missed_narration_is_wrong():

    reference = [
        (2.0, "You move the red circle to the left."),  # nearest turn: right object, wrong kind
        (5.0, "You paint the blue star green."),  # nearest: right kind, wrong shape and target
        (8.0, "You bring an orange box in from the left."),  # nothing said within 1 s
        (11.0, "You take the white square away."),  # nearest turn does not parse
        (14.0, "You put the red square on the blue box."),
    ]  # right, said 1 s late (the window's edge)
    said = [
        (2.5, "You put the red circle beside the green star."),
        (1.0, "You move the red circle to the left."),
        (5.0, "You turn the blue circle red."),
        (6.5, "You move the white star to the top."),
        (10.6, "Hello."),
        (15.0, "You stack the red square on top of the blue box."),
    ]
    counts = event_field_counts(said, reference, window=1.0)
    assert counts == {
        "narrations": 5,
        "near": 4,
        "parsed": 3,
        "kind": 2,
        "colour": 3,
        "shape": 2,
        "target": 1,
        "target_said": 3,
    }
    # The nearest turn is the one scored, even when a farther one within the window would have been right.
    assert event_field_counts(said[:2], reference[:1])["kind"] == 0
    assert event_field_counts([], reference)["near"] == 0
