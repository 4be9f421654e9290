"""The one decision policy (`core.policy`): its checks, its rule on floats and tensors, its defaults, and that every
user of the rule follows it when the rule is swapped in its one place."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tiny_models import make_decisive, random_frames, tiny_config, tiny_model
from videollm_online.apps.server.sessions import SessionParams
from videollm_online.core import policy as policy_module
from videollm_online.core.policy import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_THRESHOLD,
    LIVE_MAX_NEW_TOKENS,
    MAX_NEW_TOKENS,
    SERVER_MAX_NEW_TOKENS,
    DecisionPolicy,
    check_max_new_tokens,
    check_threshold,
    silence_probability,
)
from videollm_online.engine import EngineConfig, StreamSession, open_session, reference_stream
from videollm_online.eval import evaluate_conversation
from videollm_online.eval.metrics import SEED_METRICS_POLICY

SRC = Path(__file__).resolve().parents[1] / "src" / "videollm_online"


# ---------------------------------------------------------------------- checks
@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, -math.inf, True, "0.5", None])
def test_bad_thresholds_are_refused_everywhere(value):
    message = "threshold must be in \\[0, 1\\]"
    with pytest.raises(ValueError, match=message):
        DecisionPolicy(threshold=value)
    with pytest.raises(ValueError, match=message):
        check_threshold(value)
    if value is not None:  # None means "the model's" in the settings
        with pytest.raises(ValueError, match=message):
            EngineConfig(threshold=value)
        with pytest.raises(ValueError, match=message):
            SessionParams(threshold=value)
        with pytest.raises(ValueError, match="frame_token_interval_threshold must be in"):
            tiny_config(frame_token_interval_threshold=value)


@pytest.mark.parametrize("value", [0, -3, 2.5, True, math.nan, math.inf, "8", MAX_NEW_TOKENS + 1])
def test_bad_max_new_tokens_are_refused_everywhere(value):
    message = f"max_new_tokens must be a whole number in 1..{MAX_NEW_TOKENS}, got"
    with pytest.raises(ValueError, match=message):
        DecisionPolicy(max_new_tokens=value)
    with pytest.raises(ValueError, match=message):
        EngineConfig(max_new_tokens=value)
    with pytest.raises(ValueError, match="max_new_tokens must be a whole number in 1.."):
        SessionParams(max_new_tokens=value)


def test_good_settings_pass():
    for value in (0, 0.0, 0.5, 1, 1.0):
        check_threshold(value)
        assert DecisionPolicy(threshold=value).threshold == value
    check_threshold(None, optional=True)
    check_max_new_tokens(MAX_NEW_TOKENS)
    with pytest.raises(ValueError, match=f"1..{SERVER_MAX_NEW_TOKENS}"):
        SessionParams(max_new_tokens=SERVER_MAX_NEW_TOKENS + 1)  # a server client's own, lower limit


# ---------------------------------------------------------------------- the rule
def test_responds_on_floats_and_tensors():
    policy = DecisionPolicy(threshold=0.5)
    assert policy.responds(0.4) is True
    assert policy.responds(0.5) is False  # P(silence) >= threshold: silent
    silence = torch.tensor([0.1, 0.5, 0.9])
    assert policy.responds(silence).tolist() == [True, False, False]
    assert DecisionPolicy(threshold=1.0).responds(torch.tensor([0.0, 0.999])).all()
    assert not DecisionPolicy(threshold=0.0).responds(torch.tensor([0.0, 1.0])).any()


def test_silence_probability_is_the_softmax():
    logits = torch.randn(3, 5, 17)
    expected = logits.softmax(dim=-1)[..., 4]
    torch.testing.assert_close(silence_probability(logits, 4), expected)
    torch.testing.assert_close(silence_probability(logits.bfloat16(), 4), logits.bfloat16().float().softmax(-1)[..., 4])


def test_argmax_clause():
    # P(silence) 0.45 as the most likely token, and 0.45 beside a likelier one (0.55)
    silence_top = torch.log(torch.tensor([0.45, 0.3, 0.25]))
    other_top = torch.log(torch.tensor([0.45, 0.55, 0.0]))
    logits = torch.stack([silence_top, other_top])
    plain, seed = DecisionPolicy(threshold=0.3), DecisionPolicy(threshold=0.3, argmax_clause=True)
    assert plain.responds_to_logits(logits, 0).tolist() == [False, False]
    assert seed.responds_to_logits(logits, 0).tolist() == [False, True]
    assert seed.responds(0.45, top_is_silence=False) is True
    assert seed.responds(0.45, top_is_silence=True) is False
    assert seed.responds(0.2, top_is_silence=True) is True
    with pytest.raises(ValueError, match="argmax clause needs"):
        seed.responds(0.45)
    assert SEED_METRICS_POLICY.argmax_clause and not DecisionPolicy().argmax_clause


# ---------------------------------------------------------------------- defaults
def test_defaults_come_from_the_policy():
    model, template = tiny_model()
    assert tiny_config().frame_token_interval_threshold == DEFAULT_THRESHOLD
    assert EngineConfig().max_new_tokens == DEFAULT_MAX_NEW_TOKENS
    assert SessionParams().max_new_tokens == LIVE_MAX_NEW_TOKENS
    assert SEED_METRICS_POLICY.threshold == DEFAULT_THRESHOLD
    session = StreamSession(model, template)
    assert session.policy == DecisionPolicy.for_model(model.config)
    assert session.policy == EngineConfig().policy(model.config)
    assert EngineConfig(threshold=0.3, max_new_tokens=9).policy(model.config) == DecisionPolicy(0.3, 9)


def test_the_default_threshold_is_written_once():
    """`git grep -n "0\\.725" src` finds the default in core/policy.py alone."""
    found = [path for path in SRC.rglob("*.py") if "0.725" in path.read_text()]
    assert found == [SRC / "core" / "policy.py"]
    assert Path(policy_module.__file__).read_text().count("0.725") == 1


def test_a_session_threshold_and_reply_length_change_through_the_policy():
    model, template = tiny_model()
    session = StreamSession(model, template, EngineConfig(threshold=0.2, max_new_tokens=5))
    session.threshold, session.max_new_tokens = 0.9, 7
    assert session.policy == DecisionPolicy(0.9, 7)
    with pytest.raises(ValueError, match="threshold must be in"):
        session.threshold = 1.5
    assert session.threshold == 0.9


# ---------------------------------------------------------------------- the swap test
def always(self, silence, top_is_silence=None):
    """A swapped rule: respond after every frame, whatever the model says (floats and tensors alike)."""
    return silence <= 2.0


def never(self, silence, top_is_silence=None):
    """A swapped rule: never respond on the model's own."""
    return silence > 2.0


def inverted(self, silence, top_is_silence=None):
    """A swapped rule with other semantics: respond when P(silence) is high."""
    return silence >= self.threshold


NUM_FRAMES = 6


@pytest.fixture(scope="module")
def decisive():
    model, template = tiny_model()
    make_decisive(model, template, seed=3)
    return model, template


def assistant_turns(events) -> int:
    return sum(event.role == "assistant" for event in events)


@pytest.mark.parametrize("rule,expected", [(always, NUM_FRAMES), (never, 0)])
@pytest.mark.parametrize("engine,ahead", [("fast", 1), ("fast", 4), ("default", 1)])
def test_swapped_rule_drives_the_engines(monkeypatch, decisive, rule, expected, engine, ahead):
    model, template = decisive
    monkeypatch.setattr(DecisionPolicy, "responds", rule)
    frames, times = random_frames(NUM_FRAMES, model, seed=1), [i / 2 for i in range(NUM_FRAMES)]
    session = open_session(model, template, EngineConfig(max_new_tokens=3), engine=engine, ahead=ahead)
    events = session.push_frames(times, frames, ahead=ahead)
    assert assistant_turns(events) == expected
    turns = reference_stream(model, template, frames, times, max_new_tokens=3)
    assert sum(role == "assistant" for _, role, _ in turns) == expected


def test_swapped_rule_keeps_the_fast_engine_on_the_reference(monkeypatch, decisive):
    model, template = decisive
    monkeypatch.setattr(DecisionPolicy, "responds", inverted)
    frames, times = random_frames(40, model, seed=2), [i / 2 for i in range(40)]
    session = open_session(model, template, EngineConfig(threshold=0.6, max_new_tokens=4), engine="fast")
    events = [event for t, frame in zip(times, frames) for event in session.push_frame(t, frame)]
    expected = reference_stream(model, template, frames, times, threshold=0.6, max_new_tokens=4)
    assert [(e.video_time, e.token_ids) for e in events] == [(t, ids) for t, _, ids in expected]
    assert 0 < assistant_turns(events) < 40  # the swapped rule both speaks and stays silent here


def narration(*num_frames: int) -> list[dict]:
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": "go"}]
    for n in num_frames:
        conversation += [{"role": "stream", "num_frames": n, "learn": True}, {"role": "assistant", "content": "ab"}]
    return conversation


def test_swapped_rule_drives_the_metrics(monkeypatch, decisive):
    model, template = decisive
    conversation, frames = narration(4, 3), random_frames(7, model, seed=4)
    monkeypatch.setattr(DecisionPolicy, "responds", always)
    early = evaluate_conversation(model, template, conversation, frames)
    assert [turn.frame_diff for turn in early.turns] == [3, 2]  # each turn responds at its first frame
    monkeypatch.setattr(DecisionPolicy, "responds", never)
    late = evaluate_conversation(model, template, conversation, frames)
    assert [(turn.frame_diff, turn.late_kind) for turn in late.turns] == [(-3, "extra"), (0, "last")]
