"""`videollm-online demo`: the web page where the model watches a video with you."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ...utils.errors import UserError
from .options import Option, add_fields
from .shared import BATCHED_CACHE_TOKENS, add_engine_options, add_model_options, load_model_from_args

HELP = "the web demo (Gradio): play a video or use the webcam, ask at any time"
DESCRIPTION = """\
A web page (http://127.0.0.1:7860) where the model watches a video with you: pick an example (videos of the
synthetic world, made on first start), upload a video or turn on the webcam, and ask at any moment. The page shows
each turn with its time, the model's pace and lag, and offers the conversation for download.

example:
  videollm-online demo --port 7860
"""


@dataclass
class DemoOptions:
    """Where the page is served, and what it offers."""

    host: str = "127.0.0.1"
    """Address to bind (127.0.0.1: this machine only)."""
    port: int = 7860
    """Port of the page."""
    example: list[Path] | None = None
    """An example video to offer (repeatable; default: four synthetic-world videos, made once)."""


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help=HELP, description=DESCRIPTION)
    add_model_options(parser)
    add_fields(
        parser, DemoOptions, {"host": None, "port": None, "example": Option(type=Path, repeat=True, metavar="VIDEO")}
    )
    add_engine_options(parser, ["engine", "cache_tokens", "threshold", "max_new_tokens"])
    parser.set_defaults(func=cmd_demo, command_parser=parser)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..webdemo import run

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
        cache_tokens=args.cache_tokens or BATCHED_CACHE_TOKENS,
    )
    return 0
