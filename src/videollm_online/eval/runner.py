"""`videollm-online eval`: one entry for every dataset the project can score a model on.

* `world`: a synthetic world directory (what `data synth-world` writes): the streaming metrics on its conversations,
  and event recall and precision of what the engine says when it narrates each video (each video sampled once at the
  model's fps and resolution, the `narrate` sampler).
* `coin-step`, `coin-task`, `coin-next`, `coin-procedure`, `coin-procedure-goal`, `ego4d-lta`: the seed's offline
  benchmarks (`benchmarks`), on preprocessed frames or features.
* any other stream dataset of `data.datasets.DATASETS` (`ego4d-narration`, ...): the streaming metrics on its rows.

Under torchrun every rank takes every world_size-th sample and rank 0 gathers the per-sample results (in dataset
order) and computes the metrics, so one GPU and many give the same numbers.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.model import LiveModel
from ..core.policy import DecisionPolicy
from ..core.text import StreamTemplate
from ..data.frames import FrameStore
from ..engine import EngineConfig, open_session
from ..engine.batch import engine_in_use
from ..engine.quant import quantize_linears
from ..engine.static import SlotBackend
from ..utils.distributed import gather, shard
from ..utils.errors import UserError
from ..utils.files import read_jsonl
from ..video import open_video
from .events import EVENT_FIELDS, event_field_counts, same_event
from .metrics import aggregate, evaluate_conversation, event_match

logger = logging.getLogger(__name__)
WORLD_DATASETS = ("world", "synth-world")  # synth-world: the name before the benchmarks came
BENCHMARK_DATASETS = ("coin-step", "coin-task", "coin-next", "coin-procedure", "coin-procedure-goal", "ego4d-lta")
DEFAULT_SPLITS = {"ego4d-lta": "val", **{name: "test" for name in BENCHMARK_DATASETS if name.startswith("coin-")}}


def dataset_names() -> list[str]:
    """Every name `eval --dataset` takes."""
    from ..data.datasets import DATASETS

    return ["world", *BENCHMARK_DATASETS, *sorted(name for name in DATASETS if name not in BENCHMARK_DATASETS)]


@dataclass
class EvalOptions:
    dataset: str
    """Dataset name: world, coin-step, coin-task, coin-next, coin-procedure, coin-procedure-goal, ego4d-lta, or a
    stream dataset of `data convert`."""
    data_root: Path
    """The dataset's directory (a synthetic world, or the annotation files)."""
    split: str | None = None
    """Default: test for COIN, val for the rest."""
    frames: Path | None = None
    """Preprocessed frames or features of the videos. Default: `data_root/frames`, else `data_root/features`."""
    limit: int | None = None
    """Evaluate only the first N videos (world) or samples (None: all)."""
    threshold: float | None = None
    """Decision threshold of the streaming metrics. Default: the model's."""
    window: float = 1.0
    """Seconds within which a said sentence matches a ground-truth narration."""
    max_new_tokens: int = 512
    """Longest benchmark answer in tokens (the seed's 512; world narration uses the engine's)."""
    num_beams: int = 5
    """Ego4D LTA: beams and returned candidates (K)."""
    batch_size: int = 1
    """Benchmark prompts generated together."""
    progress: bool = True
    """Show a progress bar."""
    engine: str = "default"
    """World narration: the engine that narrates (`engine.open_session`); the teacher-forced metrics need none."""
    cache_tokens: int | None = None
    """World narration on the fast engine: tokens kept per video (the memory policy); None: all."""
    ahead: int = 16
    """World narration on the fast engine: frames per forward (`StreamSession.push_frames`); 1: frame by frame."""
    weights: str | None = None
    """"fp8" / "int8": the LLM's decoder linears in one byte (quantised in place before anything runs): the narration
    runs on the fast engine, and the teacher-forced metrics (LM-PPL, TimeDiff, Fluency, LM-Correctness) run the
    model's own forward on the same one-byte weights."""

    def __post_init__(self) -> None:
        self.data_root = Path(self.data_root)
        self.frames = None if self.frames is None else Path(self.frames)
        names = dataset_names()
        if self.dataset not in names and self.dataset != "synth-world":
            raise UserError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(names)}")
        for name in ("limit", "max_new_tokens", "num_beams", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        from ..utils.checks import check_number

        try:
            check_number("window", self.window, low=0, low_open=True, high=60)
        except ValueError as error:
            raise UserError(f"--{error}") from error
        if not self.data_root.is_dir():
            raise UserError(f"no such directory: {self.data_root} (--data-root: the {self.dataset} dataset's files)")
        if self.split is None:
            self.split = DEFAULT_SPLITS.get(self.dataset, "val")


# ---------------------------------------------------------------------- world
def evaluate_world(
    model: LiveModel,
    template: StreamTemplate,
    root: str | Path,
    *,
    limit: int | None = None,
    threshold: float | None = None,
    window: float = 1.0,
    max_new_tokens: int = 32,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    engine: str = "default",
    cache_tokens: int | None = None,
    ahead: int = 16,
    weights: str | None = None,
) -> dict:
    """Streaming metrics of the world's conversations, and event recall / precision of the engine's narration: a
    ground-truth narration is found when a turn within `window` seconds states the same canonical event
    (`events.same_event`: the same kind, object colour and shape, and size and destination where both say
    them, read with the generator's own phrase tables), whichever synonym or tense each sentence uses."""
    from tqdm import tqdm

    root = Path(root)
    if not (root / "conversations.jsonl").exists() or not (root / "annotations").is_dir():
        raise UserError(
            f"{root} is not a synthetic world: expected {root / 'conversations.jsonl'} and "
            f"{root / 'annotations'}/ (write one with `videollm-online data synth-world`)"
        )
    rows = read_jsonl(root / "conversations.jsonl")
    videos = sorted({row["video"] for row in rows})[:limit]
    fps = model.config.frame_fps
    threshold = DecisionPolicy.for_model(model.config, threshold).threshold
    if weights is not None:  # before the first video: every metric on the same one-byte weights
        quantize_linears(model.base_llm, weights)
    parts = []  # per video: (conversation results, event match)
    with torch.inference_mode():
        for video in tqdm(shard(videos, rank, world_size), desc="eval", unit="video", disable=not progress):
            with open_video(
                str(root / "videos" / f"{video}.mp4"), fps=fps, resolution=model.config.frame_resolution
            ) as stream:
                images = [frame.image for frame in stream]
            embeds = torch.cat([model.frames_to_embeds(images[i : i + 32]) for i in range(0, len(images), 32)])
            results = []
            for row in (r for r in rows if r["video"] == video):
                needed = sum(m.get("num_frames", 0) for m in row["conversation"] if m["role"] == "stream")
                results.append(
                    evaluate_conversation(
                        model, template, row["conversation"], embeds[:needed], fps=fps, threshold=threshold
                    )
                )
            session = open_session(
                model,
                template,
                EngineConfig(threshold=threshold, max_new_tokens=max_new_tokens),
                engine,
                cache_tokens,
                ahead=ahead,
                weights=weights,
            )
            said = []
            if ahead > 1 and isinstance(session.backend, SlotBackend):  # the fast engine: frames `ahead` at a time
                events = session.push_frames([index / fps for index in range(len(embeds))], embeds, ahead=ahead)
                said += [(e.video_time, e.text) for e in events]
            else:
                for index, frame_embeds in enumerate(embeds):
                    said += [(e.video_time, e.text) for e in session.push_frame(index / fps, frame_embeds)]
            annotation = json.loads((root / "annotations" / f"{video}.json").read_text())
            narrations = [(n["time"], n["text"]) for n in annotation["narrations"]]
            parts.append(
                (
                    results,
                    event_match(said, narrations, window=window, same=same_event),
                    event_field_counts(said, narrations, window=window),
                )
            )
    parts = gather(parts, world_size)
    metrics = aggregate([result for results, _, _ in parts for result in results]).to_dict()
    matches = [match for _, match, _ in parts]
    fields = {name: sum(counts[name] for _, _, counts in parts) for name in parts[0][2]} if parts else {}
    matched = sum(m.num_matched for m in matches)
    predicted = sum(m.num_predicted for m in matches)
    reference = sum(m.num_reference for m in matches)
    metrics.update(
        {
            "event_recall": matched / reference if reference else 0.0,
            "event_precision": matched / predicted if predicted else 0.0,
            "turns_said": predicted,
            "narrations": reference,
            "videos": len(videos),
            "threshold": threshold,
            "window_s": window,
            "engine": engine_in_use(engine, cache_tokens, weights),
            "cache_tokens": cache_tokens,
            "weights": weights,
        }
    )
    if fields:  # why narrations are missed (events.event_field_counts): said near them, then part by part
        metrics["event_turn_near"] = fields["near"] / fields["narrations"] if fields["narrations"] else 0.0
        for name in EVENT_FIELDS:
            total = fields["target_said" if name == "target" else "parsed"]
            metrics[f"event_{name}_right"] = fields[name] / total if total else 0.0
    return metrics


# ---------------------------------------------------------------------- datasets on preprocessed frames
def open_frames(options: EvalOptions) -> FrameStore:
    """The frame store of a dataset: `--frames`, or `frames/` or `features/` under the data root."""
    candidates = [options.frames] if options.frames else [options.data_root / "frames", options.data_root / "features"]
    for directory in candidates:
        if directory.is_dir():
            files = sorted(directory.glob("*.safetensors"))
            if not files:
                break
            from safetensors import safe_open

            with safe_open(files[0], framework="pt") as file:
                key = "frames" if "frames" in file.keys() else "features"
            return FrameStore(directory, key)
    where = options.frames or f"{options.data_root / 'frames'} (or {options.data_root / 'features'})"
    raise UserError(
        f"no preprocessed frames for {options.dataset}: expected one .safetensors file per video in "
        f"{where}; make them with `videollm-online data preprocess VIDEOS --out DIR --preset ...`"
    )


def store_fps(store: FrameStore, default: float) -> float:
    """The frame rate the store was sampled at (its metadata), else `default`."""
    first = next(iter(sorted(store.directory.glob("*.safetensors"))), None)
    fps = store.metadata(first.stem).get("fps") if first is not None else None
    return float(fps) if fps else default


def load_rows(options: EvalOptions, store: FrameStore, fps: float) -> list[dict[str, Any]]:
    from ..data.datasets import ConvertOptions, get_loader
    from ..data.datasets.common import frames_from_store

    try:
        convert_options = ConvertOptions(
            anno_root=options.data_root, split=options.split, fps=fps, video_frames=frames_from_store(store.directory)
        )
    except ValueError as error:  # an unknown split
        raise UserError(f"{options.dataset}: {error}") from error
    converted = get_loader(options.dataset)(convert_options)
    for reason, count in sorted(converted.skipped.items()):
        logger.warning("%s: skipped %d (%s)", options.dataset, count, reason)
    rows = converted.rows[: options.limit]
    if not rows:
        raise UserError(
            f"{options.dataset} ({options.split}) has no samples with frames in {store.directory}: check "
            "that the frame files are named by video id"
        )
    return rows


def row_embeds(model: LiveModel, store: FrameStore, row: dict[str, Any]) -> torch.Tensor:
    from .benchmarks import frame_embeds

    frames = store.load(row["video"], row["start_frame"], row["end_frame"])
    if frames.shape[0] != row["end_frame"] - row["start_frame"]:
        raise UserError(
            f"{store.path(row['video'])} has fewer frames than the annotation needs "
            f"({row['start_frame']}..{row['end_frame']})"
        )
    return frame_embeds(model, frames)


def evaluate_stream_dataset(
    model: LiveModel, template: StreamTemplate, options: EvalOptions, *, rank: int = 0, world_size: int = 1
) -> dict[str, Any]:
    """The streaming metrics on every row of a stream dataset."""
    from tqdm import tqdm

    store = open_frames(options)
    fps = store_fps(store, model.config.frame_fps)
    rows = load_rows(options, store, fps)
    threshold = DecisionPolicy.for_model(model.config, options.threshold).threshold
    results = []
    with torch.inference_mode():
        for row in tqdm(shard(rows, rank, world_size), desc="eval", unit="conversation", disable=not options.progress):
            results.append(
                evaluate_conversation(
                    model, template, row["conversation"], row_embeds(model, store, row), fps=fps, threshold=threshold
                )
            )
    return {**aggregate(gather(results, world_size)).to_dict(), "threshold": threshold, "fps": fps}


def evaluate_benchmark(
    model: LiveModel, template: StreamTemplate, options: EvalOptions, *, rank: int = 0, world_size: int = 1
) -> dict[str, Any]:
    """A COIN benchmark or Ego4D LTA: answers generated after each sample's frames, then scored (`benchmarks`)."""
    from tqdm import tqdm

    from .benchmarks import generate_answers, prompt_ids, score_benchmark

    categories, taxonomy = _answer_space(options)  # reads the annotation files first: a missing one is named
    store = open_frames(options)
    fps = store_fps(store, model.config.frame_fps)
    lta = options.dataset == "ego4d-lta"
    rows = load_rows(options, store, fps)
    beams = options.num_beams if lta else 1
    mine = shard(list(range(len(rows))), rank, world_size)
    answers = []
    with tqdm(total=len(mine), desc="eval", unit="sample", disable=not options.progress) as bar:
        for start in range(0, len(mine), options.batch_size):
            batch = [rows[i] for i in mine[start : start + options.batch_size]]
            with torch.inference_mode():
                answers += generate_answers(
                    model,
                    template,
                    [prompt_ids(template, row["conversation"]) for row in batch],
                    [row_embeds(model, store, row) for row in batch],
                    max_new_tokens=options.max_new_tokens,
                    num_beams=beams,
                    num_return_sequences=beams,
                )
            bar.update(len(batch))
    answers = gather(answers, world_size)
    metrics, records = score_benchmark(options.dataset, rows, answers, categories, taxonomy)
    return {**metrics, "fps": fps, "max_new_tokens": options.max_new_tokens, "predictions": records}


def _answer_space(options: EvalOptions) -> tuple[Sequence[str] | None, Any]:
    """COIN: the category list of the benchmark; LTA: the taxonomy."""
    if options.dataset == "ego4d-lta":
        from ..data.datasets.ego4d_lta import TAXONOMY_FILE, LtaTaxonomy, find_file

        return None, LtaTaxonomy.read(find_file(options.data_root, TAXONOMY_FILE))
    from ..data.datasets.coin import CoinCategories, find_annotation, read_coin

    categories = CoinCategories.from_videos(read_coin(find_annotation(options.data_root)))
    return categories.for_benchmark(options.dataset.removeprefix("coin-")), None


def evaluate(
    model: LiveModel, template: StreamTemplate, options: EvalOptions, *, rank: int = 0, world_size: int = 1
) -> dict[str, Any]:
    """Metrics of one dataset (complete on every rank; rank 0 is the one to report them)."""
    if options.dataset in WORLD_DATASETS:
        return evaluate_world(
            model,
            template,
            options.data_root,
            limit=options.limit,
            threshold=options.threshold,
            window=options.window,
            progress=options.progress,
            rank=rank,
            world_size=world_size,
            engine=options.engine,
            cache_tokens=options.cache_tokens,
            ahead=options.ahead,
            weights=options.weights,
        )
    if options.dataset in BENCHMARK_DATASETS:
        return evaluate_benchmark(model, template, options, rank=rank, world_size=world_size)
    return evaluate_stream_dataset(model, template, options, rank=rank, world_size=world_size)


def check_inputs(options: EvalOptions) -> None:
    """Find a missing annotation file or frames directory before any weights load (raises UserError naming it)."""
    if options.dataset in WORLD_DATASETS:
        root = options.data_root
        if not (root / "conversations.jsonl").exists() or not (root / "annotations").is_dir():
            raise UserError(
                f"{root} is not a synthetic world: expected {root / 'conversations.jsonl'} and "
                f"{root / 'annotations'}/ (write one with `videollm-online data synth-world`)"
            )
        check_world(root, options.limit)
        return
    if options.dataset in BENCHMARK_DATASETS:
        _answer_space(options)
    open_frames(options)


def check_world(root: Path, limit: int | None = None) -> None:
    """The world's conversations well formed and not empty, and each video's annotation and video there and
    readable (UserError naming the file, the row and the field): found before any weights load, not after."""
    from ..data.schema import check_rows

    path = root / "conversations.jsonl"
    rows = check_rows(read_jsonl(path), path)
    for video in sorted({row["video"] for row in rows})[:limit]:
        annotation_path = root / "annotations" / f"{video}.json"
        try:
            annotation = json.loads(annotation_path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise UserError(f"{path} names video {video!r}, which has no annotation {annotation_path}") from error
        except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError) as error:
            raise UserError(f"{annotation_path} is not a valid JSON annotation ({error})") from error
        narrations = annotation.get("narrations") if isinstance(annotation, dict) else None
        if not isinstance(narrations, list) or not all(
            isinstance(n, dict)
            and isinstance(n.get("text"), str)
            and isinstance(n.get("time"), (int, float))
            and not isinstance(n.get("time"), bool)
            and math.isfinite(n["time"])
            for n in narrations
        ):
            raise UserError(f"{annotation_path}: 'narrations' must be a list of {{time, text}}")
        if not (root / "videos" / f"{video}.mp4").is_file():
            raise UserError(f"{path} names video {video!r}, which has no file {root / 'videos' / f'{video}.mp4'}")


def run_eval(
    model: LiveModel,
    template: StreamTemplate,
    model_name: str,
    options: EvalOptions,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """`evaluate` inside a process group when torchrun started several processes; the report (model, dataset,
    split, metrics, and per-sample predictions for the benchmarks)."""
    import torch.distributed as dist

    own_group = world_size > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("nccl" if model.device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        metrics = evaluate(model, template, options, rank=rank, world_size=world_size)
    finally:
        if own_group:
            dist.destroy_process_group()
    split = None if options.dataset in WORLD_DATASETS else options.split
    return {
        "model": model_name,
        "dataset": options.dataset,
        "split": split,
        "data_root": str(options.data_root),
        "world_size": world_size,
        **metrics,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as aligned `name  value` lines (per-sample predictions left to the JSON)."""
    shown = {key: value for key, value in report.items() if key != "predictions" and value is not None}
    width = max(len(key) for key in shown)
    return "\n".join(
        f"{key:<{width}}  {round(value, 4) if isinstance(value, float) else value}" for key, value in shown.items()
    )
