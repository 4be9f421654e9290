"""`videollm-online narrate`: watch a source frame by frame and print each turn as it happens."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ...utils.errors import UserError
from .options import ARGUMENT, Option, add_fields, build, fps_value, parse_query_at, query_text
from .shared import add_engine_options, add_model_options, check_device, load_model_from_args

HELP = "stream a video or live source and print the assistant's turns"
DESCRIPTION = """\
Watch a video file, an image folder, a webcam or a stream frame by frame, and print each turn as it happens:
what the model says unasked, and its answers to the questions you ask at given times.

example:
  videollm-online narrate world/videos/000000.mp4 --query-at '10:How many objects are there?' -o history.json
"""


@dataclass
class NarrateOptions:
    """What to watch, what to ask, and where the conversation goes."""

    source: str
    """Video file, image directory, /dev/videoN, or rtsp/rtmp/http(s) URL."""
    query: str | None = None
    """A question asked at time 0."""
    query_at: list[tuple[float, str]] | None = None
    """A question asked at a video time (repeatable)."""
    fps: float | None = None
    """Frames per second fed to the model (default: the model's)."""
    realtime: bool = False
    """Pace a file to the wall clock, as a live feed."""
    output: Path | None = None
    """Write the history JSON here, updated after every turn."""
    speak: bool = False
    """Speak each response aloud as it is complete (needs the tts extra)."""
    speech_dir: Path | None = None
    """Keep each spoken response as a WAV file here."""
    quiet: bool = False
    """No progress bar or summary."""


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("narrate", help=HELP, description=DESCRIPTION)
    add_fields(parser, NarrateOptions, {"source": ARGUMENT})
    add_model_options(parser)
    add_fields(
        parser,
        NarrateOptions,
        {
            "query": Option(type=query_text),
            "query_at": Option(type=parse_query_at, repeat=True, metavar="SECONDS:TEXT"),
            "fps": Option(type=fps_value),
            "realtime": None,
            "output": Option(flags=("--output", "-o")),
            "speak": None,
            "speech_dir": Option(metavar="DIR"),
            "quiet": Option(flags=("--quiet", "-q")),
        },
    )
    add_engine_options(parser)
    parser.set_defaults(func=cmd_narrate, command_parser=parser)


def cmd_narrate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ...engine import EngineConfig
    from ...utils.files import check_output
    from ...video import open_video
    from ..narrate import History, narrate_frames, print_status

    source = args.source
    if not (source.startswith(("rtsp://", "rtmp://", "http://", "https://", "/dev/")) or Path(source).exists()):
        raise UserError(f"no such file or directory: {source}")
    queries = ([(0.0, args.query)] if args.query else []) + list(args.query_at or [])
    engine = build(EngineConfig, args)
    if args.output:
        check_output(args.output, inputs=[source], what="--output")
    if args.speak or args.speech_dir:
        from ..speech import require_tts

        require_tts("--speak")
        if args.speech_dir:
            check_output(args.speech_dir, directory=True, what="--speech-dir")
    check_device(args.device)
    if Path(source).exists():  # a local file or folder: find out it is no video before loading any weights
        from ...core.checkpoint import model_config

        config = model_config(args.model, args.preset)
        with open_video(source, fps=args.fps or config.frame_fps, resolution=config.frame_resolution) as probe:
            next(iter(probe), None)
    model, template, name = load_model_from_args(args)
    from ...core.bundled import not_world_note

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
        from ..speech import start_speaking

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
