"""Ego4D long-term action anticipation (`fho_lta_{train,val,test_unannotated}.json` + `fho_lta_taxonomy.json`) ->
stream conversations that show 8 actions and ask for the next Z = 20, and the parser that maps free text back to
verb and noun labels.

The annotation files hold `{"clips": [{"clip_uid", "video_uid", "clip_parent_start_sec", "action_clip_start_sec",
"action_clip_end_sec", "action_idx", "verb_label", "noun_label", ...}]}` (no labels in `test_unannotated`); the
taxonomy holds `{"verbs": [...], "nouns": [...]}` with entries like `put_(place,_leave,_drop)`. As in the seed: the
actions of a clip, ordered by `action_idx`, give one sample per window of 8 visible + 20 future actions (clips with
fewer than 28 are skipped); the frames run from round(start of the first visible action) to round(end of the last
one) inclusive, in the parent video's frames (times are `clip_parent_start_sec` + the action's clip time); the answer
lists the future actions as `1. Verb noun.` lines, each word the first name of its taxonomy entry.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...utils.errors import UserError
from .common import Converted, ConvertOptions, make_row, read_json, require_video_frames, with_system_prompt

NUM_VISIBLE = 8
NUM_FUTURE = 20  # Z
SPLIT_FILES = {"train": "fho_lta_train.json", "val": "fho_lta_val.json", "test": "fho_lta_test_unannotated.json"}
TAXONOMY_FILE = "fho_lta_taxonomy.json"

# The seed's question: a checkpoint trained on it expects these exact words.
QUESTION = (
    "After {num_frames} video frames, anticipate the next {z} actions. Format your answer concisely, listing "
    "each action on a new line with a number prefix. No extra text output."
)

# Taxonomy entries whose first name would collide with another entry's (the seed renames them the same way).
_RENAMES = {
    "pot_(planter)": "flowerpot",
    "bat_(sports)": "sport bat",
    "bat_(tool)": "bat",
    "nut_(food)": "nuts",
    "nut_(tool)": "nut",
    "chip_(food)": "snack",
    "chip_(wood'_metal),": "chips",
    "chip_(wood,_metal)": "chip",
}
# A line of a numbered answer: `3. Take knife.` (or `Step 3. ...`): what follows the number is the action.
_NUMBERED_LINE = re.compile(r"(?:\d+\.|\S+\s\d+\.)\s*(.*)")


def taxonomy_word(entry: str) -> str:
    """`put_(place,_leave,_drop)` -> `put`, `cutting_board` -> `cutting board`."""
    if entry in _RENAMES:
        return _RENAMES[entry]
    return entry.split("(")[0].removesuffix("_").replace("_", " ") if "(" in entry else entry.replace("_", " ")


def find_file(root: Path, name: str) -> Path:
    for path in (root / name, root / "annotations" / name):
        if path.is_file():
            return path
    raise UserError(
        f"no {name} in {root}: expected {root / name} (or {root / 'annotations' / name}), from Ego4D's "
        "long-term action anticipation annotations"
    )


class LtaTaxonomy:
    """Verb and noun words, and the map from `verb noun` text to labels (nearest by edit distance when not exact)."""

    def __init__(self, verbs: list[str], nouns: list[str]):
        self.verbs = [taxonomy_word(v) for v in verbs]
        self.nouns = [taxonomy_word(n) for n in nouns]
        self.actions: dict[str, tuple[int, int]] = {}
        counts: Counter = Counter()
        for i, verb in enumerate(self.verbs):
            for j, noun in enumerate(self.nouns):
                self.actions[f"{verb} {noun}"] = (i, j)  # a text two pairs share keeps the later pair, as the seed
                counts[f"{verb} {noun}"] += 1
        # the fallback when an answer has no parsable line: the most frequent text, the first one on a tie
        self.fallback = max(counts, key=counts.get)
        # nearest-text ties go to the alphabetically first text (the seed takes min over (distance, text))
        self._keys = sorted(self.actions)

    @classmethod
    def read(cls, path: str | Path) -> LtaTaxonomy:
        data = read_json(Path(path))
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("verbs"), list)
            or not isinstance(data.get("nouns"), list)
        ):
            raise UserError(f"{path} is not an LTA taxonomy: expected {{'verbs': [...], 'nouns': [...]}}")
        return cls(data["verbs"], data["nouns"])

    def action_text(self, verb: int, noun: int) -> str:
        return f"{self.verbs[verb].capitalize()} {self.nouns[noun]}."

    def answer_text(self, labels: list[tuple[int, int]]) -> str:
        return "\n".join(f"{k + 1}. {self.action_text(v, n)}" for k, (v, n) in enumerate(labels))

    def nearest(self, texts: list[str]) -> list[tuple[int, int]]:
        """Labels of each text: its own when it is an action text, else those of the nearest one."""
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cdist

        out: list[tuple[int, int] | None] = [self.actions.get(t) for t in texts]
        missing = [k for k, labels in enumerate(out) if labels is None]
        if missing:
            distances = cdist([texts[k] for k in missing], self._keys, scorer=Levenshtein.distance, workers=-1)
            for k, row in zip(missing, distances):
                out[k] = self.actions[self._keys[int(row.argmin())]]
        return out  # type: ignore[return-value]

    def parse(self, text: str, num_actions: int = NUM_FUTURE) -> list[tuple[int, int]]:
        """Free text -> exactly `num_actions` (verb, noun) labels: numbered lines are read in order, lower-cased and
        stripped of the full stop; too few are padded with the last one (none: the fallback action)."""
        actions = []
        for line in text.strip(" \n").split("\n"):
            match = _NUMBERED_LINE.search(line)
            if match:
                actions.append(match.group(1).lower().rstrip("."))
        labels = self.nearest(actions[:num_actions]) if actions else []
        if not labels:
            labels = self.nearest([self.fallback])
        return labels + [labels[-1]] * (num_actions - len(labels))


@dataclass(frozen=True)
class LtaAction:
    video: str
    start: float
    end: float
    index: int
    verb: int | None
    noun: int | None


def read_clips(path: str | Path) -> dict[str, list[LtaAction]]:
    """Actions per clip, ordered by `action_idx`."""
    path = Path(path)
    data = read_json(path)
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, list):
        raise UserError(f"{path} is not an LTA annotation file: expected an object with a 'clips' list")
    by_clip: dict[str, list[LtaAction]] = defaultdict(list)
    for number, clip in enumerate(clips):
        try:
            parent = float(clip["clip_parent_start_sec"])
            by_clip[str(clip["clip_uid"])].append(
                LtaAction(
                    str(clip["video_uid"]),
                    parent + float(clip["action_clip_start_sec"]),
                    parent + float(clip["action_clip_end_sec"]),
                    int(clip["action_idx"]),
                    None if clip.get("verb_label") is None else int(clip["verb_label"]),
                    None if clip.get("noun_label") is None else int(clip["noun_label"]),
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(
                f"{path}: clips[{number}] is malformed ({type(error).__name__}: {error}); each entry "
                "needs clip_uid, video_uid, clip_parent_start_sec, action_clip_start_sec, "
                "action_clip_end_sec and action_idx"
            ) from error
    return {clip: sorted(actions, key=lambda a: a.index) for clip, actions in by_clip.items()}


def round_frame(time: float, fps: float, low: int, high: int) -> int:
    """The nearest frame to `time`, clamped (the seed's round_time_by_fps: Python's round, halves to even)."""
    return min(max(round(time * fps), low), high)


def lta_rows(
    clips: Mapping[str, list[LtaAction]],
    taxonomy: LtaTaxonomy,
    video_frames: Mapping[str, int],
    fps: float,
    system_prompt: str | None,
    z: int = NUM_FUTURE,
    visible: int = NUM_VISIBLE,
) -> Converted:
    """One row per window of `visible` + `z` actions. Rows carry `verb_labels` / `noun_labels` (None without
    labels), `clip_uid` and `last_visible_action_idx` (the key of the challenge's prediction file)."""
    result = Converted()
    for clip_uid, actions in clips.items():
        if len(actions) < visible + z:
            result.skipped["clip with too few actions"] += 1
            continue
        for i in range(len(actions) - visible - z + 1):
            seen, future = actions[i : i + visible], actions[i + visible : i + visible + z]
            video = seen[0].video
            if video not in video_frames:
                result.skipped["video without frames"] += 1
                continue
            last = video_frames[video] - 1
            first, stop = round_frame(seen[0].start, fps, 0, last), round_frame(seen[-1].end, fps, 0, last) + 1
            if stop <= first:
                result.skipped["actions end before they start"] += 1
                continue
            labelled = all(a.verb is not None and a.noun is not None for a in future)
            conversation: list[dict[str, Any]] = [
                {"role": "user", "content": QUESTION.format(num_frames=stop - first, z=z)},
                {"role": "stream", "num_frames": stop - first, "learn": labelled},
            ]
            if labelled:
                labels = [(a.verb, a.noun) for a in future]
                conversation.append({"role": "assistant", "content": taxonomy.answer_text(labels), "learn": True})
            result.rows.append(
                make_row(
                    video,
                    "ego4d-lta",
                    with_system_prompt(conversation, system_prompt),
                    first,
                    clip_uid=clip_uid,
                    last_visible_action_idx=seen[-1].index,
                    verb_labels=[a.verb for a in future] if labelled else None,
                    noun_labels=[a.noun for a in future] if labelled else None,
                )
            )
    return result


def load_lta(options: ConvertOptions) -> Converted:
    """The registry's entry (`ego4d-lta`): splits train, val and test (`test_unannotated`, no labels)."""
    if options.split not in SPLIT_FILES:
        raise UserError(f"Ego4D LTA has no {options.split!r} split; valid splits: {', '.join(SPLIT_FILES)}")
    root = Path(options.anno_root)
    taxonomy = LtaTaxonomy.read(find_file(root, TAXONOMY_FILE))
    clips = read_clips(find_file(root, SPLIT_FILES[options.split]))
    return lta_rows(clips, taxonomy, require_video_frames(options, "Ego4D LTA"), options.fps, options.system_prompt)
