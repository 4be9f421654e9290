"""The paper's streaming metrics (LM-PPL, TimeDiff, Fluency, LM-Correctness) and a narration event matcher.

Design
------
Every metric is computed per conversation from one teacher-forced forward over the whole tokenized conversation
(`StreamTemplate.tokenize`), plus one extra forward per turn where the model stays silent through all of the turn's
frames (a *late* response). The procedure follows `LiveMixin.stream_evaluate` of the original project
(showlab/videollm-online, `models/modeling_live.py`) and its `compute_metrics` (`data/ego4d/narration.py`):

* The token sequence is cut into **turns** at the eos tokens of the input: a turn runs from the token after the
  previous eos to its own eos, so it holds the stream frames that lead up to an assistant response and the response.
  Tokens after the last eos (a trailing stream) belong to no turn. Turns without a learned token are skipped.
* Within a turn, *stream positions* are the learned positions whose input is `<v>` (the last `<v>` of each learned
  frame: its target is the silence token, or `]` + newline at the response frame); *language positions* are the
  other learned positions (`Assistant: ...` and eos).
* **LM-PPL**: per turn, exp of the mean cross-entropy over its language positions; averaged over turns, then over
  conversations (the original averages per-turn perplexities; `StreamMetrics.token_lm_ppl` also reports exp of the
  token-mean cross-entropy over all conversations).
* **Decision** at a stream position: `SEED_METRICS_POLICY` (`core.policy`): respond when P(silence) < `threshold`,
  or when silence is not the argmax (the original zeroes the distribution of rows under the threshold and takes the
  argmax; both agree, and for a threshold above 0.5 the second clause never fires). `threshold=0` is the plain
  argmax decision.
* **TimeDiff**: with n stream positions in a turn (the ground-truth response at the last one) and the first responding
  one at index k, the frame difference is n - k - 1 (early or on time). If none responds (late) and the turn is not
  the last one, up to m = min(frames of the next turn, frames of this turn - 1) following frames are appended to the
  prefix that ends at the last stream position (without the `]`, the assistant text or the next turn's text), each
  frame preceded by the interval token, and run through one extra forward; a response at appended frame j gives
  -(j + 1), none gives -m. The original caps m at this turn's frames minus one ("current as centre, two equal sides").
  The last turn (no future frames; the original assumes the stream's end is a signal to respond) and m = 0 give 0.
  The turn's value is |frame difference|; averaged over turns, then divided by `fps` (seconds).
* **LM-Correctness**: per turn, the number of language tokens predicted right (argmax) before the first wrong one,
  divided by the number of language tokens (1.0 when all are right); averaged over turns.
* **Fluency** (turns with both stream and language positions), over N = stream + language positions: on time,
  (n + correct language tokens) / N; early by d frames, (n - d) / N (the silences before the premature response);
  late, (n - 1) / N (every silence right, the response frame missed). Averaged over turns. As in the original a late
  response in the last turn (frame difference 0) counts as on time.

Differences from the original: the model returns logits only (no KV cache), so the late-response forward re-reads
the prefix instead of trimming a cache; the running frame count also advances over turns without learned tokens
(the original skips them before counting their frames, which misaligns the frames appended for a later late turn);
the appended frames are capped to the frames given.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..core.policy import DEFAULT_THRESHOLD, DecisionPolicy
from ..core.text import IGNORE_INDEX, StreamTemplate

SEED_METRICS_POLICY = DecisionPolicy(argmax_clause=True)
"""The seed's decision in its streaming metrics: the engines' rule with the argmax clause (see the docstring)."""


@dataclass
class TurnResult:
    """Metrics of one turn (the tokens up to and including one eos). Fields are None where they do not apply."""

    index: int  # turn index among all eos-delimited turns
    num_stream: int  # learned stream positions (frame decisions)
    num_lm: int  # learned language positions
    lm_ppl: float | None = None
    lm_nll_sum: float = 0.0
    lm_correctness: float | None = None
    num_lm_correct: int = 0  # language tokens right before the first mistake
    frame_diff: int | None = None  # signed: > 0 early, < 0 late, 0 on time
    gt_frame: int | None = None  # global index of the ground-truth response frame
    predicted_frame: int | None = None  # global index of the predicted response frame (capped when never responding)
    late_kind: str | None = None  # "extra" (extra forward), "last" (last turn), "none" (no frames to append)
    fluency: float | None = None


@dataclass
class ConversationResult:
    """Per-conversation metrics: means over its turns, with the original's defaults where no turn applies
    (LM-PPL 1, frame diff 0, fluency 1, LM-Correctness 1)."""

    lm_ppl: float
    frame_diff: float
    time_diff: float
    fluency: float
    lm_correctness: float
    fps: float
    turns: list[TurnResult] = field(default_factory=list)

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def lm_nll_sum(self) -> float:
        return sum(turn.lm_nll_sum for turn in self.turns)

    @property
    def num_lm_tokens(self) -> int:
        return sum(turn.num_lm for turn in self.turns)


@dataclass
class StreamMetrics:
    """Metrics over a set of conversations: each the mean of the per-conversation values (as the original's
    `compute_metrics`), plus `token_lm_ppl`, exp of the token-mean cross-entropy over all language tokens."""

    lm_ppl: float
    time_diff: float
    fluency: float
    lm_correctness: float
    num_turns: int
    num_conversations: int
    token_lm_ppl: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def _mean(values: Sequence[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def _logits(model: Any, input_ids: torch.Tensor, frames: torch.Tensor, frames_kwarg: str) -> torch.Tensor:
    outputs = model(input_ids=input_ids[None], **{frames_kwarg: frames})
    return outputs.logits[0].float()


@torch.inference_mode()
def evaluate_conversation(
    model: Any,
    template: StreamTemplate,
    conversation: list[dict[str, Any]],
    frames: torch.Tensor,
    fps: float = 2.0,
    threshold: float = DEFAULT_THRESHOLD,
    frames_kwarg: str = "frame_embeds",
) -> ConversationResult:
    """Streaming metrics of one conversation (see the module docstring).

    `model(input_ids=(1, L), **{frames_kwarg: frames})` must return an object with `.logits` (1, L, V), frames in
    order of their `<v>` tokens (for `LiveModel`: `frame_embeds` (N, T, H), `frame_features` or `pixel_values`).
    `frames` holds at least the conversation's frames; frame i is at time i / fps.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    ids = template.ids
    frame_tokens = template.config.frame_num_tokens
    tokenized = template.tokenize(conversation)
    device = frames.device
    input_ids = torch.tensor(tokenized.input_ids, dtype=torch.long, device=device)
    labels = torch.tensor(tokenized.labels, dtype=torch.long, device=device)
    v_mask = input_ids == ids.v_placeholder
    num_frames = int(v_mask.sum()) // frame_tokens
    if frames.shape[0] < num_frames:
        raise ValueError(f"the conversation has {num_frames} frames but only {frames.shape[0]} were given")
    logits = _logits(model, input_ids, frames[:num_frames], frames_kwarg)
    silence = ids.silence
    policy = SEED_METRICS_POLICY.with_threshold(threshold)
    # cumulative count of `<v>` tokens up to and including each position
    v_cumsum = torch.cumsum(v_mask.long(), dim=0)

    stops = (torch.nonzero(input_ids == ids.eos)[:, 0] + 1).tolist()
    starts = [0, *stops[:-1]]
    turns: list[TurnResult] = []
    frames_before = 0
    for r, (start, stop) in enumerate(zip(starts, stops)):
        turn_v = v_mask[start:stop]
        turn_num_frames = int(turn_v.sum()) // frame_tokens
        turn_labels = labels[start:stop]
        learn = turn_labels != IGNORE_INDEX
        if not learn.any():
            frames_before += turn_num_frames
            continue
        turn_logits = logits[start:stop]
        stream = learn & turn_v
        lm = learn & ~turn_v
        result = TurnResult(index=r, num_stream=int(stream.sum()), num_lm=int(lm.sum()))

        if result.num_lm:
            _score_language(result, turn_logits[lm], turn_labels[lm])

        if result.num_stream:
            positions = torch.nonzero(stream)[:, 0] + start
            last = int(positions[-1])
            result.gt_frame = int(v_cumsum[last]) // frame_tokens - 1
            decisions = torch.nonzero(policy.responds_to_logits(logits[positions], silence))[:, 0]
            if len(decisions):
                frame_diff = result.num_stream - int(decisions[0]) - 1
            elif r == len(stops) - 1:
                frame_diff, result.late_kind = 0, "last"
            else:
                next_frames = int(v_mask[stops[r] : stops[r + 1]].sum()) // frame_tokens
                to_append = min(next_frames, turn_num_frames - 1, frames.shape[0] - (frames_before + turn_num_frames))
                if to_append <= 0:
                    frame_diff, result.late_kind = 0, "none"
                else:
                    result.late_kind = "extra"
                    frame_diff = -_late_response(
                        model,
                        input_ids[: last + 1],
                        frames,
                        frames_before + turn_num_frames,
                        to_append,
                        template,
                        policy,
                        frames_kwarg,
                    )
            result.frame_diff = frame_diff
            result.predicted_frame = result.gt_frame - frame_diff

        if result.num_lm and result.num_stream:
            result.fluency = _fluency(result)
        turns.append(result)
        frames_before += turn_num_frames
    return _conversation_result(turns, fps)


def _score_language(result: TurnResult, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """A turn's language metrics from the logits and labels of its language positions: the summed cross-entropy,
    perplexity, and how many tokens are right before the first wrong one (`lm_correctness`, their share)."""
    nll = F.cross_entropy(logits, labels, reduction="none")
    result.lm_nll_sum = float(nll.sum())
    result.lm_ppl = math.exp(float(nll.mean()))
    wrong = torch.nonzero(logits.argmax(dim=-1) != labels)[:, 0]
    result.num_lm_correct = int(wrong[0]) if len(wrong) else result.num_lm
    result.lm_correctness = result.num_lm_correct / result.num_lm


def _fluency(result: TurnResult) -> float:
    """The share of a turn's stream and language tokens the model gets right (see the module docstring): on time,
    every silence and the correct prefix of the answer; early by `d` frames, the silences kept before speaking;
    late, every silence but the response frame."""
    total = result.num_lm + result.num_stream
    if result.frame_diff == 0:
        return (result.num_stream + result.num_lm_correct) / total
    if result.frame_diff > 0:
        return (result.num_stream - result.frame_diff) / total
    return (result.num_stream - 1) / total


def _conversation_result(turns: list[TurnResult], fps: float) -> ConversationResult:
    """The conversation's metrics: the mean of its turns' (1 for a metric no turn has, 0 for the timing)."""
    frame_diff = _mean([abs(t.frame_diff) for t in turns if t.frame_diff is not None], 0.0)
    return ConversationResult(
        lm_ppl=_mean([t.lm_ppl for t in turns if t.lm_ppl is not None], 1.0),
        frame_diff=frame_diff,
        time_diff=frame_diff / fps,
        fluency=_mean([t.fluency for t in turns if t.fluency is not None], 1.0),
        lm_correctness=_mean([t.lm_correctness for t in turns if t.lm_correctness is not None], 1.0),
        fps=fps,
        turns=turns,
    )


def _late_response(
    model: Any,
    prefix_ids: torch.Tensor,
    frames: torch.Tensor,
    first_frame: int,
    num_append: int,
    template: StreamTemplate,
    policy: DecisionPolicy,
    frames_kwarg: str,
) -> int:
    """Frames after the turn's last frame until the model responds: j + 1 for a response at appended frame j, or
    `num_append` when it stays silent on all of them. One forward over prefix + appended frames."""
    ids = template.ids
    frame_tokens = template.config.frame_num_tokens
    unit = ([ids.interval] if ids.interval is not None else []) + [ids.v_placeholder] * frame_tokens
    appended = torch.tensor(unit * num_append, dtype=torch.long, device=prefix_ids.device)
    prefix_frames = int((prefix_ids == ids.v_placeholder).sum()) // frame_tokens
    all_frames = torch.cat([frames[:prefix_frames], frames[first_frame : first_frame + num_append]])
    logits = _logits(model, torch.cat([prefix_ids, appended]), all_frames, frames_kwarg)
    positions = len(prefix_ids) + len(unit) - 1 + len(unit) * torch.arange(num_append, device=prefix_ids.device)
    decisions = torch.nonzero(policy.responds_to_logits(logits[positions], ids.silence))[:, 0]
    return int(decisions[0]) + 1 if len(decisions) else num_append


def aggregate(results: Iterable[ConversationResult]) -> StreamMetrics:
    """Mean of the per-conversation metrics (the original's `compute_metrics`)."""
    results = list(results)
    nll = sum(result.lm_nll_sum for result in results)
    tokens = sum(result.num_lm_tokens for result in results)
    return StreamMetrics(
        lm_ppl=_mean([result.lm_ppl for result in results], 1.0),
        time_diff=_mean([result.time_diff for result in results], 0.0),
        fluency=_mean([result.fluency for result in results], 1.0),
        lm_correctness=_mean([result.lm_correctness for result in results], 1.0),
        num_turns=sum(result.num_turns for result in results),
        num_conversations=len(results),
        token_lm_ppl=math.exp(nll / tokens) if tokens else 1.0,
    )


# ---------------------------------------------------------------------- narration event matching
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_sentence(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def _same_normalized(a: str, b: str) -> bool:
    return normalize_sentence(a) == normalize_sentence(b)


@dataclass
class EventMatch:
    recall: float
    precision: float
    f1: float
    num_matched: int
    num_predicted: int
    num_reference: int


def _time_text(turn: Any) -> tuple[float, str]:
    if isinstance(turn, Mapping):
        text = turn.get("content", turn.get("text"))
        return float(turn["time"]), "" if text is None else str(text)
    time, text = turn
    return float(time), str(text)


def event_match(
    predicted_turns: Sequence[Any],
    reference_turns: Sequence[Any],
    window: float = 1.0,
    same: Callable[[str, str], bool] | None = None,
) -> EventMatch:
    """Recall / precision / F1 of predicted narrations against reference ones.

    Turns are `(time, text)` pairs or mappings with `time` and `content` (or `text`). A reference is found when a
    predicted turn within `window` seconds (inclusive) has a matching sentence (`same(predicted, reference)`;
    default: equal after `normalize_sentence`). Each prediction matches at most one reference and vice versa; the
    matching has maximum size (augmenting paths). A ratio with a zero denominator is 0.
    """
    same = same or _same_normalized
    predicted = [_time_text(turn) for turn in predicted_turns]
    reference = [_time_text(turn) for turn in reference_turns]
    candidates = [
        [
            p
            for p, (p_time, p_text) in enumerate(predicted)
            if abs(p_time - r_time) <= window + 1e-9 and same(p_text, r_text)
        ]
        for r_time, r_text in reference
    ]
    owner: dict[int, int] = {}  # predicted index -> reference index

    def augment(r: int, seen: set[int]) -> bool:
        for p in candidates[r]:
            if p in seen:
                continue
            seen.add(p)
            if p not in owner or augment(owner[p], seen):
                owner[p] = r
                return True
        return False

    matched = sum(augment(r, set()) for r in range(len(reference)))
    recall = matched / len(reference) if reference else 0.0
    precision = matched / len(predicted) if predicted else 0.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return EventMatch(recall, precision, f1, matched, len(predicted), len(reference))
