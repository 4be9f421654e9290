"""The demo's chat order: turns by video time, whatever order the model's turns and the viewer's questions came in."""

from videollm_online.apps.webdemo import Turn, in_time_order


def test_a_turn_about_an_earlier_frame_goes_above_a_question_asked_before_it_arrived():
    turns = [
        Turn("assistant", "first", 4.5),
        Turn("user", "How many?", 7.6),
        Turn("assistant", "a turn the model was still behind on", 7.5),
        Turn("assistant", "Two.", 7.6),
        Turn("assistant", "later", 8.0),
    ]
    assert [t.text for t in in_time_order(turns)] == [
        "first",
        "a turn the model was still behind on",
        "How many?",
        "Two.",
        "later",
    ]


def test_a_rewind_note_keeps_the_turns_before_and_after_it_apart():
    turns = [
        Turn("assistant", "a", 2.0),
        Turn("assistant", "(rewound)"),
        Turn("assistant", "b", 1.0),
        Turn("assistant", "c", 3.0),
    ]
    assert [t.text for t in in_time_order(turns)] == ["a", "(rewound)", "b", "c"]
