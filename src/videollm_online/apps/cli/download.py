"""`videollm-online download`: fetch a released model and the base models it names ahead of time."""

from __future__ import annotations

import argparse
import sys

from .options import Option, add_fields
from .shared import ModelOptions, add_model_options

HELP = "fetch a model and the base models it names into the Hugging Face cache"
DESCRIPTION = """\
Download a released model ahead of time: the adapter, and the base LLM and vision encoder its preset names (for
chenjoya/videollm-online-8b-v1plus: meta-llama/Meta-Llama-3-8B-Instruct, gated: accept its licence on the hub and
run `hf auth login` first, and google/siglip-large-patch16-384). Models also download on first use; this does it
now.

example:
  videollm-online download chenjoya/videollm-online-8b-v1plus
"""


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("download", help=HELP, description=DESCRIPTION)
    add_fields(
        parser,
        ModelOptions,
        {
            "model": Option(
                positional=True,
                help="hub id (or local directory) of the model, e.g. chenjoya/videollm-online-8b-v1plus",
            )
        },
    )
    add_model_options(parser, ["preset", "llm", "vision", "offline"])
    parser.set_defaults(func=cmd_download, command_parser=parser)


def cmd_download(args: argparse.Namespace) -> int:
    from ...core.hub_download import download_model

    for what, name, path in download_model(args.model, preset=args.preset, llm=args.llm, vision=args.vision):
        print(f"{what} {name}: {path}", file=sys.stderr)
    print(f"ready: videollm-online narrate VIDEO --model {args.model} --device cuda", file=sys.stderr)
    return 0
