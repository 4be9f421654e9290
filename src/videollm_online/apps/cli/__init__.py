"""The `videollm-online` command. Parsing and printing only: the work lives in the library modules.

One module per command; each command's options come from the typed configs that hold them (`options.add_fields`),
the options several commands share are declared once (`shared`). User errors (a missing file, a malformed option,
a model that is not here) print one line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from ...utils.errors import UserError
from . import data, demo, download, eval, narrate, render, serve, train
from .config_file import apply_config_file, print_config
from .options import EXIT_USER_ERROR, Parser

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

COMMANDS = {
    "narrate": (narrate.HELP, narrate.add_command),
    "download": (download.HELP, download.add_command),
    "render": (render.HELP, render.add_command),
    "data": (data.HELP, data.add_command),
    "eval": (eval.HELP, eval.add_command),
    "train": (train.HELP, train.add_command),
    "train-vision": (train.VISION_HELP, train.add_vision_command),
    "serve": (serve.HELP, serve.add_command),
    "demo": (demo.HELP, demo.add_command),
}
"""Each command's one-line help and the function that adds its parser."""

DESCRIPTION = """\
An online video LLM: it watches a video (file, webcam or stream) frame by frame, narrates what happens,
answers questions at any moment, and decides by itself when to speak.

examples:
  videollm-online data synth-world --out world --videos 1 --seed 2 --video-fps 2
  videollm-online narrate world/videos/000000.mp4 --query-at '10:How many objects are there?'
  videollm-online demo                      # the web page, http://127.0.0.1:7860
  videollm-online download chenjoya/videollm-online-8b-v1plus   # the released 8B model (GPU)

The bundled demo model knows only the synthetic world of `data synth-world`; for real video run the released
model with --model chenjoya/videollm-online-8b-v1plus --device cuda. `videollm-online COMMAND --help` says more.
"""


def build_parser(commands: Sequence[str] | None = None) -> Parser:
    """The command line. `commands`: those whose options to build (default: all); the others are listed with
    their help line only, so that a run imports the configs of its own command alone."""
    from ... import __version__

    parser = Parser(prog="videollm-online", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"videollm-online {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show library warnings and full tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_command) in COMMANDS.items():
        if commands is None or name in commands:
            add_command(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command an argument list runs: its first word that is not an option (the top-level options take no
    value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = command_of(argv)
    parser = build_parser([command])
    args = parser.parse_args(argv)
    show_warnings_as_lines()
    if not args.verbose:
        quiet_libraries()
    try:
        args = resolved(parser, argv, args)
        if args is None:  # --print-config
            return 0
        if getattr(args, "offline", False):
            from ...core.hub_download import go_offline

            go_offline()
        if hasattr(args, "threads"):  # narrate, eval, demo, serve
            from ...utils.threads import set_threads

            set_threads(args.threads)
            if args.verbose:
                import torch

                print(f"videollm-online: torch uses {torch.get_num_threads()} CPU threads", file=sys.stderr)
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


def resolved(parser: Parser, argv: list[str], args: argparse.Namespace) -> argparse.Namespace | None:
    """The arguments with a `--config` file's values under the command line's; None once `--print-config` printed
    them."""
    command: Parser = args.command_parser
    if getattr(args, "config", None) is not None:
        apply_config_file(command, args.config)
        args = parser.parse_args(argv)
    if getattr(args, "print_config", False):
        print_config(command, args)
        return None
    command.check_required(args)
    return args


def is_user_error(error: BaseException) -> bool:
    from ...video import VideoSourceError

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
