"""`videollm-online data ...`: the tools that make and inspect training data."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ...utils.distributed import distributed_rank, local_cuda_device
from ...utils.errors import UserError
from .options import ARGUMENT, Option, Parser, add_fields, build, checked, fps_value, positive_float, real
from .shared import add_model_options, load_model_from_args, model_argv

HELP = "data tools: synthetic worlds, dataset conversion, dialogue synthesis, frames, features, tokens"
DESCRIPTION = """\
Make and inspect training data: a synthetic world with exact annotations, a dataset's annotations converted to
stream conversations, dialogues written by an LLM, frames and features preprocessed for training, and the tokens
the model reads for a conversation.

example:
  videollm-online data synth-world --out world --videos 100 --seed 0 --video-fps 2 --time-grid 0.5
"""


@dataclass
class TokenizeOptions:
    conversation: str
    """JSON file: a list of messages (or {"conversation": [...]})."""
    tokenizer: str | None = None
    """Tokenizer dir, .gguf file, hub id or package:PKG/FILE.gguf (default: the preset's LLM)."""
    preset: str = "demo"
    """Config preset whose format the conversation is written in."""


@dataclass
class SynthWorldOptions:
    out: Path
    """Output directory (resumable)."""
    videos: int = 100
    """Number of videos."""
    seed: int = 0
    """World seed; each video's seed derives from it."""
    size: int = 256
    """Frame width and height in pixels."""
    stream_fps: float = 2.0
    """Frame rate of the conversations."""
    workers: int = 1
    """Render in this many processes."""
    quiet: bool = False
    """No progress bar or summary."""


@dataclass
class PreprocessOptions:
    videos: str
    """Directory of videos."""
    out: Path
    """Output directory of .safetensors files."""
    preset: str | None = None
    """Take --fps and --resolution from a model preset."""
    fps: float | None = None
    """Frames per second to sample."""
    resolution: int | None = None
    """Side of the square, letterboxed frames in pixels."""
    workers: int = 1
    """Processes per rank."""
    quiet: bool = False
    """No progress bar or summary."""


@dataclass
class FeaturesOptions:
    frames: str
    """Directory written by `data preprocess`."""
    out: Path
    """Output directory of the features' .safetensors files."""
    batch_size: int = 64
    """Frames encoded together."""
    quiet: bool = False
    """No progress bar or summary."""


@dataclass
class ConvertCommandOptions:
    dataset: str
    """ego4d-narration, ego4d-refined-narration, ego4d-goalstep-livechat, robustness, ..."""
    out: Path
    """JSONL of {video, conversation, start_frame, ...}."""
    frames: Path | None = None
    """Preprocessed frames/features: each video's length is read there (robustness: its synthetic videos are
    written there)."""
    video_metadata: Path | None = None
    """Ego4D's ego4d.json, or a JSON map video -> seconds (default: ANNO_ROOT/ego4d.json when present)."""
    augment: int = 0
    """Add N augmented copies of each conversation (wrong, late, missed turns)."""
    max_frames: int | None = None
    """Cut conversations before this many frames."""


@dataclass
class SynthesizeOptions:
    annotations: Path
    """Ego4D annotation dir (goalstep_{split}.json) or a JSON/JSONL of {video, annotations}."""
    out: Path
    """JSONL of dialogues (appended; a run resumes)."""
    source: str = "generic"
    """The annotations' format."""
    splits: str = "train,val"
    """GoalStep splits."""
    base_url: str | None = None
    """OpenAI-compatible endpoint, e.g. http://localhost:8000/v1."""
    llm_name: str = "default"
    """Model name sent to the endpoint."""
    api_key: str | None = None
    """Bearer token for the endpoint (default: $OPENAI_API_KEY)."""
    concurrency: int = 8
    """Parallel requests to the endpoint."""
    timeout: float = 600.0
    """Seconds per request."""
    retries: int = 3
    """Retries of a failed request."""
    hf_model: str | None = None
    """Local Hugging Face causal LM: directory, cached hub id, .gguf or package:PKG/FILE.gguf."""
    device: str = "cpu"
    """Torch device of --hf-model."""
    dtype: str | None = None
    """Weights' type of --hf-model (default: its own)."""
    limit: int | None = None
    """Only the first N annotated items."""
    retry_dropped: bool = False
    """Ask again for dialogues an earlier run dropped."""
    quiet: bool = False
    """No progress bar or summary."""


QUIET = Option(flags=("--quiet", "-q"))


def add_command(commands: argparse._SubParsersAction) -> None:
    from ...data.datasets import ConvertOptions
    from ...data.synthesize import SynthesisConfig
    from ...data.world import WorldConfig

    data = commands.add_parser("data", help=HELP, description=DESCRIPTION)
    tools = data.add_subparsers(dest="data_command", required=True, metavar="TOOL")

    tokenize = tools.add_parser(
        "tokenize",
        help="show the ids and labels the model reads and learns for a conversation",
        description="Print, as JSON, the text, token ids and labels the model reads and learns for a conversation."
        "\n\nexample:\n  videollm-online data tokenize conversation.json --preset demo\n",
    )
    add_fields(tokenize, TokenizeOptions, {"conversation": ARGUMENT, "tokenizer": None, "preset": None})
    tokenize.set_defaults(func=cmd_data_tokenize, command_parser=tokenize)

    world = tools.add_parser(
        "synth-world",
        help="render synthetic activity videos with exact annotations and their streaming conversations",
        description="Render videos of a synthetic world (objects that appear, move, change colour, in tasks of "
        "ordered steps) with exact annotations, and the streaming conversations `train` learns from."
        "\n\nexample:\n  videollm-online data synth-world --out world --videos 1 --seed 2 --video-fps 2\n",
    )
    add_fields(world, SynthWorldOptions, {"out": None, "videos": None, "seed": None, "size": None})
    add_fields(
        world,
        WorldConfig,
        {
            "fps": Option(flags=("--video-fps",)),
            "min_duration": Option(type=real),
            "max_duration": None,
            "time_grid": None,
        },
    )
    add_fields(world, SynthWorldOptions, {"stream_fps": Option(type=fps_value), "workers": None, "quiet": QUIET})
    world.set_defaults(func=cmd_data_synth_world, command_parser=world)

    preprocess = tools.add_parser(
        "preprocess",
        help="sample and letterbox videos into per-video frame files (split by RANK/WORLD_SIZE under torchrun)",
        description="Sample videos at a frame rate and letterbox the frames to the model's resolution, one "
        ".safetensors file a video, for `train` and `data features`. Under torchrun (or --slurm-tasks) the videos "
        "are shared between the processes; what is done is skipped."
        "\n\nexample:\n  videollm-online data preprocess world/videos --out world/frames --preset demo\n",
    )
    add_fields(
        preprocess, PreprocessOptions, {"videos": ARGUMENT, "out": None, "preset": None, "fps": Option(type=fps_value)}
    )
    add_fields(preprocess, PreprocessOptions, ["resolution", "workers"])
    add_fields(preprocess, PreprocessOptions, {"quiet": QUIET})
    add_slurm_options(preprocess)
    preprocess.set_defaults(func=cmd_data_preprocess, command_parser=preprocess)

    features = tools.add_parser(
        "features",
        help="vision encoder features of preprocessed frames (frozen-encoder training; split by RANK/WORLD_SIZE "
        "under torchrun)",
        description="Run the model's vision encoder over preprocessed frames and keep the features, so that "
        "`train --features` skips the encoder. Under torchrun (or --slurm-tasks) the videos are shared."
        "\n\nexample:\n  videollm-online data features world/frames --out world/features --device cuda\n",
    )
    add_fields(features, FeaturesOptions, {"frames": ARGUMENT, "out": None})
    add_model_options(features, ["model", "preset", "llm", "vision", "device", "dtype", "merge_lora", "offline"])
    add_fields(features, FeaturesOptions, {"batch_size": None, "quiet": QUIET})
    add_slurm_options(features)
    features.set_defaults(func=cmd_data_features, command_parser=features)

    convert = tools.add_parser(
        "convert",
        help="a dataset's annotation files -> stream conversations (JSONL) with frame ranges, for `train`",
        description="Turn a dataset's annotation files into stream conversations with frame ranges, for `train`."
        "\n\nexample:\n  videollm-online data convert --dataset ego4d-narration --anno-root ego4d/v2/annotations "
        "--out narration.jsonl --frames frames\n",
    )
    add_fields(convert, ConvertCommandOptions, ["dataset"])
    add_fields(
        convert,
        ConvertOptions,
        {
            "anno_root": Option(help="The dataset's annotation directory (or, for dialogues, a file)."),
            "split": Option(help="train, val or test."),
        },
    )
    add_fields(convert, ConvertCommandOptions, ["out"])
    add_fields(convert, ConvertOptions, {"fps": Option(type=fps_value)})
    add_fields(convert, ConvertCommandOptions, {"frames": None, "video_metadata": None, "augment": Option(metavar="N")})
    add_fields(convert, ConvertCommandOptions, ["max_frames"])
    add_fields(convert, ConvertOptions, ["seed"])
    convert.set_defaults(func=cmd_data_convert, command_parser=convert)

    synth = tools.add_parser(
        "synthesize",
        help="streaming dialogues written by an LLM from timestamped annotations (resumable)",
        description="Have an LLM (an OpenAI-compatible endpoint, or a local Hugging Face model) write streaming "
        "dialogues from timestamped annotations; a run resumes where the last one stopped."
        "\n\nexample:\n  videollm-online data synthesize annotations.jsonl --out dialogues.jsonl "
        "--base-url http://localhost:8000/v1\n",
    )
    add_fields(
        synth,
        SynthesizeOptions,
        {
            "annotations": ARGUMENT,
            "out": None,
            "source": Option(choices=("ego4d-goalstep", "generic")),
            "splits": None,
            "base_url": None,
            "llm_name": None,
            "api_key": None,
            "concurrency": None,
            "timeout": Option(type=positive_float),
            "retries": None,
            "hf_model": None,
            "device": None,
            "dtype": None,
        },
    )
    add_fields(
        synth,
        SynthesisConfig,
        {
            "fps": Option(type=fps_value),
            "dialogues_per_item": None,
            "questions_per_dialogue": Option(flags=("--questions",)),
            "min_span": None,
            "max_span": None,
            "max_new_tokens": None,
            "temperature": None,
            "seed": None,
        },
    )
    add_fields(synth, SynthesizeOptions, {"limit": None, "retry_dropped": None, "quiet": QUIET})
    synth.set_defaults(func=cmd_data_synthesize, command_parser=synth)


def add_slurm_options(parser: Parser) -> None:
    """The SLURM group: spread the command over a cluster's tasks with submitit (`data.launch`)."""
    from ...data.launch import SlurmConfig

    group = parser.add_argument_group("SLURM (submitit)")
    add_fields(
        parser,
        SlurmConfig,
        {
            "tasks": Option(flags=("--slurm-tasks",), default=None, metavar="N"),
            "nodes": Option(flags=("--slurm-nodes",)),
            "partition": Option(flags=("--slurm-partition",)),
            "gpus_per_node": Option(flags=("--slurm-gpus-per-node",)),
            "cpus_per_task": Option(flags=("--slurm-cpus-per-task",)),
            "timeout_min": Option(flags=("--slurm-time",), metavar="MINUTES"),
            "folder": Option(flags=("--slurm-folder",)),
            "local": Option(flags=("--slurm-local",)),
            "wait": Option(flags=("--slurm-wait",)),
        },
        group,
    )


def launch(args: argparse.Namespace, argv: list[str]) -> int:
    """Submit `videollm-online ARGV` as the parsed `--slurm-*` options say; print the job id, and with --slurm-wait,
    the results."""
    from ...data.launch import SlurmConfig, submit
    from . import main

    config = build(SlurmConfig, args)
    job_id, results = submit(main, argv, config)
    print(
        f"job {job_id}: {config.tasks} tasks of `videollm-online {' '.join(argv[:2])}` (logs in {config.folder})",
        file=sys.stderr,
    )
    if results is not None:
        print(f"job {job_id}: all {len(results)} tasks finished", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- tokenize
def cmd_data_tokenize(args: argparse.Namespace) -> int:
    from ...core.checkpoint import load_tokenizer
    from ...core.config import LiveConfig
    from ...core.text import StreamTemplate
    from ...data.schema import check_conversation

    path = Path(args.conversation)
    if not path.exists():
        raise UserError(f"no such file: {path}")
    if not path.is_file():
        raise UserError(f"{path} is a directory: give a JSON file of a conversation")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON: {error}") from error
    conversation = data.get("conversation") if isinstance(data, dict) else data
    if not isinstance(conversation, list):
        raise UserError(f"{path} must hold a list of messages, or an object with a 'conversation' list")
    check_conversation(conversation, str(path))
    config = checked(LiveConfig.from_name, args.preset)
    if args.tokenizer and Path(args.tokenizer).is_file() and Path(args.tokenizer).suffix != ".gguf":
        raise UserError(
            f"--tokenizer {args.tokenizer} is a file but no .gguf: give a tokenizer directory, a .gguf "
            "file, a hub id or package:PKG/FILE.gguf"
        )
    try:
        tokenizer = load_tokenizer(args.tokenizer or config.llm)
    except (OSError, ValueError) as error:  # a file or folder that holds no tokenizer
        raise UserError(f"--tokenizer {args.tokenizer or config.llm}: not a tokenizer ({error})") from error
    try:
        result = StreamTemplate(tokenizer, config).tokenize(conversation)
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: {error}") from error
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    return 0


# ---------------------------------------------------------------------- synth-world / preprocess / features
def cmd_data_synth_world(args: argparse.Namespace) -> int:
    from ...data.streaming import world_conversations
    from ...data.world import WorldConfig, load_world, write_world
    from ...utils.files import check_output, write_jsonl

    check_output(args.out, directory=True, what="--out")
    config = build(WorldConfig, args, width=args.size, height=args.size)
    try:
        result = write_world(
            args.out, args.videos, seed=args.seed, config=config, progress=not args.quiet, workers=args.workers
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    annotations = [a for a in load_world(args.out) if a["id"] in set(result.ids)]
    rows = world_conversations(annotations, fps=args.stream_fps, seed=args.seed)
    write_jsonl(Path(args.out) / "conversations.jsonl", rows)
    print(
        f"{len(result.written)} videos written, {len(result.skipped)} already there; {len(rows)} conversations "
        f"in {Path(args.out) / 'conversations.jsonl'}",
        file=sys.stderr,
    )
    return 0


def cmd_data_preprocess(args: argparse.Namespace) -> int:
    from ...core.config import LiveConfig
    from ...data.frames import check_sampling, preprocess_videos
    from ...utils.files import check_output

    fps, resolution = args.fps, args.resolution
    if args.preset:
        preset = checked(LiveConfig.from_name, args.preset)
        fps, resolution = fps or preset.frame_fps, resolution or preset.frame_resolution
    if not fps or not resolution:
        raise UserError("give --fps and --resolution, or a --preset to take them from")
    checked(check_sampling, fps, resolution)
    check_output(args.out, directory=True, what="--out")
    if args.tasks:
        return launch(
            args,
            [
                "data",
                "preprocess",
                str(Path(args.videos).resolve()),
                "--out",
                str(args.out.resolve()),
                "--fps",
                str(fps),
                "--resolution",
                str(resolution),
                "--workers",
                str(args.workers),
                "-q",
            ],
        )
    rank, world_size = distributed_rank()
    counts = preprocess_videos(
        args.videos,
        args.out,
        fps=fps,
        resolution=resolution,
        rank=rank,
        world_size=world_size,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(
        f"rank {rank}/{world_size}: {counts['written']} written, {counts['skipped']} already done, "
        f"{counts['failed']} failed (see warnings)",
        file=sys.stderr,
    )
    # a corrupt video among many is skipped (a warning names it); a run in which every video failed is a failure
    return 1 if counts["failed"] and not counts["written"] and not counts["skipped"] else 0


def cmd_data_features(args: argparse.Namespace) -> int:
    from ...data.frames import extract_features

    if args.tasks:
        return launch(
            args,
            [
                "data",
                "features",
                str(Path(args.frames).resolve()),
                "--out",
                str(args.out.resolve()),
                "--batch-size",
                str(args.batch_size),
                "-q",
                *model_argv(args),
            ],
        )
    from ...utils.files import check_output

    check_output(args.out, directory=True, what="--out")
    model, _, name = load_model_from_args(args)
    rank, world_size = distributed_rank()
    if str(args.device).startswith("cuda") and world_size > 1:
        model.to(local_cuda_device())
    counts = extract_features(
        args.frames,
        args.out,
        model,
        batch_size=args.batch_size,
        rank=rank,
        world_size=world_size,
        progress=not args.quiet,
        encoder_name=name,
    )
    print(
        f"rank {rank}/{world_size}: {counts['written']} written, {counts['skipped']} already done, "
        f"{counts['failed']} unreadable (see warnings) ({name})",
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------------- convert / synthesize
def cmd_data_convert(args: argparse.Namespace) -> int:
    from ...data.convert import convert
    from ...data.datasets import ConvertOptions, get_loader
    from ...data.datasets.common import frames_from_metadata, frames_from_store
    from ...data.datasets.robustness import robustness_example, write_robustness_frames
    from ...utils.files import check_output

    get_loader(args.dataset)  # an unknown name fails before any file is read
    if not Path(args.anno_root).exists() and args.dataset != "robustness":
        raise UserError(f"no such file or directory: {args.anno_root}")
    check_output(args.out, inputs=[args.anno_root, args.video_metadata], what="--out")
    if args.dataset == "robustness" and args.frames:
        robustness_example(args.frames)  # a frames folder to write into, checked before the rows are written
    video_frames = None
    if args.frames and args.dataset != "robustness":
        video_frames = frames_from_store(args.frames)
    elif args.video_metadata or (Path(args.anno_root) / "ego4d.json").exists():
        video_frames = frames_from_metadata(args.video_metadata or Path(args.anno_root) / "ego4d.json", args.fps)
    options = build(ConvertOptions, args, video_frames=video_frames)
    try:
        report = convert(args.dataset, options, args.out, augment_copies=args.augment, max_frames=args.max_frames)
    except ValueError as error:
        raise UserError(str(error)) from error
    if args.dataset == "robustness" and args.frames:
        for path in write_robustness_frames(args.frames, seed=args.seed):
            print(f"wrote {path}", file=sys.stderr)
    for line in report.lines():
        print(line, file=sys.stderr)
    print(f"conversations in {args.out}", file=sys.stderr)
    return 0


def cmd_data_synthesize(args: argparse.Namespace) -> int:
    from ...data.synthesize import HFBackend, OpenAIBackend, SynthesisConfig, generic_items, goalstep_items, synthesize
    from ...utils.files import check_output

    if not Path(args.annotations).exists():
        raise UserError(f"no such file or directory: {args.annotations}")
    if bool(args.base_url) == bool(args.hf_model):
        raise UserError("choose one backend: --base-url URL (OpenAI-compatible server) or --hf-model MODEL")
    check_output(args.out, inputs=[args.annotations], what="--out")
    config = build(SynthesisConfig, args)
    items = (
        goalstep_items(args.annotations, args.splits.split(","))
        if args.source == "ego4d-goalstep"
        else generic_items(args.annotations)
    )
    if args.limit is not None:
        items = items[: args.limit]
    if args.base_url:
        backend = OpenAIBackend(
            args.base_url,
            args.llm_name,
            api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
            timeout=args.timeout,
            retries=args.retries,
        )
    else:
        backend = HFBackend(args.hf_model, device=args.device, dtype=args.dtype)
    report = synthesize(
        items,
        backend,
        args.out,
        config,
        concurrency=args.concurrency,
        progress=not args.quiet,
        retry_dropped=args.retry_dropped,
    )
    for line in report.lines():
        print(line, file=sys.stderr)
    return 0 if report.written or report.already_done or not items else 1
