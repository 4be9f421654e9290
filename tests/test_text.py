"""Golden ids and labels for hand-built conversations (DESIGN.md section 3), with the tiny byte-level tokenizer.

Ids of the tiny tokenizer: printable ASCII c -> ord(c) - 33 (`,` 11, `[` 58, `]` 60, `A` 32), `\\n` 198, space 220,
`]\\n` 256 (one token, as in Llama-3), `<s>` 257, `</s>` 258, `<v>` 259. Each expected label list was checked by hand
against the rule: after each learned frame's last `<v>` the next token; an assistant turn with learn teaches
`Assistant: ...</s>` (each token predicted from the position before it); a `<v>` label (v1) becomes eos.
"""

import pytest

from videollm_online.core.config import LiveConfig
from videollm_online.core.text import IGNORE_INDEX, StreamTemplate, build_tiny_tokenizer

X = IGNORE_INDEX
S = {"role": "system", "content": "S"}
ASSISTANT = [32, 82, 82, 72, 82, 83, 64, 77, 83, 25, 220]  # "Assistant: "

GOLDEN = {
    "learn_true": (
        [S, {"role": "stream", "num_frames": 2, "learn": True}, {"role": "assistant", "content": "Hi", "learn": True}],
        "<s>S\n\n[<v><v>,<v><v>]\nAssistant: Hi</s>",
        [257, 50, 198, 198, 58, 259, 259, 11, 259, 259, 256, *ASSISTANT, 39, 72, 258],
        [X, X, X, X, X, X, 11, X, X, 256, *ASSISTANT, 39, 72, 258, X],
    ),
    "learn_false_then_query_mid_stream": (
        [
            S,
            {"role": "stream", "num_frames": 2, "learn": False},
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "A.", "learn": True},
            {"role": "stream", "num_frames": 1, "learn": True},
            {"role": "assistant", "content": "B", "learn": False},
        ],
        "<s>S\n\n[<v><v>,<v><v>]\nUser: Q?\nAssistant: A.</s>\n[<v><v>]\nAssistant: B</s>",
        [
            257,
            50,
            198,
            198,
            58,
            259,
            259,
            11,
            259,
            259,
            256,
            52,
            82,
            68,
            81,
            25,
            220,
            48,
            30,
            198,
            *ASSISTANT,
            32,
            13,
            258,
            198,
            58,
            259,
            259,
            256,
            *ASSISTANT,
            33,
            258,
        ],
        [X] * 19 + [*ASSISTANT, 32, 13, 258] + [X, X, X, X, 256] + [X] * 14,
    ),
    "learn_int_first_two_frames": (
        [S, {"role": "stream", "num_frames": 3, "learn": 2}, {"role": "assistant", "content": "C", "learn": True}],
        "<s>S\n\n[<v><v>,<v><v>,<v><v>]\nAssistant: C</s>",
        [257, 50, 198, 198, 58, 259, 259, 11, 259, 259, 11, 259, 259, 256, *ASSISTANT, 34, 258],
        [X, X, X, X, X, X, 11, X, X, 11, X, X, X, *ASSISTANT, 34, 258, X],
    ),
    "stream_ends_the_conversation": (
        [S, {"role": "user", "content": "Go"}, {"role": "stream", "num_frames": 2, "learn": True}],
        "<s>S\n\nUser: Go\n[<v><v>,<v><v>]",
        [257, 50, 198, 198, 52, 82, 68, 81, 25, 220, 38, 78, 198, 58, 259, 259, 11, 259, 259, 60],
        [X] * 15 + [11, X, X, 60, X],
    ),
}
V1_GOLDEN = {
    "v1_no_interval_token": (
        [S, {"role": "stream", "num_frames": 3, "learn": True}, {"role": "assistant", "content": "D", "learn": True}],
        "<s>S\n\n[<v><v><v>]\nAssistant: D</s>",
        [257, 50, 198, 198, 58, 259, 259, 259, 256, *ASSISTANT, 35, 258],
        [X, X, X, X, X, 258, 258, 256, *ASSISTANT, 35, 258, X],  # silent frames learn eos
    ),
}


def template(**overrides) -> StreamTemplate:
    config = LiveConfig.from_name("tiny", frame_token_pooled=1, frame_num_tokens=2, **overrides)
    return StreamTemplate(build_tiny_tokenizer(), config)


def v1_template() -> StreamTemplate:
    config = LiveConfig.from_name("tiny", frame_token_pooled=0, frame_num_tokens=1, frame_token_interval=None)
    return StreamTemplate(build_tiny_tokenizer(), config)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_ids_and_labels(name):
    conversation, text, input_ids, labels = GOLDEN[name]
    result = template().tokenize(conversation)
    assert result.text == text
    assert result.input_ids == input_ids
    assert result.labels == labels


@pytest.mark.parametrize("name", sorted(V1_GOLDEN))
def test_golden_v1(name):
    conversation, text, input_ids, labels = V1_GOLDEN[name]
    result = v1_template().tokenize(conversation)
    assert (result.text, result.input_ids, result.labels) == (text, input_ids, labels)


def test_learned_text_reads_as_the_turns():
    conversation = GOLDEN["learn_true"][0]
    t = template()
    result = t.tokenize(conversation)
    learned = [label for label in result.labels if label != X]
    assert t.tokenizer.decode(learned) == ",]\nAssistant: Hi</s>"


def test_special_ids_looked_up_by_name():
    t = template()
    assert (t.ids.v_placeholder, t.ids.interval, t.ids.eos, t.ids.silence) == (259, 11, 258, 11)
    assert v1_template().ids.silence == 258  # no interval token: eos means "stay silent"


@pytest.mark.parametrize(
    "conversation, message",
    [
        ([{"role": "robot", "content": "x"}], "unknown role 'robot'"),
        ([S, {"role": "stream", "num_frames": -1}], "num_frames"),
        ([S, {"role": "stream", "num_frames": 2, "learn": -3}], "learn must be a bool or an int"),
        ([{"role": "user", "content": "x"}, S], "system message may only come first"),
    ],
)
def test_malformed_conversations_raise(conversation, message):
    with pytest.raises(ValueError, match=message):
        template().tokenize(conversation)


def test_interval_token_must_be_one_token():
    with pytest.raises(ValueError, match="must be exactly one token"):
        template(frame_token_interval=" frame ")


def test_prompt_pieces_match_the_training_text():
    """The engine's inference pieces, joined, read exactly like the training conversation."""
    t = template(system_prompt="S")
    pieces = (
        t.system_text()
        + t.STREAM_PROMPT
        + t.frame_text
        + ","
        + t.frame_text
        + t.stream_query_prompt("Q?")
        + " A."
        + t.eos
        + t.STREAM_PROMPT
        + t.frame_text
        + t.STREAM_GENERATION_PROMPT
        + " B"
        + t.eos
    )
    assert pieces == GOLDEN["learn_false_then_query_mid_stream"][1]
