"""`videollm-online render`: a video with the conversation beside or below the frames."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .options import ARGUMENT, Option, add_fields, build

HELP = "write a video with the conversation beside or below the frames, optionally with the responses spoken"
DESCRIPTION = """\
Write a video with the conversation of a history (`narrate --output`) in a panel beside or below the frames, each
turn appearing at its time; with --speech, the responses spoken into the audio.

example:
  videollm-online render history.json -o narrated.mp4 --layout below
"""


@dataclass
class RenderOptions:
    """Which history, over which video, to which file."""

    history: str
    """History JSON written by `narrate --output`."""
    out: Path
    """Output video (.mp4, .mov, .mkv)."""
    video: str | None = None
    """The source video (default: the history's video_path)."""
    quiet: bool = False
    """No progress bar or summary."""


def add_command(commands: argparse._SubParsersAction) -> None:
    from ..render import RenderConfig

    parser = commands.add_parser(
        "render",
        help=HELP,
        description=DESCRIPTION,
    )
    add_fields(parser, RenderOptions, {"history": ARGUMENT, "video": None, "out": Option(flags=("--out", "-o"))})
    add_fields(
        parser,
        RenderConfig,
        {
            "speech": None,
            "source_audio": Option(flags=("--no-source-audio",), help="Leave the source's own audio out."),
            "layout": Option(choices=("side", "below")),
            "panel_size": None,
            "font_size": None,
            "crf": None,
        },
    )
    add_fields(parser, RenderOptions, {"quiet": Option(flags=("--quiet", "-q"))})
    parser.set_defaults(func=cmd_render, command_parser=parser)


def cmd_render(args: argparse.Namespace) -> int:
    from ..render import RenderConfig, describe, render_video

    result = render_video(
        args.history, args.out, video=args.video, config=build(RenderConfig, args), progress=not args.quiet
    )
    if not args.quiet:
        print(describe(result), file=sys.stderr)
    return 0
