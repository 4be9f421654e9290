"""Golden values of the benchmark scoring (edit-distance matching, accuracy, LTA edit distance) and of generation
with a scripted model whose answer is set by hand."""

from __future__ import annotations

import pytest
import torch

from tiny_models import random_frames, scripted_model, tiny_model
from videollm_online.eval.benchmarks import (
    answer_lines,
    coin_scores,
    edit_distance,
    generate_answers,
    lta_aued,
    lta_edit_distance,
    lta_scores,
    nearest_category,
    prompt_ids,
)

CATEGORIES = ["Boil water.", "Cut paper.", "Fold paper."]


def test_edit_distance_values():
    assert edit_distance("fold papr", "Fold paper.") == 3  # f->F, insert e, insert .
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([1, 2, 3, 4], [2, 3, 4, 1]) == 2
    assert edit_distance([(1, 2), (3, 4)], [(1, 2), (3, 5)]) == 1


def test_nearest_category():
    assert nearest_category([" Cut paper.", "fold papr", "Boil"], CATEGORIES) == [1, 2, 0]
    assert nearest_category(["A."], ["Ab.", "Ac."]) == [0]  # a tie goes to the first category
    assert nearest_category([], CATEGORIES) == []


def test_coin_accuracy():
    accuracy, predicted = coin_scores([" Cut paper.", "fold papr", "Boil"], [[1], [2], [1]], CATEGORIES, False)
    assert predicted == [[1], [2], [0]]
    assert accuracy == pytest.approx(2 / 3)


def test_procedure_accuracy_counts_steps_by_position():
    assert answer_lines(" 1. Cut paper.\n\n2.Boil water.\n3. Fold paper.") == [
        "Cut paper.",
        "Boil water.",
        "Fold paper.",
    ]
    predictions = ["1. Cut paper.\n2. Boil water.\n3. Fold paper.", "Fold paper."]
    accuracy, predicted = coin_scores(predictions, [[1, 2], [2, 0]], CATEGORIES, True)
    assert predicted == [[1, 0, 2], [2]]
    assert accuracy == pytest.approx(2 / 4)  # sample 1: first step right; sample 2: first step right, one missing


def test_lta_edit_distance_hand_values():
    labels = [[1, 2, 3, 4], [1, 2, 3, 4]]
    candidates = [[[2, 3, 4, 1]], [[9, 9, 9, 9], [1, 2, 3, 3]]]  # 2/4; min(4/4, 1/4)
    assert lta_edit_distance(candidates, labels) == pytest.approx((0.5 + 0.25) / 2)
    assert lta_edit_distance(candidates, labels, z=2) == pytest.approx((1.0 + 0.0) / 2)  # [2,3] vs [1,2]: 2 edits
    # AUED over z = 1, 2: ED@1 = 0, ED@2 = 1/2 -> trapezoid (0 + 0.5) / 2, over Z - 1 = 1
    assert lta_aued([[[1, 3]]], [[1, 2]]) == pytest.approx(0.25)


def test_lta_scores_verb_noun_action():
    candidates = [[[(0, 1), (2, 2)], [(0, 0), (1, 1)]]]  # K = 2 candidates of Z = 2 (verb, noun) pairs
    scores = lta_scores(candidates, verb_labels=[[0, 1]], noun_labels=[[0, 2]])
    assert scores["verb_ed"] == pytest.approx(0.0)  # candidate 2's verbs [0, 1]
    assert scores["noun_ed"] == pytest.approx(0.5)  # [1, 2] and [0, 1] are both one edit from [0, 2]
    assert scores["action_ed"] == pytest.approx(0.5)  # candidate 2: (0, 0) right, (1, 1) != (1, 2)


# ---------------------------------------------------------------------- a model whose answer is set by hand
def test_scripted_model_says_its_answer_whatever_the_frames():
    model, template = scripted_model(" Cut.")
    conversation = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "What is the action?"},
        {"role": "stream", "num_frames": 3, "learn": True},
    ]
    ids = prompt_ids(template, conversation)
    assert template.tokenizer.decode(ids[-12:]).endswith("<v>]\nAssistant:")
    answers = generate_answers(
        model,
        template,
        [ids, ids[:-1] + ids[-1:]],
        [random_frames(3, model, seed=1), random_frames(3, model, seed=2)],
        max_new_tokens=20,
    )
    assert answers == [[" Cut."], [" Cut."]]


def test_generation_matches_a_naive_greedy_loop():
    model, template = tiny_model()
    conversation = [
        {"role": "user", "content": "Q"},
        {"role": "stream", "num_frames": 2, "learn": True},
        {"role": "assistant", "content": "dropped", "learn": True},
    ]
    ids = prompt_ids(template, conversation)
    assert template.tokenizer.decode(ids).endswith("]\nAssistant:")  # the answer is left out
    frames = random_frames(2, model, seed=3)
    ((answer,),) = generate_answers(model, template, [ids], [frames], max_new_tokens=6)
    tokens = list(ids)
    with torch.no_grad():
        for _ in range(6):
            next_token = int(model(input_ids=torch.tensor([tokens]), frame_embeds=frames).logits[0, -1].argmax())
            if next_token == template.ids.eos:
                break
            tokens.append(next_token)
    assert answer == template.decode(tokens[len(ids) :])
    # a left-padded batch gives each prompt's own answer
    short = prompt_ids(template, [{"role": "stream", "num_frames": 1, "learn": True}])
    batched = generate_answers(model, template, [ids, short], [frames, frames[:1]], max_new_tokens=6)
    alone = generate_answers(model, template, [short], [frames[:1]], max_new_tokens=6)
    assert batched == [[answer], alone[0]]
    # beam search returns K candidates per prompt (LTA scores the best of them)
    beams = generate_answers(
        model, template, [ids, short], [frames, frames[:1]], max_new_tokens=6, num_beams=3, num_return_sequences=3
    )
    assert [len(candidates) for candidates in beams] == [3, 3]


def test_scripted_beams_agree_on_the_only_likely_answer():
    model, template = scripted_model(" Cut.")
    ids = prompt_ids(template, [{"role": "stream", "num_frames": 1, "learn": True}])
    ((best, *_),) = generate_answers(
        model, template, [ids], [random_frames(1, model)], max_new_tokens=8, num_beams=2, num_return_sequences=2
    )
    assert best == " Cut."
