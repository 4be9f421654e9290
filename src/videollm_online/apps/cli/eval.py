"""`videollm-online eval`: the paper's metrics on a dataset."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ...utils.distributed import distributed_rank, local_cuda_device
from ...utils.errors import UserError
from .config_file import add_config_options
from .options import Option, add_fields, build, positive_float
from .shared import add_engine_options, add_model_options, load_model_from_args

HELP = "the paper's metrics on a dataset: streaming metrics, COIN and Ego4D LTA benchmarks"
DESCRIPTION = """\
Score a model on a dataset and print a table (JSON with --output). Datasets: world (a synthetic world), coin-step,
coin-task, coin-next, coin-procedure, coin-procedure-goal, ego4d-lta, and the streaming metrics on any stream
dataset of `data convert` (ego4d-narration, ...). Under torchrun the samples are shared between the processes.

example:
  videollm-online eval --dataset world --data-root world --limit 3 --output report.json
"""


@dataclass
class EvalCommandOptions:
    """Where the report goes."""

    output: Path | None = None
    """Write the report as JSON here."""
    model_card: bool = False
    """Also keep the report in the --model checkpoint (eval_results.json) and write its table into the checkpoint's
    model card (README.md)."""
    quiet: bool = False
    """No progress bar."""


def add_command(commands: argparse._SubParsersAction) -> None:
    from ...eval.runner import EvalOptions

    parser = commands.add_parser("eval", help=HELP, description=DESCRIPTION)
    add_model_options(parser)
    add_fields(
        parser,
        EvalOptions,
        {
            "dataset": Option(default="world"),
            "data_root": None,
            "split": None,
            "frames": None,
            "limit": Option(metavar="N"),
        },
    )
    add_engine_options(parser, ["threshold", "engine", "cache_tokens", "ahead", "weights"])
    add_fields(parser, EvalOptions, {"window": Option(type=positive_float), "max_new_tokens": None, "num_beams": None})
    add_fields(parser, EvalOptions, ["batch_size"])
    add_fields(
        parser,
        EvalCommandOptions,
        {
            "output": Option(flags=("--output", "--out", "-o")),
            "model_card": None,
            "quiet": Option(flags=("--quiet", "-q")),
        },
    )
    add_config_options(parser)
    parser.set_defaults(func=cmd_eval, command_parser=parser)


def cmd_eval(args: argparse.Namespace) -> int:
    from ...core.config import CONFIG_FILE
    from ...eval.runner import EvalOptions, check_inputs, format_table, run_eval
    from ...utils.files import check_output, write_json_atomic

    if args.output:  # checked first: a path that cannot be written lost the whole evaluation
        check_output(args.output, what="--output")
    options = build(EvalOptions, args, progress=not args.quiet)
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
            from ...core.checkpoint import write_model_card

            card = write_model_card(args.model, eval_report={k: v for k, v in report.items() if k != "predictions"})
            print(f"evaluation table written to {card}", file=sys.stderr)
    return 0
