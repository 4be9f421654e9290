"""The seed's offline benchmarks: COIN (step, task, next step, procedure, procedure + goal: top-1 accuracy) and
Ego4D long-term action anticipation (edit distance at Z = 20 for verb, noun and action).

Each sample shows its frames after the question (the rows of `data.datasets.coin` / `ego4d_lta`) and the model
answers in free text: greedy for COIN, beam search returning K candidates for LTA (the seed: 5 beams, 5 sequences),
both through the LLM's `generate` on the prompt embeddings. Scoring, as the seed does it:

* COIN: the answer is mapped to the category with the smallest Levenshtein distance (the first in the sorted list on
  a tie); accuracy = share of samples whose category is the ground truth. The procedure benchmarks split the answer
  into lines and map each; accuracy = positionally matching steps / ground-truth steps. Differences: the answer is
  stripped of surrounding spaces and a line of its `N.` number before matching (the seed matches the raw decoded
  text, whose leading space and number prefix add edits to every candidate).
* LTA: each candidate is parsed into Z (verb, noun) pairs (`LtaTaxonomy.parse`); per sample the edit distance of a
  label sequence to the ground truth, divided by Z, minimised over the K candidates; averaged over samples. Verb and
  noun sequences are compared alone, action sequences as pairs. The seed's AUED (area under ED@z, z = 1..Z, over
  Z - 1) is reported too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.text import StreamTemplate

_NUMBER_PREFIX = re.compile(r"^\s*\d+\.\s*")


# ---------------------------------------------------------------------- matching and scores
def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance between two sequences (strings or lists of hashables)."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b))


def nearest_category(texts: Sequence[str], categories: Sequence[str]) -> list[int]:
    """Index of the category nearest each text by Levenshtein distance (the first one on a tie)."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    if not texts:
        return []
    distances = cdist(list(texts), list(categories), scorer=Levenshtein.distance, workers=-1)  # (texts, categories)
    return [int(i) for i in distances.argmin(axis=1)]


def answer_lines(text: str) -> list[str]:
    """The lines of a procedure answer without their `N.` numbers (blank lines dropped)."""
    return [_NUMBER_PREFIX.sub("", line).strip() for line in text.strip().split("\n") if line.strip()]


def coin_scores(
    predictions: Sequence[str], labels: Sequence[Sequence[int]], categories: Sequence[str], procedure: bool
) -> tuple[float, list[list[int]]]:
    """Accuracy and the predicted category indices per sample. Single-answer benchmarks: one index per sample,
    right when it equals the label. Procedure: one index per answer line; right steps are those equal to the label
    at the same position, over all ground-truth steps."""
    if procedure:
        predicted = [nearest_category(answer_lines(text) or [""], categories) for text in predictions]
        right = sum(sum(p == a for p, a in zip(pred, label)) for pred, label in zip(predicted, labels))
        total = sum(len(label) for label in labels)
    else:
        predicted = [[i] for i in nearest_category([text.strip() for text in predictions], categories)]
        right = sum(pred[0] == label[0] for pred, label in zip(predicted, labels))
        total = len(labels)
    return (right / total if total else 0.0), predicted


def lta_edit_distance(
    candidates: Sequence[Sequence[Sequence[Any]]], labels: Sequence[Sequence[Any]], z: int | None = None
) -> float:
    """Mean over samples of min over candidates of edit distance(candidate[:z], label[:z]) / z."""
    if not labels:
        return 0.0
    z = len(labels[0]) if z is None else z
    return sum(
        min(edit_distance(list(c[:z]), list(label[:z])) for c in cands) / z for cands, label in zip(candidates, labels)
    ) / len(labels)


def lta_aued(candidates: Sequence[Sequence[Sequence[Any]]], labels: Sequence[Sequence[Any]]) -> float:
    """The seed's AUED: the trapezoid area under ED@z for z = 1..Z, divided by Z - 1."""
    z_max = len(labels[0])
    curve = [lta_edit_distance(candidates, labels, z) for z in range(1, z_max + 1)]
    return sum((a + b) / 2 for a, b in zip(curve, curve[1:])) / (z_max - 1)


def lta_scores(
    candidates: Sequence[Sequence[Sequence[tuple[int, int]]]],
    verb_labels: Sequence[Sequence[int]],
    noun_labels: Sequence[Sequence[int]],
) -> dict[str, float]:
    """ED@Z for verb, noun and action, and AUED for verb and noun; candidates (N, K, Z) of (verb, noun) pairs."""
    verbs = [[[v for v, _ in c] for c in cands] for cands in candidates]
    nouns = [[[n for _, n in c] for c in cands] for cands in candidates]
    actions = [list(zip(v, n)) for v, n in zip(verb_labels, noun_labels)]
    return {
        "verb_ed": lta_edit_distance(verbs, verb_labels),
        "noun_ed": lta_edit_distance(nouns, noun_labels),
        "action_ed": lta_edit_distance([[list(c) for c in cands] for cands in candidates], actions),
        "verb_aued": lta_aued(verbs, verb_labels),
        "noun_aued": lta_aued(nouns, noun_labels),
    }


# ---------------------------------------------------------------------- generation
def prompt_ids(template: StreamTemplate, conversation: list[dict[str, Any]]) -> list[int]:
    """Ids of a row's conversation up to its answer, then `\\nAssistant:` (after a stream: `]\\nAssistant:`)."""
    while conversation and conversation[-1]["role"] == "assistant":
        conversation = conversation[:-1]
    text, _ = template.render(conversation)
    return template.encode(text + template.GENERATION_PROMPT)


@torch.inference_mode()
def generate_answers(
    model: Any,
    template: StreamTemplate,
    prompts: Sequence[list[int]],
    frames: Sequence[torch.Tensor],
    *,
    max_new_tokens: int = 512,
    num_beams: int = 1,
    num_return_sequences: int = 1,
) -> list[list[str]]:
    """Decoded answers per prompt (`num_return_sequences` each, best first). `frames[i]` holds prompt i's frame
    embeddings (N, T, H). Prompts of a call form one batch, left-padded: pass one prompt per call for the exact
    unpadded computation."""
    ids = template.ids
    embeds = [
        model.embed_tokens(torch.tensor([p], device=model.device), f.to(model.device))[0]
        for p, f in zip(prompts, frames)
    ]
    length = max(e.shape[0] for e in embeds)
    hidden = embeds[0].shape[-1]
    batch = torch.zeros(len(embeds), length, hidden, dtype=embeds[0].dtype, device=model.device)  # (B, L, H)
    mask = torch.zeros(len(embeds), length, dtype=torch.long, device=model.device)
    for row, e in enumerate(embeds):
        batch[row, length - e.shape[0] :] = e
        mask[row, length - e.shape[0] :] = 1
    output = model.llm.generate(
        inputs_embeds=batch,
        attention_mask=mask,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences,
        eos_token_id=ids.eos,
        pad_token_id=ids.eos,
    )
    sequences = output.sequences if hasattr(output, "sequences") else output  # (B * R, new tokens)
    texts = [template.decode([t for t in seq.tolist() if t != ids.eos]) for seq in sequences]
    return [texts[i * num_return_sequences : (i + 1) * num_return_sequences] for i in range(len(prompts))]


def frame_embeds(model: Any, frames: torch.Tensor) -> torch.Tensor:
    """Frames from a store -> embeddings (N, T, H): uint8 pixels (N, R, R, 3) through the whole frame path, float
    features (N, T, Hv) through the connector only."""
    if frames.dtype == torch.uint8:
        return torch.cat([model.frames_to_embeds(frames[i : i + 64]) for i in range(0, len(frames), 64)])
    return model.embed_frames(frames.to(model.device))


def score_benchmark(
    dataset: str,
    rows: Sequence[Mapping[str, Any]],
    answers: Sequence[list[str]],
    categories: Sequence[str] | None = None,
    taxonomy: Any = None,
) -> tuple[dict[str, Any], list]:
    """Metrics of one benchmark and the per-sample records (question frames, answer, prediction, score)."""
    records = []
    if dataset == "ego4d-lta":
        parsed = [[taxonomy.parse(text) for text in candidates] for candidates in answers]
        labelled = [r.get("verb_labels") is not None for r in rows]
        for row, candidates, labels in zip(rows, answers, parsed):
            records.append(
                {
                    "video": row["video"],
                    "clip_uid": row["clip_uid"],
                    "last_visible_action_idx": row["last_visible_action_idx"],
                    "start_frame": row["start_frame"],
                    "end_frame": row["end_frame"],
                    "predictions": candidates,
                    "verb": [[v for v, _ in c] for c in labels],
                    "noun": [[n for _, n in c] for c in labels],
                }
            )
        metrics: dict[str, Any] = {
            "samples": len(rows),
            "labelled": sum(labelled),
            "beams": len(answers[0]) if answers else 0,
        }
        if rows and all(labelled):
            metrics.update(lta_scores(parsed, [r["verb_labels"] for r in rows], [r["noun_labels"] for r in rows]))
        return metrics, records
    procedure = dataset in ("coin-procedure", "coin-procedure-goal")
    labels = [row["labels"] for row in rows]
    texts = [candidates[0] for candidates in answers]
    accuracy, predicted = coin_scores(texts, labels, categories, procedure)
    for row, text, pred, label in zip(rows, texts, predicted, labels):
        records.append(
            {
                "video": row["video"],
                "start_frame": row["start_frame"],
                "end_frame": row["end_frame"],
                "answer": next(m["content"] for m in reversed(row["conversation"]) if m["role"] == "assistant"),
                "prediction": text,
                "predicted": [categories[i] for i in pred],
                "right": sum(p == a for p, a in zip(pred, label)),
                "steps": len(label) if procedure else 1,
            }
        )
    return {"accuracy": accuracy, "samples": len(rows), "categories": len(categories)}, records
