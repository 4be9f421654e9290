"""COIN (`COIN.json`) -> the seed's five COIN benchmarks as stream conversations with frame ranges.

`COIN.json` holds `{"database": {video_id: {"class", "subset": "training" | "testing", "start", "end",
"annotation": [{"segment": [start, end], "label", "id"}], ...}}}`. Each benchmark asks one question after a stretch of
frames and expects one answer drawn from a closed list: the step (`step`), the task (`task`), the next step (`next`),
the next up to five steps (`procedure`), and the same given the task (`procedure-goal`). A row is a training row
(`common.make_row`) plus `answer` (the assistant text) and `labels` (indices of the answer's steps or task in the
category list), so the same rows train the model and score it.

As in the seed: a step's frames run from ceil(start) to ceil(end) inclusive, clamped to the video's frames; the task
question sees the video's `start`..`end`; answers are the label with its first letter capitalised (Python's
`str.capitalize`) and a full stop; the category lists hold every step and task of the file (all subsets, sorted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ...utils.errors import UserError
from .common import (
    Converted,
    ConvertOptions,
    Loader,
    ceil_frame,
    make_row,
    read_json,
    require_video_frames,
    with_system_prompt,
)

BENCHMARKS = ("step", "task", "next", "procedure", "procedure-goal")
SPLITS = {"train": "training", "test": "testing"}
ANNOTATION_FILES = ("COIN.json", "coin.json", "annotations/COIN.json", "annotations/coin.json")
MAX_PROCEDURE_STEPS = 5

# The seed's questions: a checkpoint trained on them expects these exact words.
STEP_QUESTION = "What is the action in the video? Format your answer concisely. No extra text output."
TASK_QUESTION = "What is the overall activity in the video? Format your answer concisely. No extra text output."
NEXT_QUESTION = "What is the next action for the video? Format your answer concisely. No extra text output."
PROCEDURE_QUESTION = (
    "What is the next {n} actions for the video? Format your answer concisely, listing each action "
    "on a new line with a number prefix. No extra text output."
)
GOAL_NEXT_QUESTION = (
    "To {task}, what is the next action for the video? Format your answer concisely. No extra text output."
)
GOAL_PROCEDURE_QUESTION = (
    "To {task}, what is the next {n} actions for the video? Format your answer concisely, "
    "listing each action on a new line with a number prefix. No extra text output."
)

# Two labels with punctuation that reads badly in an answer (the seed rewrites them the same way).
_STEP_REWRITES = {
    "process (crop, fold) paper": "crop and fold paper",
    "try to press gun head, spray residual old grease": "try to press gun head to spray residual old grease",
}
# CamelCase class names split into lower-case words break these acronyms apart; put them back.
_ACRONYMS = (("s i m", "SIM"), ("n b a", "NBA"), ("s s d", "SSD"), ("r j45", "RJ45"))


@dataclass(frozen=True)
class CoinStep:
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class CoinVideo:
    id: str
    task: str
    subset: str
    start: float
    end: float
    steps: tuple[CoinStep, ...]


def clean_step(label: str) -> str:
    return _STEP_REWRITES.get(label, label)


def clean_task(name: str) -> str:
    """A COIN class name in words: `PutOnHair` -> `put on hair`, `ReplaceCDDriveWithSSD` -> `replace CD drive with
    SSD` (each capital starts a lower-case word; spelled-out acronyms are joined again)."""
    words = "".join(f" {char.lower()}" if char.isupper() else char for char in name)
    words = words.replace(" t v", " TV").replace(" c d", " CD")
    for spelled, acronym in _ACRONYMS:
        words = words.replace(spelled, acronym)
    return words.strip()


def answer_text(text: str) -> str:
    """How an answer reads: `crop paper` -> `Crop paper.`."""
    return text.capitalize() + "."


def procedure_text(steps: list[str]) -> str:
    return "\n".join(f"{i + 1}. {answer_text(step)}" for i, step in enumerate(steps))


def find_annotation(root: str | Path) -> Path:
    root = Path(root)
    for name in ANNOTATION_FILES:
        if (root / name).is_file():
            return root / name
    raise UserError(f"no COIN annotation in {root}: expected {root / 'COIN.json'} (the COIN dataset's COIN.json)")


def read_coin(path: str | Path) -> list[CoinVideo]:
    """The videos of a `COIN.json`, in file order; raises UserError naming the first malformed entry."""
    path = Path(path)
    data = read_json(path)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise UserError(f"{path} is not COIN's format: expected an object with a 'database' map of videos")
    videos = []
    for video_id, entry in database.items():
        try:
            steps = tuple(
                CoinStep(float(s["segment"][0]), float(s["segment"][1]), clean_step(str(s["label"])))
                for s in entry["annotation"]
            )
            videos.append(
                CoinVideo(
                    str(video_id),
                    clean_task(str(entry["class"])),
                    str(entry["subset"]),
                    float(entry["start"]),
                    float(entry["end"]),
                    steps,
                )
            )
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise UserError(
                f"{path}: video {video_id!r} is malformed ({type(error).__name__}: {error}); each video "
                "needs class, subset, start, end and annotation [{segment, label}]"
            ) from error
    return videos


@dataclass(frozen=True)
class CoinCategories:
    """The closed answer lists: every step and every task of the annotation file, as answers read, sorted."""

    steps: tuple[str, ...]
    tasks: tuple[str, ...]

    @classmethod
    def from_videos(cls, videos: list[CoinVideo]) -> CoinCategories:
        return cls(
            steps=tuple(sorted({answer_text(s.text) for v in videos for s in v.steps})),
            tasks=tuple(sorted({answer_text(v.task) for v in videos})),
        )

    def for_benchmark(self, benchmark: str) -> tuple[str, ...]:
        return self.tasks if benchmark == "task" else self.steps


def coin_rows(
    videos: list[CoinVideo],
    benchmark: str,
    split: str,
    video_frames: Mapping[str, int],
    fps: float,
    system_prompt: str | None,
    categories: CoinCategories | None = None,
) -> Converted:
    """Rows of one benchmark on one split; videos without frames, or steps whose frames are empty, are skipped."""
    if benchmark not in BENCHMARKS:
        raise UserError(f"unknown COIN benchmark {benchmark!r}; valid benchmarks: {', '.join(BENCHMARKS)}")
    if split not in SPLITS:
        raise UserError(f"COIN has no {split!r} split; valid splits: {', '.join(SPLITS)}")
    categories = categories or CoinCategories.from_videos(videos)
    index = {text: i for i, text in enumerate(categories.for_benchmark(benchmark))}
    result = Converted()
    for video in videos:
        if SPLITS[split] not in video.subset.lower():
            continue
        if video.id not in video_frames:
            result.skipped["video without frames"] += 1
            continue
        last = video_frames[video.id] - 1
        for question, start, end, answers in _questions(video, benchmark):
            first, stop = ceil_frame(start, fps, 0, last), ceil_frame(end, fps, 0, last) + 1
            if stop <= first:
                result.skipped["segment ends before it starts"] += 1
                continue
            answer = answer_text(answers[0]) if len(answers) == 1 else procedure_text(answers)
            conversation = with_system_prompt(
                [
                    {"role": "user", "content": question},
                    {"role": "stream", "num_frames": stop - first, "learn": True},
                    {"role": "assistant", "content": answer, "learn": True},
                ],
                system_prompt,
            )
            labels = [index[answer_text(a)] for a in answers]
            result.rows.append(make_row(video.id, f"coin-{benchmark}", conversation, first, labels=labels))
    return result


def _questions(video: CoinVideo, benchmark: str) -> list[tuple[str, float, float, list[str]]]:
    """(question, start, end, answers) of each sample of one video: the frames of `start..end` come before the
    question's answer."""
    if benchmark == "task":
        return [(TASK_QUESTION, video.start, video.end, [video.task])]
    if benchmark == "step":
        return [(STEP_QUESTION, step.start, step.end, [step.text]) for step in video.steps]
    texts = [step.text for step in video.steps]
    out = []
    for i, step in enumerate(video.steps[:-1]):
        following = texts[i + 1 : i + 1 + (1 if benchmark == "next" else MAX_PROCEDURE_STEPS)]
        n = len(following)
        if benchmark == "procedure-goal":
            question = GOAL_NEXT_QUESTION if n == 1 else GOAL_PROCEDURE_QUESTION
        else:
            question = NEXT_QUESTION if n == 1 else PROCEDURE_QUESTION
        out.append((question.format(task=video.task, n=n), step.start, step.end, following))
    return out


def coin_loader(benchmark: str) -> Loader:
    """The registry's entry for one benchmark (`coin-step`, ...): rows of `options.split` (train or test)."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown COIN benchmark {benchmark!r}; valid benchmarks: {', '.join(BENCHMARKS)}")

    def load(options: ConvertOptions) -> Converted:
        videos = read_coin(find_annotation(options.anno_root))
        return coin_rows(
            videos, benchmark, options.split, require_video_frames(options, "COIN"), options.fps, options.system_prompt
        )

    load.__name__ = f"load_coin_{benchmark.replace('-', '_')}"
    return load
