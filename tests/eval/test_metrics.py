"""Golden values of the streaming metrics on hand-built cases whose logits are set by hand.

`FakeLogitsModel` reads each frame's index from its embedding (frame i is filled with the value i), so every stream
decision is a chosen P(silence) for that frame, in the full forward and in the late-response forward alike; at every
other position it puts probability Q on the next input token (or, at chosen positions, on a wrong token).
"""

from __future__ import annotations

import math

import pytest
import torch

from tiny_models import random_frames, tiny_config, tiny_model
from videollm_online.core.text import IGNORE_INDEX, StreamTemplate, build_tiny_tokenizer
from videollm_online.eval import aggregate, evaluate_conversation, event_match
from videollm_online.eval.metrics import ConversationResult

Q = 0.8  # probability the fake puts on its predicted token
VOCAB = 259
RESPOND = 256  # `]\n`: the fake's alternative to silence at a frame
NLL_RIGHT = -math.log(Q)
NLL_WRONG = -math.log((1 - Q) / (VOCAB - 1))
NUM_LM = 14  # "Assistant: ab</s>" as learned language tokens: `]\n`->A ... b->eos


class FakeLogitsModel(torch.nn.Module):
    """Logits as a deterministic function of the input: P(silence) per frame index, Q on the next token elsewhere."""

    def __init__(
        self,
        template: StreamTemplate,
        silence_prob: dict[int, float] | None = None,
        wrong: set[int] | None = None,
        default_silence: float = 0.9,
    ):
        super().__init__()
        self.template = template
        self.silence_prob = silence_prob or {}
        self.wrong = wrong or set()
        self.default_silence = default_silence
        self.calls: list[int] = []  # sequence lengths of the forwards

    def forward(self, input_ids: torch.Tensor, frame_embeds: torch.Tensor | None = None):
        ids = input_ids[0].tolist()
        self.calls.append(len(ids))
        frame_tokens = self.template.config.frame_num_tokens
        v = self.template.ids.v_placeholder
        frame_index = [] if frame_embeds is None else frame_embeds[:, 0, 0].round().long().tolist()
        assert sum(token == v for token in ids) == len(frame_index) * frame_tokens
        logits = torch.zeros(1, len(ids), VOCAB)
        seen = 0
        for p, token in enumerate(ids):
            if token == v:
                seen += 1
                if seen % frame_tokens == 0:
                    p_silence = self.silence_prob.get(frame_index[seen // frame_tokens - 1], self.default_silence)
                    logits[0, p] = -1e9
                    logits[0, p, self.template.ids.silence] = math.log(p_silence)
                    logits[0, p, RESPOND] = math.log(1 - p_silence)
                    continue
            if p + 1 < len(ids):
                target = ids[p + 1] % VOCAB
                predicted = (target + 1) % VOCAB if p in self.wrong else target
                logits[0, p, predicted] = math.log(Q * (VOCAB - 1) / (1 - Q))
        return type("Output", (), {"logits": logits})()


@pytest.fixture(scope="module")
def template() -> StreamTemplate:
    return StreamTemplate(build_tiny_tokenizer(), tiny_config())


def frames_for(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 10, 4).clone()


def narration(*num_frames: int, learn: bool = True) -> list[dict]:
    conversation: list[dict] = [{"role": "system", "content": "S"}, {"role": "user", "content": "go"}]
    for n, text in zip(num_frames, ["ab", "cd", "ef", "gh"]):
        conversation += [
            {"role": "stream", "num_frames": n, "learn": learn},
            {"role": "assistant", "content": text, "learn": True},
        ]
    return conversation


def lm_positions(template: StreamTemplate, conversation: list[dict]) -> list[list[int]]:
    """Absolute positions of the learned language tokens, per eos-delimited turn."""
    tokenized = template.tokenize(conversation)
    turns: list[list[int]] = [[]]
    for p, (token, label) in enumerate(zip(tokenized.input_ids, tokenized.labels)):
        if label != IGNORE_INDEX and token != template.ids.v_placeholder:
            turns[-1].append(p)
        if token == template.ids.eos:
            turns.append([])
    return turns[:-1]


def run(template, conversation, silence_prob=None, wrong=None, **kwargs) -> ConversationResult:
    model = FakeLogitsModel(template, silence_prob, wrong)
    num_frames = sum(m["num_frames"] for m in conversation if m["role"] == "stream")
    return evaluate_conversation(model, template, conversation, frames_for(num_frames), **kwargs)


def test_on_time(template):
    result = run(template, narration(4, 3), {3: 0.1, 6: 0.1})
    assert [t.frame_diff for t in result.turns] == [0, 0]
    assert [t.gt_frame for t in result.turns] == [3, 6]
    assert [t.num_lm for t in result.turns] == [NUM_LM, NUM_LM]
    assert result.time_diff == 0.0
    assert result.fluency == pytest.approx(1.0)
    assert result.lm_correctness == pytest.approx(1.0)
    assert result.lm_ppl == pytest.approx(1 / Q)


def test_early_by_two_frames(template):
    result = run(template, narration(5, 3), {2: 0.1, 4: 0.1, 7: 0.1}, fps=2.0)
    assert [t.frame_diff for t in result.turns] == [2, 0]
    assert [t.predicted_frame for t in result.turns] == [2, 7]
    assert result.frame_diff == pytest.approx(1.0)
    assert result.time_diff == pytest.approx(0.5)
    assert result.turns[0].fluency == pytest.approx(3 / (5 + NUM_LM))  # the silences before the early response
    assert result.fluency == pytest.approx((3 / 19 + 1) / 2)


def test_late_uses_extra_frames(template):
    # turn 0 (frames 0-3) stays silent; up to min(5, 4 - 1) = 3 following frames are fed; it responds at frame 5
    result = run(template, narration(4, 5), {5: 0.1, 8: 0.1})
    first, second = result.turns
    assert (first.frame_diff, first.late_kind, first.predicted_frame) == (-2, "extra", 5)
    assert second.frame_diff == 3  # the same frame 5 is an early response for turn 1 (gt frame 8)
    assert result.frame_diff == pytest.approx(2.5)
    assert result.time_diff == pytest.approx(1.25)
    assert first.fluency == pytest.approx(3 / (4 + NUM_LM))
    assert second.fluency == pytest.approx(2 / (5 + NUM_LM))


def test_late_extra_forward_reads_prefix_and_appended_frames(template):
    conversation = narration(4, 5)
    model = FakeLogitsModel(template, {5: 0.1, 8: 0.1})
    evaluate_conversation(model, template, conversation, frames_for(9))
    full, extra = model.calls
    tokenized = template.tokenize(conversation)
    eos = tokenized.input_ids.index(template.ids.eos)
    last_v = max(
        p
        for p, (token, label) in enumerate(zip(tokenized.input_ids, tokenized.labels))
        if label != IGNORE_INDEX and token == template.ids.v_placeholder and p < eos
    )
    assert extra == last_v + 1 + 3 * (1 + 10)  # prefix through the last frame, then 3 x (`,` + 10 `<v>`)
    assert full == len(tokenized.input_ids)


def test_late_in_last_turn_counts_as_on_time(template):
    result = run(template, narration(4), {})
    (turn,) = result.turns
    assert (turn.frame_diff, turn.late_kind) == (0, "last")
    assert result.time_diff == 0.0
    assert turn.fluency == pytest.approx(1.0)  # as in the original: frame diff 0 is scored as on time


def test_never_responding(template):
    # turn 0 silent on its 4 frames and on the 2 appended ones (cap = the next turn's 2 frames): -2; turn 1 is last
    result = run(template, narration(4, 2), {})
    assert [(t.frame_diff, t.late_kind) for t in result.turns] == [(-2, "extra"), (0, "last")]
    assert result.turns[0].predicted_frame == 5
    assert result.time_diff == pytest.approx(1 / 2.0)
    assert result.turns[0].fluency == pytest.approx(3 / 18)


def test_single_frame_turn_has_nothing_to_append(template):
    result = run(template, narration(1, 3), {5: 0.1})
    assert (result.turns[0].frame_diff, result.turns[0].late_kind) == (0, "none")


def test_threshold_flips_a_decision(template):
    conversation = narration(5)
    probs = {2: 0.6, 4: 0.1}
    assert run(template, conversation, probs, threshold=0.725).turns[0].frame_diff == 2  # 0.6 < 0.725: respond
    assert run(template, conversation, probs, threshold=0.5).turns[0].frame_diff == 0  # 0.6 >= 0.5: silent
    assert run(template, conversation, probs, threshold=0.0).turns[0].frame_diff == 0  # plain argmax


def test_threshold_applies_in_the_late_forward_too(template):
    # turn 0 (frames 0-3) stays silent; in the appended frames 4, 5, 6 P(silence) is 0.9, 0.6, 0.1
    conversation = narration(4, 5)
    probs = {5: 0.6, 6: 0.1, 8: 0.1}
    assert run(template, conversation, probs, threshold=0.725).turns[0].frame_diff == -2  # responds at frame 5
    assert run(template, conversation, probs, threshold=0.5).turns[0].frame_diff == -3  # 0.6 >= 0.5: frame 6


def test_fluency_with_a_mistake_mid_response(template):
    conversation = narration(4)
    positions = lm_positions(template, conversation)
    result = run(template, conversation, {3: 0.1}, wrong={positions[0][5]})
    (turn,) = result.turns
    assert turn.num_lm_correct == 5
    assert turn.fluency == pytest.approx((4 + 5) / (4 + NUM_LM))
    assert turn.lm_correctness == pytest.approx(5 / NUM_LM)


def test_lm_correctness_and_ppl(template):
    conversation = narration(3, 2)
    positions = lm_positions(template, conversation)
    wrong = {positions[0][2], positions[0][7]}  # first wrong token is the third; the later one does not count
    result = run(template, conversation, {2: 0.1, 4: 0.1}, wrong=wrong)
    assert [t.lm_correctness for t in result.turns] == pytest.approx([2 / NUM_LM, 1.0])
    assert result.lm_correctness == pytest.approx((2 / NUM_LM + 1) / 2)
    ppl_first = math.exp((12 * NLL_RIGHT + 2 * NLL_WRONG) / NUM_LM)
    assert result.turns[0].lm_ppl == pytest.approx(ppl_first, rel=1e-5)
    assert result.lm_ppl == pytest.approx((ppl_first + 1 / Q) / 2, rel=1e-5)
    metrics = aggregate([result])
    assert metrics.token_lm_ppl == pytest.approx(math.exp((26 * NLL_RIGHT + 2 * NLL_WRONG) / (2 * NUM_LM)), rel=1e-5)


def test_unlearned_turn_is_skipped_but_its_frames_count(template):
    conversation = narration(2, 4, 3)
    conversation[3]["learn"] = False  # turn 0's response is not learned; its stream still is
    conversation[2]["learn"] = False
    # turn 1 (frames 2-5) stays silent; appended frames are 6, 7, 8 (not 4, 5, 6): the response at 7 gives -2
    result = run(template, conversation, {7: 0.1, 8: 0.1})
    assert [t.index for t in result.turns] == [1, 2]
    assert (result.turns[0].frame_diff, result.turns[0].predicted_frame) == (-2, 7)


def test_aggregate_means_over_conversations(template):
    on_time = run(template, narration(4, 3), {3: 0.1, 6: 0.1})
    early = run(template, narration(5, 3), {2: 0.1, 4: 0.1, 7: 0.1})
    metrics = aggregate([on_time, early])
    assert metrics.num_conversations == 2 and metrics.num_turns == 4
    assert metrics.time_diff == pytest.approx((0 + 0.5) / 2)
    assert metrics.fluency == pytest.approx((1 + (3 / 19 + 1) / 2) / 2)
    assert metrics.lm_ppl == pytest.approx(1 / Q)
    assert metrics.lm_correctness == pytest.approx(1.0)


def test_event_match_counts():
    references = [(1.0, "C opens the door."), (3.0, "C picks a cup"), {"time": 5.0, "content": "C walks"}]
    predictions = [(1.5, "c opens the door"), (2.0, "C picks a cup"), (3.6, "C picks a cup."), (9.0, "C walks")]
    result = event_match(predictions, references, window=1.0)
    assert result.num_matched == 2
    assert result.recall == pytest.approx(2 / 3)
    assert result.precision == pytest.approx(1 / 2)
    assert result.f1 == pytest.approx(4 / 7)
    loose = event_match(predictions, references, window=4.0, same=lambda a, b: True)
    assert (loose.num_matched, loose.recall) == (3, 1.0)


def test_event_match_is_a_maximum_matching():
    # greedy (reference at 1.0 takes the prediction at 0.5) would find one; the best pairing finds two
    result = event_match([(0.5, "x"), (1.9, "x")], [(1.0, "x"), (0.0, "x")], window=1.0)
    assert (result.num_matched, result.recall, result.precision) == (2, 1.0, 1.0)
    assert event_match([], [(0.0, "x")]).recall == 0.0


def test_real_tiny_model_runs():
    model, template = tiny_model()
    conversation = narration(3, 2)
    result = evaluate_conversation(model, template, conversation, random_frames(5, model))
    assert len(result.turns) == 2
    assert result.lm_ppl > 1.0
    assert 0.0 <= result.fluency <= 1.0 and 0.0 <= result.lm_correctness <= 1.0
    assert result.time_diff >= 0.0


def test_without_interval_token_silence_is_eos():
    template = StreamTemplate(build_tiny_tokenizer(), tiny_config(frame_token_interval=None))
    assert template.ids.silence == template.ids.eos
    result = run(template, narration(4, 5), {5: 0.1, 8: 0.1})
    assert [(t.frame_diff, t.predicted_frame) for t in result.turns] == [(-2, 5), (3, 8 - 3)]
