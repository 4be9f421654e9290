"""`videollm-online train` and `videollm-online train-vision`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .config_file import add_config_options
from .options import Option, add_fields, build

HELP = "train a LIVE model (LoRA + connector, vision optional) on stream conversations; torchrun for many GPUs"
DESCRIPTION = """\
Train on stream conversations (`data synth-world` or `data convert`) over preprocessed frames (`data preprocess`)
or features (`data features`). Checkpoints go to OUTPUT_DIR/checkpoint-STEP and the final model to
OUTPUT_DIR/final, which narrate/demo/eval load with --model. Under torchrun each GPU takes its share of every
batch. The options can be kept in a YAML file (--config; --print-config writes one).

example:
  videollm-online train --data world/conversations.jsonl --frames world/frames --output-dir runs/demo --max-steps 100
"""
VISION_HELP = (
    "pretrain the vision encoder on frames of the synthetic world, rendered on the fly or read from a preprocessed "
    "world (--world); heads on its frame tokens read what is where; the result seeds `train --model`"
)
VISION_DESCRIPTION = """\
Pretrain the vision encoder on frames of the synthetic world, rendered on the fly or read from a preprocessed world
(--world): heads on its frame tokens learn to read what is where, and held-out episodes give the accuracy. The
checkpoint (trained vision, fresh connector) seeds `train --model`.

example:
  videollm-online train-vision --output-dir runs/vision --max-time-minutes 30 --device cuda --bf16
"""


@dataclass
class TrainCommandOptions:
    resume: bool = False
    """Continue from the last checkpoint in --output-dir."""


@dataclass
class VisionCommandOptions:
    quiet: bool = False
    """No progress bar."""


def add_command(commands: argparse._SubParsersAction) -> None:
    from ...train.trainer import REPORT_TARGETS, TrainConfig

    parser = commands.add_parser("train", help=HELP, description=DESCRIPTION)
    add_fields(
        parser,
        TrainConfig,
        {name: None for name in TrainConfig.__dataclass_fields__}
        | {
            "report_to": Option(choices=REPORT_TARGETS),
        },
    )
    add_fields(parser, TrainCommandOptions, ["resume"])
    add_config_options(parser)
    parser.set_defaults(func=cmd_train, command_parser=parser)


def add_vision_command(commands: argparse._SubParsersAction) -> None:
    from ...train.vision_pretrain import VisionPretrainConfig

    parser = commands.add_parser("train-vision", help=VISION_HELP, description=VISION_DESCRIPTION)
    renamed = {"world_dir": Option(flags=("--world",)), "frames_dir": Option(flags=("--frames",))}
    add_fields(
        parser, VisionPretrainConfig, {name: renamed.get(name) for name in VisionPretrainConfig.__dataclass_fields__}
    )
    add_fields(parser, VisionCommandOptions, {"quiet": Option(flags=("--quiet", "-q"))})
    add_config_options(parser)
    parser.set_defaults(func=cmd_train_vision, command_parser=parser)


def cmd_train(args: argparse.Namespace) -> int:
    from ...train.trainer import TrainConfig, train
    from ...utils.files import check_output

    config = build(TrainConfig, args)
    check_output(config.output_dir, directory=True, what="--output-dir")
    final = train(config, resume=args.resume)
    print(f"final checkpoint: {final}", file=sys.stderr)
    return 0


def cmd_train_vision(args: argparse.Namespace) -> int:
    from ...train.vision_pretrain import VisionPretrainConfig, pretrain_vision
    from ...utils.files import check_output

    config = build(VisionPretrainConfig, args)
    check_output(config.output_dir, directory=True, what="--output-dir")
    result = pretrain_vision(config, progress=not args.quiet)
    print(
        f"checkpoint (trained vision, fresh connector): {result.final_dir}; metrics: "
        f"{Path(config.output_dir) / 'vision_metrics.json'}",
        file=sys.stderr,
    )
    return 0
