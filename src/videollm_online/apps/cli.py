"""The `videollm-online` command. Parsing and printing only: the work lives in the library modules.

User errors (a missing file, a malformed option, a model that is not here) print one line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path

from ..utils.distributed import distributed_rank, local_cuda_device
from ..utils.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error of the command."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def configured(cls, **values):
    """`cls(**values)` for a typed config; the range checks of its `__post_init__` become one error line. The one
    place where a config's ValueError turns into a UserError."""
    try:
        return cls(**values)
    except ValueError as error:
        raise UserError(str(error)) from error


def checked(check, *args, **kwargs):
    """Run a library check that raises ValueError (checks.check_number, ...) as a user error."""
    try:
        return check(*args, **kwargs)
    except ValueError as error:
        raise UserError(str(error)) from error


def check_device(device: str | None) -> None:
    """A CUDA device that is not here is one line, before any weights load."""
    if device and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here (use --device cpu)")
        index = str(device).partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


# ---------------------------------------------------------------------- shared options
def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="a checkpoint directory, a hub id (downloaded on first use, e.g. "
        "chenjoya/videollm-online-8b-v1plus), or a preset name for an untrained model "
        "(default: the bundled demo model (synthetic world))",
    )
    parser.add_argument(
        "--preset",
        default=None,
        help="the config of a released adapter (a --model with adapter files only): 8b-v1plus "
        "(assumed when not given) or 8b-v1; a videollm-online checkpoint carries its own",
    )
    parser.add_argument("--llm", default=None, help="base LLM path or hub id (overrides the checkpoint's)")
    parser.add_argument("--vision", default=None, help="vision encoder path or hub id (overrides the checkpoint's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16", "float16"],
        help="weights' type (default: float32 on cpu, bfloat16 on cuda)",
    )
    parser.add_argument("--merge-lora", action="store_true", help="merge the LoRA adapter into the LLM for speed")
    add_offline_option(parser)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads for torch (default: $OMP_NUM_THREADS, else the physical cores, shared "
        "between the processes torchrun starts on this machine)",
    )


def add_offline_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never download: hub ids must be in the local Hugging Face cache (as HF_HUB_OFFLINE=1)",
    )


def load_model_from_args(args: argparse.Namespace):
    from ..core.checkpoint import default_model, load_model
    from ..core.config import PRESETS

    check_device(args.device)
    spec = args.model or default_model()
    if spec in PRESETS and not Path(spec).exists():
        print(
            f"note: {spec!r} is a preset, not a trained checkpoint: its connector is untrained, so what it says is "
            "noise (leave --model out for the bundled trained model)",
            file=sys.stderr,
        )

    dtype = args.dtype or ("bfloat16" if str(args.device).startswith("cuda") else "float32")
    return load_model(
        args.model,
        preset=args.preset,
        llm=args.llm,
        vision=args.vision,
        device=args.device,
        dtype=dtype,
        merge_lora=args.merge_lora,
    )


def query_text(value: str) -> str:
    """A question: UTF-8 text (bytes the terminal's encoding could not decode reach Python as lone surrogates, which
    no tokenizer takes), of a bounded length."""
    from ..data.schema import MAX_TEXT_CHARS

    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"{value!r} is not valid UTF-8 text: check the terminal's encoding") from None
    if len(value) > MAX_TEXT_CHARS:
        raise argparse.ArgumentTypeError(f"a question of {len(value)} characters, over the limit of {MAX_TEXT_CHARS}")
    return value


def parse_query_at(value: str) -> tuple[float, str]:
    value = query_text(value)
    seconds, sep, text = value.partition(":")
    try:
        time = float(seconds)
    except ValueError:
        time = None
    if not sep or time is None or not math.isfinite(time) or time < 0 or not text.strip():
        raise argparse.ArgumentTypeError(
            f"malformed --query-at {value!r}: expected SECONDS:TEXT with SECONDS >= 0, e.g. '12.5:What is he doing?'"
        )
    return time, text.strip()


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {value!r}")
    return number


def fps_value(value: str) -> float:
    """Frames per second: finite and within checks.MIN_FPS..MAX_FPS (at 1e9 a 2 s clip became 10 GB)."""
    from ..utils.checks import MAX_FPS, MIN_FPS

    number = positive_float(value)
    if not MIN_FPS <= number <= MAX_FPS:
        raise argparse.ArgumentTypeError(f"frames per second must be in [{MIN_FPS:g}, {MAX_FPS:g}], got {value!r}")
    return number


def whole_number(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None


def real(value: str) -> float:
    """A finite float (argparse's float takes nan and inf)."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {value!r}")
    return number


def unit_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value!r}")
    return number


# ---------------------------------------------------------------------- narrate
def cmd_narrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..engine import EngineConfig
    from ..utils.files import check_output
    from ..video import open_video
    from .narrate import History, narrate_frames, print_status

    source = args.source
    if not (source.startswith(("rtsp://", "rtmp://", "http://", "https://", "/dev/")) or Path(source).exists()):
        raise UserError(f"no such file or directory: {source}")
    queries = ([(0.0, args.query)] if args.query else []) + list(args.query_at or [])
    engine = configured(EngineConfig, threshold=args.threshold, max_new_tokens=args.max_new_tokens)
    if args.output:
        check_output(args.output, inputs=[source], what="--output")
    if args.speak or args.speech_dir:
        from .speech import require_tts

        require_tts("--speak")
        if args.speech_dir:
            check_output(args.speech_dir, directory=True, what="--speech-dir")
    check_device(args.device)
    if Path(source).exists():  # a local file or folder: find out it is no video before loading any weights
        from ..core.checkpoint import model_config

        config = model_config(args.model, args.preset)
        with open_video(source, fps=args.fps or config.frame_fps, resolution=config.frame_resolution) as probe:
            next(iter(probe), None)
    model, template, name = load_model_from_args(args)
    from ..core.bundled import not_world_note

    if note := not_world_note(name, None if source.startswith("/dev/") else source):
        print(note, file=sys.stderr)
    fps = args.fps or model.config.frame_fps
    if args.cache_tokens is not None:  # room for the system prompt, a few frames and one response
        needed = (
            len(template.encode(template.system_text())) + 4 * (model.config.frame_num_tokens + 1) + args.max_new_tokens
        )
        if args.cache_tokens < needed:
            raise UserError(
                f"--cache-tokens {args.cache_tokens} cannot hold the system prompt, a few frames and one "
                f"response of --max-new-tokens {args.max_new_tokens}: give at least {needed}"
            )
    # written from the first frame on (not before: a source that gives no frame leaves no empty history behind)
    history = History(video_path=source, frame_fps=fps, model=name, path=args.output)
    stream = open_video(source, fps=fps, resolution=model.config.frame_resolution, realtime=args.realtime)
    speaker = None
    if args.speak or args.speech_dir:  # spoken on its own thread: the stream never waits for speech
        from .speech import start_speaking

        speaker = start_speaking(play=args.speak, wav_dir=args.speech_dir)
    with stream, speaker or contextlib.nullcontext():
        total = (
            math.ceil(stream.info.duration * fps - 1e-9) if stream.info.duration and not stream.info.is_live else None
        )  # frames up to the video's end
        bar = tqdm(
            total=total, unit="frame", desc="narrating", disable=args.quiet or None, dynamic_ncols=True, file=sys.stderr
        )

        def print_turn(event) -> None:
            bar.write(f"[{event.video_time:.1f}s] {event.role.capitalize()}: {event.text.strip()}", file=sys.stdout)
            sys.stdout.flush()  # turns appear as they happen, also through a pipe
            if speaker is not None and event.role == "assistant":
                if speaker.error is not None:  # the speech thread died: stop here, as asked speech cannot be had
                    raise speech_failed(speaker, args.output)
                speaker.say(event.text, event.video_time)

        def on_frame(count: int) -> None:
            if count == 1:
                history.save()
            bar.update(1)

        live = args.realtime or stream.info.is_live
        try:
            _, times = narrate_frames(
                model,
                template,
                stream,
                queries=queries,
                config=engine,
                history=history,
                engine=args.engine,
                cache_tokens=args.cache_tokens,
                on_event=print_turn,
                on_frame=on_frame,
                batch_size=1 if live else 8,
                ahead=args.ahead,
                weights=args.weights,
                live=live,
                expected_frames=None if live else total,
                status=None if args.quiet else print_status,
            )
        finally:
            bar.close()
    if times.frames:
        history.save()
    summary = times.summary()
    if not args.quiet:
        print(
            f"{summary['frames']} frames in {summary['seconds']} s ({summary['frames_per_second']} frames/s: "
            f"decode {summary['decode_s']} s, vision {summary['vision_s']} s, LLM {summary['llm_s']} s; "
            f"vision {summary['vision_path']}, {summary['ahead']} frame(s) a step)",
            file=sys.stderr,
        )
        if args.output:
            print(f"history written to {args.output}", file=sys.stderr)
        if speaker is not None:
            print(speaker.describe(), file=sys.stderr)
    if speaker is not None and speaker.error is not None:
        raise speech_failed(speaker, args.output)
    if summary["frames"] == 0:
        raise UserError(f"{source} gave no frames to narrate")
    return 0


def speech_failed(speaker, output: Path | None) -> UserError:
    """The speech thread's failure, as the main thread's one error line."""
    kept = f"; the history so far is in {output}" if output else ""
    return UserError(f"speech stopped after {speaker.stats.said} responses: {speaker.error}{kept}")


# ---------------------------------------------------------------------- download
def cmd_download(args: argparse.Namespace) -> int:
    from ..core.hub_download import download_model

    for what, name, path in download_model(args.model, preset=args.preset, llm=args.llm, vision=args.vision):
        print(f"{what} {name}: {path}", file=sys.stderr)
    print(f"ready: videollm-online narrate VIDEO --model {args.model} --device cuda", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- render
def cmd_render(args: argparse.Namespace) -> int:
    from .render import RenderConfig, describe, render_video

    config = configured(
        RenderConfig,
        layout=args.layout,
        panel_size=args.panel_size,
        font_size=args.font_size,
        speech=args.speech,
        source_audio=not args.no_source_audio,
        crf=args.crf,
    )
    result = render_video(args.history, args.out, video=args.video, config=config, progress=not args.quiet)
    if not args.quiet:
        print(describe(result), file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- data tokenize
def cmd_data_tokenize(args: argparse.Namespace) -> int:
    from ..core.checkpoint import load_tokenizer
    from ..core.config import LiveConfig
    from ..core.text import StreamTemplate
    from ..data.schema import check_conversation

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


# ---------------------------------------------------------------------- data synth-world / preprocess
def cmd_data_synth_world(args: argparse.Namespace) -> int:
    from ..data.streaming import world_conversations
    from ..data.world import WorldConfig, load_world, write_world
    from ..utils.files import check_output, write_jsonl

    check_output(args.out, directory=True, what="--out")
    try:
        config = WorldConfig(
            width=args.size,
            height=args.size,
            fps=args.video_fps,
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            time_grid=args.time_grid,
        )
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
    from ..core.config import LiveConfig
    from ..data.frames import check_sampling, preprocess_videos
    from ..utils.files import check_output

    fps, resolution = args.fps, args.resolution
    if args.preset:
        preset = checked(LiveConfig.from_name, args.preset)
        fps, resolution = fps or preset.frame_fps, resolution or preset.frame_resolution
    if not fps or not resolution:
        raise UserError("give --fps and --resolution, or a --preset to take them from")
    checked(check_sampling, fps, resolution)
    check_output(args.out, directory=True, what="--out")
    if args.slurm_tasks:
        from ..data.launch import launch

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
    from ..data.frames import extract_features

    if args.slurm_tasks:
        from ..data.launch import launch, model_argv

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
    from ..utils.files import check_output

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


# ---------------------------------------------------------------------- data convert / synthesize
def cmd_data_convert(args: argparse.Namespace) -> int:
    from ..data.convert import convert
    from ..data.datasets import ConvertOptions, get_loader
    from ..data.datasets.common import frames_from_metadata, frames_from_store
    from ..data.datasets.robustness import robustness_example, write_robustness_frames
    from ..utils.files import check_output

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
    try:
        options = ConvertOptions(
            anno_root=args.anno_root, split=args.split, fps=args.fps, seed=args.seed, video_frames=video_frames
        )
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
    from ..data.synthesize import HFBackend, OpenAIBackend, SynthesisConfig, generic_items, goalstep_items, synthesize

    if not Path(args.annotations).exists():
        raise UserError(f"no such file or directory: {args.annotations}")
    if bool(args.base_url) == bool(args.hf_model):
        raise UserError("choose one backend: --base-url URL (OpenAI-compatible server) or --hf-model MODEL")
    from ..utils.files import check_output

    check_output(args.out, inputs=[args.annotations], what="--out")
    config = configured(
        SynthesisConfig,
        fps=args.fps,
        dialogues_per_item=args.dialogues_per_item,
        questions_per_dialogue=args.questions,
        min_span=args.min_span,
        max_span=args.max_span,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
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


# ---------------------------------------------------------------------- eval
def cmd_eval(args: argparse.Namespace) -> int:
    from ..core.config import CONFIG_FILE
    from ..eval.runner import EvalOptions, check_inputs, format_table, run_eval
    from ..utils.files import check_output, write_json_atomic

    if args.output:  # checked first: a path that cannot be written lost the whole evaluation
        check_output(args.output, what="--output")
    options = EvalOptions(
        dataset=args.dataset,
        data_root=args.data_root,
        split=args.split,
        frames=args.frames,
        limit=args.limit,
        threshold=args.threshold,
        window=args.window,
        max_new_tokens=args.max_new_tokens,
        num_beams=args.num_beams,
        batch_size=args.batch_size,
        progress=not args.quiet,
        engine=args.engine,
        cache_tokens=args.cache_tokens,
        ahead=args.ahead,
        weights=args.weights,
    )
    check_inputs(options)
    if args.model_card and not (args.model and (Path(args.model) / CONFIG_FILE).is_file()):
        raise UserError(
            "--model-card writes into a checkpoint directory: pass --model DIR (a videollm-online "
            "checkpoint, with videollm_online.json)"
        )
    rank, world_size = distributed_rank()
    if str(args.device).startswith("cuda") and world_size > 1:
        args.device = local_cuda_device()
    model, template, name = load_model_from_args(args)
    report = run_eval(model, template, name, options, rank=rank, world_size=world_size)
    if rank == 0:
        print(format_table(report))
        if args.output:
            write_json_atomic(args.output, report)
        if args.model_card:
            from ..core.checkpoint import write_model_card

            card = write_model_card(args.model, eval_report={k: v for k, v in report.items() if k != "predictions"})
            print(f"evaluation table written to {card}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    from ..train.trainer import TrainConfig, train
    from ..utils.files import check_output

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    config = configured(TrainConfig, **values)
    check_output(config.output_dir, directory=True, what="--output-dir")
    final = train(config, resume=args.resume)
    print(f"final checkpoint: {final}", file=sys.stderr)
    return 0


def cmd_train_vision(args: argparse.Namespace) -> int:
    import dataclasses

    from ..train.vision_pretrain import VisionPretrainConfig, pretrain_vision

    fields = {f.name for f in dataclasses.fields(VisionPretrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    config = configured(VisionPretrainConfig, **values)
    from ..utils.files import check_output

    check_output(config.output_dir, directory=True, what="--output-dir")
    result = pretrain_vision(config, progress=not args.quiet)
    print(
        f"checkpoint (trained vision, fresh connector): {result.final_dir}; metrics: "
        f"{Path(config.output_dir) / 'vision_metrics.json'}",
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------------- serve / demo
def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig
    from .server.run import serve_model

    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            token=args.token or ServerConfig.token_from_env(),
            allowed_video_dirs=tuple(args.allowed_video_dir),
            max_upload_bytes=args.max_upload_bytes,
            max_sessions=args.max_sessions,
            max_frame_bytes=args.max_frame_bytes,
            max_frame_rate=args.max_frame_rate,
            max_pending_frames=args.max_pending_frames,
            idle_timeout=args.idle_timeout,
            max_query_rate=args.max_query_rate,
            max_pending_queries=args.max_pending_queries,
        )
    except ValueError as error:
        raise UserError(str(error)) from error
    model, template, name = load_model_from_args(args)
    if args.engine == "fast":  # every session's frames and tokens batched into one forward per step
        from .server.batched import BatchedWorker

        worker = BatchedWorker(model, template, name, max_sessions=args.max_sessions, cache_tokens=args.cache_tokens)
        serve_model(worker, None, name, config)
    else:
        serve_model(model, template, name, config)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .webdemo import run

    examples = [str(path) for path in args.example] if args.example else None
    for path in examples or []:
        if not Path(path).exists():
            raise UserError(f"no such file: {path}")
    model, template, name = load_model_from_args(args)
    run(
        model,
        template,
        name,
        host=args.host,
        port=args.port,
        examples=examples,
        threshold=args.threshold,
        max_new_tokens=args.max_new_tokens,
        engine=args.engine,
        cache_tokens=args.cache_tokens,
    )
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..data.launch import add_slurm_options

    parser = Parser(
        prog="videollm-online",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="An online video LLM: it watches a video (file, webcam or stream) frame by frame, narrates what "
        "happens,\nanswers questions at any moment, and decides by itself when to speak.",
        epilog="examples:\n"
        "  videollm-online data synth-world --out world --videos 1 --seed 2 --video-fps 2\n"
        "  videollm-online narrate world/videos/000000.mp4 --query-at '10:How many objects are there?'\n"
        "  videollm-online demo                      # the web page, http://127.0.0.1:7860\n"
        "  videollm-online download chenjoya/videollm-online-8b-v1plus   # the released 8B model (GPU)\n\n"
        "The bundled demo model knows only the synthetic world of `data synth-world`; for real video run the "
        "released\nmodel with --model chenjoya/videollm-online-8b-v1plus --device cuda. "
        "`videollm-online COMMAND --help` says more.",
    )
    parser.add_argument("--version", action="version", version=f"videollm-online {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show library warnings and full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    narrate = commands.add_parser(
        "narrate",
        help="stream a video or live source and print the assistant's turns",
        description="Watch a source frame by frame and print each turn as it happens.",
    )
    narrate.add_argument("source", help="video file, image directory, /dev/videoN, or rtsp/rtmp/http(s) URL")
    add_model_options(narrate)
    narrate.add_argument("--query", type=query_text, help="a question asked at time 0")
    narrate.add_argument(
        "--query-at",
        action="append",
        type=parse_query_at,
        metavar="SECONDS:TEXT",
        help="a question asked at a video time (repeatable)",
    )
    narrate.add_argument("--fps", type=fps_value, help="frames per second fed to the model (default: model's)")
    narrate.add_argument(
        "--threshold",
        type=unit_float,
        default=None,
        help="stay silent when P(frame interval) >= this (default: the model's, 0.725)",
    )
    narrate.add_argument("--max-new-tokens", type=int, default=64, help="longest response (default: 64)")
    narrate.add_argument("--realtime", action="store_true", help="pace a file to the wall clock, as a live feed")
    narrate.add_argument(
        "--engine",
        choices=["default", "fast"],
        default="default",
        help="default: transformers' cache, any LLM; fast: static cache + CUDA graphs on a GPU (Llama-family LLMs)",
    )
    narrate.add_argument(
        "--cache-tokens",
        type=positive_int,
        metavar="N",
        help="keep at most N tokens (attention sink + most recent) so an endless stream runs in "
        "fixed memory; implies --engine fast",
    )
    narrate.add_argument(
        "--ahead",
        type=positive_int,
        default=16,
        metavar="N",
        help="fast engine on a file: feed N frames per forward, rolled back where the model speaks "
        "(the same turns as frame by frame; 1: frame by frame; live sources: always 1) "
        "(default: 16)",
    )
    narrate.add_argument(
        "--weights",
        choices=["fp8", "int8"],
        default=None,
        help="fp8 / int8: float8 e4m3 / int8 linear weights with per-channel scales, weight-only (fast engine; "
        "implies --engine fast)",
    )
    narrate.add_argument("--output", "-o", type=Path, help="write the history JSON here, updated after every turn")
    narrate.add_argument(
        "--speak", action="store_true", help="speak each response aloud as it is complete (needs the tts extra)"
    )
    narrate.add_argument("--speech-dir", type=Path, metavar="DIR", help="keep each spoken response as a WAV file here")
    add_threads_option(narrate)
    narrate.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    narrate.set_defaults(func=cmd_narrate)

    download = commands.add_parser(
        "download",
        help="fetch a model and the base models it names into the Hugging Face cache",
        description="Download a released model ahead of time: the adapter, and the base LLM and vision encoder its "
        "preset names (for chenjoya/videollm-online-8b-v1plus: meta-llama/Meta-Llama-3-8B-Instruct, "
        "gated: accept its licence on the hub and run `hf auth login` first, and "
        "google/siglip-large-patch16-384). Models also download on first use; this does it now.",
    )
    download.add_argument(
        "model", help="hub id (or local directory) of the model, e.g. chenjoya/videollm-online-8b-v1plus"
    )
    download.add_argument(
        "--preset", default=None, help="config of a released adapter: 8b-v1plus (default for adapters) or 8b-v1"
    )
    download.add_argument("--llm", default=None, help="base LLM hub id, instead of the one the model names")
    download.add_argument("--vision", default=None, help="vision encoder hub id, instead of the one the model names")
    add_offline_option(download)
    download.set_defaults(func=cmd_download)

    render = commands.add_parser(
        "render",
        help="write a video with the conversation beside or below the frames, optionally with the responses spoken",
    )
    render.add_argument("history", help="history JSON written by `narrate --output`")
    render.add_argument("--video", help="the source video (default: the history's video_path)")
    render.add_argument("--out", "-o", required=True, type=Path, help="output video (.mp4, .mov, .mkv)")
    render.add_argument(
        "--speech",
        action="store_true",
        help="mix each response, spoken, into the audio at its time (needs the tts extra)",
    )
    render.add_argument("--no-source-audio", action="store_true", help="leave the source's own audio out")
    render.add_argument(
        "--layout",
        choices=("side", "below"),
        default="side",
        help="conversation panel right of the frames or under them (default: side)",
    )
    render.add_argument("--panel-size", type=int, help="panel width (side) or height (below) in pixels")
    render.add_argument("--font-size", type=int, help="text height in pixels (default: from the video height)")
    render.add_argument("--crf", type=int, default=20, help="H.264 quality, 0 (lossless) to 51 (default: 20)")
    render.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    render.set_defaults(func=cmd_render)

    data = commands.add_parser("data", help="data tools").add_subparsers(
        dest="data_command", required=True, metavar="TOOL"
    )
    tokenize = data.add_parser("tokenize", help="show the ids and labels the model reads and learns for a conversation")
    tokenize.add_argument("conversation", help="JSON file: a list of messages (or {'conversation': [...]})")
    tokenize.add_argument(
        "--tokenizer", help="tokenizer dir, .gguf file, hub id or package:PKG/FILE.gguf (default: the preset's LLM)"
    )
    tokenize.add_argument("--preset", default="demo", help="config preset for the format (default: demo)")
    tokenize.set_defaults(func=cmd_data_tokenize)

    world = data.add_parser(
        "synth-world", help="render synthetic activity videos with exact annotations and their streaming conversations"
    )
    world.add_argument("--out", required=True, type=Path, help="output directory (resumable)")
    world.add_argument("--videos", type=int, default=100, help="number of videos (default: 100)")
    world.add_argument("--seed", type=int, default=0, help="world seed; each video's seed derives from it")
    world.add_argument("--size", type=int, default=256, help="frame width and height in pixels (default: 256)")
    world.add_argument("--video-fps", type=int, default=10, help="frame rate of the rendered mp4 (default: 10)")
    world.add_argument("--min-duration", type=real, default=20.0, help="shortest video in seconds (default: 20)")
    world.add_argument("--max-duration", type=real, default=60.0, help="longest video in seconds (default: 60)")
    world.add_argument(
        "--time-grid",
        type=real,
        default=0.0,
        help="snap event times to this grid in seconds, e.g. 0.5 for 2 fps training (default: off)",
    )
    world.add_argument("--stream-fps", type=fps_value, default=2.0, help="frame rate of the conversations (default: 2)")
    world.add_argument("--workers", type=int, default=1, help="render in this many processes (default: 1)")
    world.add_argument("--quiet", "-q", action="store_true")
    world.set_defaults(func=cmd_data_synth_world)

    preprocess = data.add_parser(
        "preprocess",
        help="sample and letterbox videos into per-video frame files (split by RANK/WORLD_SIZE under torchrun)",
    )
    preprocess.add_argument("videos", help="directory of videos")
    preprocess.add_argument("--out", required=True, type=Path, help="output directory of .safetensors files")
    preprocess.add_argument("--preset", help="take --fps and --resolution from a model preset")
    preprocess.add_argument("--fps", type=fps_value)
    preprocess.add_argument("--resolution", type=int)
    preprocess.add_argument("--workers", type=int, default=1, help="processes per rank (default: 1)")
    preprocess.add_argument("--quiet", "-q", action="store_true")
    add_slurm_options(preprocess)
    preprocess.set_defaults(func=cmd_data_preprocess)

    features = data.add_parser(
        "features",
        help="vision encoder features of preprocessed frames (frozen-encoder "
        "training; split by RANK/WORLD_SIZE under torchrun)",
    )
    features.add_argument("frames", help="directory written by `data preprocess`")
    features.add_argument("--out", required=True, type=Path)
    add_model_options(features)
    features.add_argument("--batch-size", type=int, default=64)
    features.add_argument("--quiet", "-q", action="store_true")
    add_slurm_options(features)
    features.set_defaults(func=cmd_data_features)

    convert = data.add_parser(
        "convert", help="a dataset's annotation files -> stream conversations (JSONL) with frame ranges, for `train`"
    )
    convert.add_argument(
        "--dataset",
        required=True,
        help="ego4d-narration, ego4d-refined-narration, ego4d-goalstep-livechat, robustness, ...",
    )
    convert.add_argument(
        "--anno-root", required=True, type=Path, help="the dataset's annotation directory (or, for dialogues, a file)"
    )
    convert.add_argument("--out", required=True, type=Path, help="JSONL of {video, conversation, start_frame, ...}")
    convert.add_argument("--split", default="train", help="train, val or test (default: train)")
    convert.add_argument("--fps", type=fps_value, default=2.0, help="frame rate of the frames (default: 2)")
    convert.add_argument(
        "--frames",
        type=Path,
        help="preprocessed frames/features: each video's length is read "
        "there (robustness: its synthetic videos are written there)",
    )
    convert.add_argument(
        "--video-metadata",
        type=Path,
        help="Ego4D's ego4d.json, or a JSON map video -> seconds (default: ANNO_ROOT/ego4d.json when present)",
    )
    convert.add_argument(
        "--augment",
        type=int,
        default=0,
        metavar="N",
        help="add N augmented copies of each conversation (wrong, late, missed turns)",
    )
    convert.add_argument("--max-frames", type=int, help="cut conversations before this many frames")
    convert.add_argument("--seed", type=int, default=0)
    convert.set_defaults(func=cmd_data_convert)

    synth = data.add_parser(
        "synthesize", help="streaming dialogues written by an LLM from timestamped annotations (resumable)"
    )
    synth.add_argument(
        "annotations",
        type=Path,
        help="Ego4D annotation dir (goalstep_{split}.json) or a JSON/JSONL of {video, annotations}",
    )
    synth.add_argument("--out", required=True, type=Path, help="JSONL of dialogues (appended; a run resumes)")
    synth.add_argument("--source", choices=("ego4d-goalstep", "generic"), default="generic")
    synth.add_argument("--splits", default="train,val", help="GoalStep splits (default: train,val)")
    synth.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    synth.add_argument("--llm-name", default="default", help="model name sent to the endpoint")
    synth.add_argument("--api-key", help="bearer token for the endpoint (default: $OPENAI_API_KEY)")
    synth.add_argument("--concurrency", type=int, default=8, help="parallel requests to the endpoint (default: 8)")
    synth.add_argument("--timeout", type=positive_float, default=600.0, help="seconds per request (default: 600)")
    synth.add_argument("--retries", type=int, default=3, help="retries of a failed request (default: 3)")
    synth.add_argument(
        "--hf-model", help="local Hugging Face causal LM: directory, cached hub id, .gguf or package:PKG/FILE.gguf"
    )
    synth.add_argument("--device", default="cpu")
    synth.add_argument("--dtype", default=None)
    synth.add_argument("--fps", type=fps_value, default=2.0)
    synth.add_argument("--dialogues-per-item", type=int, default=2)
    synth.add_argument("--questions", type=int, default=3, help="user questions per dialogue (default: 3)")
    synth.add_argument("--min-span", type=real, default=60.0, help="drop dialogues shorter than this (s)")
    synth.add_argument("--max-span", type=real, default=3600.0, help="drop dialogues longer than this (s)")
    synth.add_argument("--max-new-tokens", type=int, default=2048)
    synth.add_argument("--temperature", type=real, default=0.0)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--limit", type=int, help="only the first N annotated items")
    synth.add_argument("--retry-dropped", action="store_true", help="ask again for dialogues an earlier run dropped")
    synth.add_argument("--quiet", "-q", action="store_true")
    synth.set_defaults(func=cmd_data_synthesize)

    evaluate = commands.add_parser(
        "eval",
        help="the paper's metrics on a dataset: streaming metrics, COIN and Ego4D LTA benchmarks",
        description="Score a model on a dataset and print a table (JSON with --output). Datasets: world (a "
        "synthetic world), coin-step, coin-task, coin-next, coin-procedure, coin-procedure-goal, "
        "ego4d-lta, and the streaming metrics on any stream dataset of `data convert` (ego4d-narration, "
        "...). Under torchrun the samples are shared between the processes.",
    )
    add_model_options(evaluate)
    evaluate.add_argument("--dataset", default="world", help="dataset name (default: world)")
    evaluate.add_argument(
        "--data-root",
        required=True,
        type=Path,
        help="the dataset's directory (a synthetic world, or the annotation files)",
    )
    evaluate.add_argument("--split", help="split to score (default: test for COIN, val otherwise)")
    evaluate.add_argument(
        "--frames",
        type=Path,
        help="preprocessed frames or features of the videos (default: DATA_ROOT/frames or DATA_ROOT/features)",
    )
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N videos (world) or samples")
    evaluate.add_argument("--threshold", type=unit_float, help="decision threshold (default: the model's)")
    evaluate.add_argument(
        "--engine",
        choices=["default", "fast"],
        default="default",
        help="world: the engine that narrates each video (fast: static cache, CUDA graphs on a GPU)",
    )
    evaluate.add_argument(
        "--cache-tokens",
        type=positive_int,
        metavar="N",
        help="world, fast engine: keep at most N tokens while narrating (the memory policy's cost)",
    )
    evaluate.add_argument(
        "--ahead",
        type=positive_int,
        default=16,
        metavar="N",
        help="world, fast engine: narrate N frames per forward (the same turns; 1: frame by frame)",
    )
    evaluate.add_argument(
        "--weights",
        choices=["fp8", "int8"],
        default=None,
        help="world: narrate with float8 / int8 linear weights (implies the fast engine)",
    )
    evaluate.add_argument(
        "--window",
        type=positive_float,
        default=1.0,
        help="seconds within which a said sentence matches a ground-truth narration (default: 1)",
    )
    evaluate.add_argument(
        "--max-new-tokens", type=int, default=512, help="longest benchmark answer in tokens (default: 512, as the seed)"
    )
    evaluate.add_argument(
        "--num-beams", type=int, default=5, help="Ego4D LTA: beams, and candidates K scored (default: 5, as the seed)"
    )
    evaluate.add_argument("--batch-size", type=int, default=1, help="benchmark prompts generated together")
    evaluate.add_argument("--output", "--out", "-o", type=Path, help="write the report as JSON here")
    evaluate.add_argument(
        "--model-card",
        action="store_true",
        help="also keep the report in the --model checkpoint (eval_results.json) and write its "
        "table into the checkpoint's model card (README.md)",
    )
    add_threads_option(evaluate)
    evaluate.add_argument("--quiet", "-q", action="store_true")
    evaluate.set_defaults(func=cmd_eval)

    train = commands.add_parser(
        "train",
        help="train a LIVE model (LoRA + connector, vision optional) on stream conversations; torchrun for many GPUs",
        description="Train on stream conversations (`data synth-world` or `data convert`) over preprocessed frames "
        "(`data preprocess`) or features (`data features`). Checkpoints go to OUTPUT_DIR/checkpoint-STEP "
        "and the final model to OUTPUT_DIR/final, which narrate/demo/eval load with --model. Under "
        "torchrun each GPU takes its share of every batch.",
    )
    train.add_argument("--data", required=True, help="JSONL of samples {video, conversation, start_frame}")
    train.add_argument("--frames", required=True, help="directory of preprocessed frames (or features)")
    train.add_argument("--output-dir", required=True, help="checkpoints and the final model go here")
    train.add_argument("--model", help="preset (fresh connector) or checkpoint to continue (default: demo)")
    train.add_argument("--eval-data", help="JSONL of held-out samples")
    train.add_argument("--eval-frames", help="frames directory of the held-out samples (default: --frames)")
    train.add_argument("--features", action="store_true", default=None, help="frames dir holds features")
    train.add_argument("--train-vision", action="store_true", default=None, help="train the vision encoder too")
    train.add_argument("--lora-r", type=int, help="LoRA rank (default: 16)")
    train.add_argument("--lora-alpha", type=int, help="LoRA scale alpha (default: 32)")
    train.add_argument("--lora-dropout", type=real, help="LoRA dropout (default: 0.05)")
    train.add_argument("--lora-targets", help="regex or comma-separated module names ('' for no LoRA)")
    train.add_argument(
        "--stream-loss-weight",
        type=real,
        help="weight of the loss at frame positions, the when-to-speak signal (default: the model's, 1.0)",
    )
    train.add_argument("--learning-rate", type=real, help="peak learning rate (default: 2e-4)")
    train.add_argument(
        "--vision-learning-rate",
        type=real,
        help="learning rate of the vision encoder with --train-vision (default: --learning-rate)",
    )
    train.add_argument("--num-epochs", type=real, help="passes over the data (default: 1)")
    train.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (default: the epochs)")
    train.add_argument("--batch-size", type=int, help="conversations per step on each GPU (default: 4)")
    train.add_argument("--grad-accum", type=int, help="steps whose gradients add up before an update (default: 1)")
    train.add_argument("--max-length", type=int, help="cut conversations to this many tokens (default: no cut)")
    train.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast (GPU)")
    train.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in the backward pass: less memory, a bit slower",
    )
    train.add_argument("--logging-steps", type=int, help="steps between log lines (default: 10)")
    train.add_argument("--save-steps", type=int, help="steps between checkpoints (default: 200)")
    train.add_argument("--eval-steps", type=int, help="steps between evaluations on --eval-data (default: 200)")
    train.add_argument(
        "--stream-eval-samples",
        type=int,
        help="held-out conversations scored with the streaming metrics (LM-PPL, TimeDiff, Fluency, "
        "LM-Correctness) at each evaluation, besides the loss (default: 64; 0: loss only)",
    )
    train.add_argument("--seed", type=int, help="random seed (default: 42)")
    train.add_argument(
        "--dataloader-workers", type=int, help="processes loading data (default: 0: in the training process)"
    )
    train.add_argument(
        "--max-time-minutes",
        type=real,
        help="stop (and save) after this many minutes, counted from the first step; the "
        "learning rate decays over them. With --resume, the minutes already trained count",
    )
    train.add_argument("--save-dtype", help="dtype of the final checkpoint's weights, e.g. float16")
    train.add_argument(
        "--report-to",
        choices=("tensorboard", "wandb", "none"),
        help="log losses and metrics to TensorBoard (event files in OUTPUT_DIR/runs/), W&B or "
        "nowhere (default: tensorboard when it is installed, else none)",
    )
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    train.set_defaults(func=cmd_train)

    vision = commands.add_parser(
        "train-vision",
        help="pretrain the vision encoder on frames of the synthetic world, rendered on the fly or "
        "read from a preprocessed world (--world); heads on its frame tokens read what is "
        "where; the result seeds `train --model`",
    )
    vision.add_argument(
        "--output-dir",
        required=True,
        help="the checkpoint goes to OUTPUT_DIR/final, the log (vision_log.jsonl) and the metrics "
        "(vision_metrics.json) beside it",
    )
    vision.add_argument(
        "--model", help="preset (fresh encoder) or checkpoint whose encoder to train (default: demo-resnet)"
    )
    vision.add_argument("--video-size", type=int, help="the world's video size in pixels (synth-world --size; 256)")
    vision.add_argument("--video-fps", type=int, help="the world's video frame rate (synth-world --video-fps; 2)")
    vision.add_argument("--time-grid", type=real, help="the world's event time grid (synth-world --time-grid; 0.5)")
    vision.add_argument("--max-steps", type=int, help="optimiser steps (default: until --max-time-minutes)")
    vision.add_argument(
        "--max-time-minutes",
        type=real,
        help="wall-clock budget, counted from the first batch; the learning rate decays over it",
    )
    vision.add_argument("--batch-size", type=int, help="frames per step (default: 256)")
    vision.add_argument("--learning-rate", type=real, help="default: 1e-3")
    vision.add_argument("--weight-decay", type=real, help="default: 0.05")
    vision.add_argument("--warmup-ratio", type=real, help="default: 0.05")
    vision.add_argument(
        "--world",
        dest="world_dir",
        help="train on the recorded frames of this world (`data synth-world`, then `data preprocess "
        "WORLD/videos --out WORLD/frames` with the model's preset) instead of rendering: the "
        "GPU sets the pace",
    )
    vision.add_argument("--frames", dest="frames_dir", help="preprocessed frames of --world (default: WORLD/frames)")
    vision.add_argument("--frames-per-episode", type=int, help="frames taken per episode visit (default: 8)")
    vision.add_argument("--workers", type=int, help="DataLoader processes rendering or reading frames (default: 0)")
    vision.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    vision.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast (GPU)")
    vision.add_argument("--seed", type=int)
    vision.add_argument(
        "--heldout-seed",
        type=int,
        help="world seed of the held-out videos: their episodes are "
        "never trained on and give the accuracy (default: 2)",
    )
    vision.add_argument("--heldout-videos", type=int, help="held-out videos of that world (default: 50)")
    vision.add_argument("--eval-frames", type=int, help="held-out frames per accuracy report (default: 1024)")
    vision.add_argument("--eval-every", type=int, help="steps between accuracy reports (default: 500)")
    vision.add_argument("--log-every", type=int, help="steps between log lines (default: 25)")
    vision.add_argument("--save-dtype", help="dtype of the checkpoint's weights, e.g. float16")
    vision.add_argument("--quiet", "-q", action="store_true")
    vision.set_defaults(func=cmd_train_vision)
    serve = commands.add_parser(
        "serve",
        help="serve the model over HTTP: a WebSocket streaming API, SSE, health and metrics (docs/api.md)",
        description="Serve the model to programs: clients stream frames and questions over a WebSocket and receive "
        "the turns as they are said (protocol in docs/api.md; a Python client is videollm_online.apps.client). "
        "Binds 127.0.0.1 unless --host says otherwise; set --token before exposing it.",
    )
    add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument(
        "--token",
        help="require `Authorization: Bearer TOKEN` on every endpoint but /health "
        "(default: $VIDEOLLM_ONLINE_TOKEN; unset: no auth)",
    )
    serve.add_argument("--max-sessions", type=int, default=64, help="streaming sessions at once (default: 64)")
    serve.add_argument(
        "--allowed-video-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="POST /v1/chat/completions may read videos by path under DIR (repeatable; default: "
        "none, only uploaded videos)",
    )
    serve.add_argument(
        "--max-upload-bytes",
        type=positive_int,
        default=64 * 1024 * 1024,
        help="largest POST /v1/chat/completions body, an uploaded video included (default: 64 MiB)",
    )
    serve.add_argument(
        "--max-frame-bytes", type=int, default=2 * 1024 * 1024, help="largest frame message in bytes (default: 2 MiB)"
    )
    serve.add_argument(
        "--max-frame-rate",
        type=positive_float,
        default=30.0,
        help="frame messages per second a session may send (default: 30)",
    )
    serve.add_argument(
        "--max-pending-frames",
        type=int,
        default=8,
        help="frames a session may have waiting; beyond it the oldest is dropped (default: 8)",
    )
    serve.add_argument(
        "--max-query-rate", type=positive_float, default=1.0, help="questions per second a session may ask (default: 1)"
    )
    serve.add_argument(
        "--max-pending-queries",
        type=positive_int,
        default=4,
        help="questions a session may have waiting for their answers (default: 4)",
    )
    serve.add_argument(
        "--engine",
        choices=["default", "fast"],
        default="default",
        help="default: sessions take turns on one worker; fast: all sessions batched into one forward "
        "per step on a static cache (Llama-family LLMs; CUDA graphs on a GPU)",
    )
    serve.add_argument(
        "--cache-tokens",
        type=positive_int,
        default=2048,
        help="fast engine: tokens kept per session, the attention sink and the most recent ones "
        "(memory: max-sessions x cache-tokens x the model's KV bytes a token; default: 2048)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=60.0,
        help="close a session after this many seconds without a message (default: 60)",
    )
    add_threads_option(serve)
    serve.set_defaults(func=cmd_serve)

    demo = commands.add_parser(
        "demo",
        help="the web demo (Gradio): play a video or use the webcam, ask at any time",
        description="A web page (http://127.0.0.1:7860) where the model watches a video with you: pick an example "
        "(videos of the synthetic world, made on first start), upload a video or turn on the webcam, "
        "and ask at any moment. The page shows each turn with its time, the model's pace and lag, and "
        "offers the conversation for download.",
    )
    add_model_options(demo)
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    demo.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    demo.add_argument(
        "--example",
        action="append",
        type=Path,
        metavar="VIDEO",
        help="an example video to offer (repeatable; default: four synthetic-world videos, made once)",
    )
    demo.add_argument(
        "--engine",
        choices=["default", "fast"],
        default="default",
        help="fast: viewers' streams batched on the static-cache engine (Llama-family LLMs)",
    )
    demo.add_argument(
        "--cache-tokens",
        type=positive_int,
        default=4096,
        help="fast engine: tokens kept per viewer (the attention sink and the most recent ones)",
    )
    demo.add_argument(
        "--threshold",
        type=unit_float,
        default=None,
        help="initial silence threshold (default: the model's; the page has a slider)",
    )
    demo.add_argument("--max-new-tokens", type=int, default=64, help="longest response (default: 64)")
    add_threads_option(demo)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "offline", False):
        from ..core.hub_download import go_offline

        go_offline()
    if hasattr(args, "threads"):  # narrate, eval, demo, serve
        from ..utils.threads import set_threads

        set_threads(args.threads)
        if args.verbose:
            import torch

            print(f"videollm-online: torch uses {torch.get_num_threads()} CPU threads", file=sys.stderr)
    show_warnings_as_lines()
    if not args.verbose:
        quiet_libraries()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        if args.verbose or not is_user_error(error):
            raise
        print(f"videollm-online: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


def is_user_error(error: BaseException) -> bool:
    from ..video import VideoSourceError

    return isinstance(error, (UserError, VideoSourceError))


def show_warnings_as_lines() -> None:
    """Our own warnings (a corrupt stretch of video, ...) read as one `warning:` line on stderr."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("videollm_online"):
            print(f"videollm-online: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def quiet_libraries() -> None:
    """Keep library chatter (load reports, deprecations) off a user's terminal; --verbose shows it."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
