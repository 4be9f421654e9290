"""The Fluency and LM-Correctness a perfect model could reach on a synthetic world's conversations.

The world says each event in one of three phrasings picked at random ("You bring / slide ... into view / push a red
circle in"), and names an object's size only sometimes (20 % of the time, 30 % when it comes in). No model can know
which, so a turn's language tokens cannot all be predicted, and Fluency counts only the tokens before the first
mistake. This script computes, turn by turn as `videollm-online eval` does, what the best possible predictor gets:
it speaks on the exact frame (every silence right), and at each language token it says the most probable next token
given the sentence so far and the event (the Bayes argmax over the phrasings and the size choice; on a tie it is
right with probability 1/k). Answer turns (live chat) are counted as fully right, so the figures are upper bounds.

    python benchmarks/fluency_ceiling.py --data-root heldout [--output benchmarks/results/fluency_ceiling.json]
"""

from __future__ import annotations

import argparse
import re
import string
import sys
from collections import defaultdict
from pathlib import Path

from videollm_online.core.checkpoint import gguf_tokenizer, resolve_source
from videollm_online.core.config import DEMO_LLM, LiveConfig
from videollm_online.core.text import IGNORE_INDEX, StreamTemplate
from videollm_online.data.world_language import SIZE_SAID, SIZES, TEMPLATES, describe_object
from videollm_online.utils.files import read_jsonl, report_json


def _field_pattern(form: str) -> re.Pattern:
    pattern = ""
    for literal, name, _, _ in string.Formatter().parse(form):
        pattern += re.escape(literal)
        if name is not None:
            pattern += f"(?P<{name}>.+?)"
    return re.compile(pattern)


_FORMS = [
    (kind, tense, _field_pattern(phrasing[tense]))
    for kind, phrasings in TEMPLATES.items()
    for phrasing in phrasings
    for tense in range(3)
]


class _Unsaid(dict):
    """Fields a phrasing needs that the sentence did not say ("You take the red circle away." has no edge): any
    value will do, as such phrasings part from the sentence at their verb, before the field."""

    def __missing__(self, key: str) -> str:
        return "left"


def alternatives(sentence: str) -> list[tuple[str, float]] | None:
    """What the generator could have said for the event of `sentence`, with probabilities; None if it is not a
    narration of the world."""
    for kind, tense, pattern in _FORMS:
        found = pattern.fullmatch(sentence)
        if found is None:
            continue
        fields = found.groupdict()
        variants = [(fields, 1.0)]
        for name, p_size in SIZE_SAID.items():
            words = fields.get(name, "").split()
            if len(words) == 4 and words[1] in SIZES:  # "the small red circle": it could have been said without
                unsized = {
                    **fields,
                    name: describe_object(words[0] if words[0] == "the" else "a", "", words[2], words[3]),
                }
                variants = [(fields, p_size), (unsized, 1 - p_size)]
        phrasings = TEMPLATES[kind]
        return [
            (phrasing[tense].format_map(_Unsaid(f)), p / len(phrasings)) for phrasing in phrasings for f, p in variants
        ]
    return None


def segments(template: StreamTemplate, conversation: list[dict]) -> list[tuple[int, list[int]]]:
    """(learned frame positions, learned language labels) of each eos-ended segment that learns language: the
    turns `videollm-online eval` scores, in order (`eval.metrics.evaluate_conversation`)."""
    tokenized = template.tokenize(conversation)
    ids = template.ids
    out, start = [], 0
    for stop in [i + 1 for i, token in enumerate(tokenized.input_ids) if token == ids.eos]:
        pairs = [
            (token, label)
            for token, label in zip(tokenized.input_ids[start:stop], tokenized.labels[start:stop])
            if label != IGNORE_INDEX
        ]
        language = [label for token, label in pairs if token != ids.v_placeholder]
        if language:
            out.append((len(pairs) - len(language), language))
        start = stop
    return out


def expected_right(truth: list[int], candidates: list[tuple[list[int], float]]) -> float:
    """Expected number of tokens of `truth` the Bayes argmax gets right before its first mistake."""
    alive, p_right, total = candidates, 1.0, 0.0
    for i, token in enumerate(truth):
        weights: dict[int, float] = defaultdict(float)
        for tokens, weight in alive:
            if i < len(tokens):
                weights[tokens[i]] += weight
        best = max(weights.values())
        if weights.get(token, 0.0) < best - 1e-12:
            break
        p_right /= sum(1 for w in weights.values() if abs(w - best) <= 1e-12)
        total += p_right
        alive = [(tokens, weight) for tokens, weight in alive if i < len(tokens) and tokens[i] == token]
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="a world written by `data synth-world`")
    parser.add_argument("--output", help="write the figures as JSON")
    args = parser.parse_args(argv)
    template = StreamTemplate(gguf_tokenizer(resolve_source(DEMO_LLM, "LLM")), LiveConfig.from_name("demo-resnet"))
    # per conversation, the mean over its turns; then the mean over conversations (`eval.metrics.aggregate`)
    fluency, correctness, narrations, unread = [], [], 0, 0
    by_kind: dict[str, list[float]] = defaultdict(list)
    for record in read_jsonl(Path(args.data_root) / "conversations.jsonl"):
        conversation = record["conversation"]
        scored = segments(template, conversation)
        said = [i for i, turn in enumerate(conversation) if turn["role"] == "assistant" and turn.get("learn", True)]
        if len(said) != len(scored):
            raise SystemExit(f"{record['video']}: {len(said)} learned assistant turns, {len(scored)} scored segments")
        turn_fluency, turn_correctness = [], []
        for k, (index, (frames, truth)) in enumerate(zip(said, scored)):
            options = alternatives(conversation[index]["content"]) if record["kind"] == "narration" else None
            if record["kind"] == "narration":
                narrations += 1
                unread += options is None
            right = float(len(truth))
            if options is not None:
                candidates = []
                for text, p in options:
                    changed = [dict(turn) for turn in conversation]
                    changed[index]["content"] = text
                    candidates.append((segments(template, changed)[k][1], p))
                right = expected_right(truth, candidates)
            turn_correctness.append(right / len(truth))
            if frames:  # on time: every learned frame right, then the language tokens before the first mistake
                turn_fluency.append((frames + right) / (frames + len(truth)))
        correctness.append(sum(turn_correctness) / len(turn_correctness) if turn_correctness else 1.0)
        fluency.append(sum(turn_fluency) / len(turn_fluency) if turn_fluency else 1.0)
        by_kind[record["kind"]].append(fluency[-1])
    result = {
        "command": "python benchmarks/fluency_ceiling.py --data-root " + args.data_root,
        "conversations": len(fluency),
        "narrations": narrations,
        "narrations_not_read": unread,
        "fluency_ceiling": round(sum(fluency) / len(fluency), 4),
        "lm_correctness_ceiling": round(sum(correctness) / len(correctness), 4),
        "fluency_ceiling_by_conversation_kind": {
            kind: round(sum(values) / len(values), 4) for kind, values in sorted(by_kind.items())
        },
        "note": "upper bounds: perfect timing, the Bayes argmax over the world's phrasings and size mentions, answer "
        "turns counted fully right",
    }
    report_json(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
