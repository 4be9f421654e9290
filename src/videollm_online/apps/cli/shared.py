"""The option groups several commands share, each declared once: which model to load and how (MODEL LOADING), and
how the engine narrates (ENGINE SETTINGS)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ...core.policy import DEFAULT_MAX_NEW_TOKENS, DEFAULT_THRESHOLD
from ...engine import ENGINES
from ...engine.batch import engine_in_use
from ...utils.errors import UserError
from .options import Option, Parser, add_fields, positive_int, threshold_value

BATCHED_CACHE_TOKENS = 2048
"""Tokens kept per stream where the fast engine batches many streams (serve, demo) and --cache-tokens is not given."""


@dataclass
class ModelOptions:
    """Which model to load, and how."""

    model: str | None = None
    """A checkpoint directory, a hub id (downloaded on first use, e.g. chenjoya/videollm-online-8b-v1plus), or a
    preset name for an untrained model (default: the bundled demo model, which knows the synthetic world)."""
    preset: str | None = None
    """The config of a released adapter (a --model with adapter files only): 8b-v1plus (assumed when not given) or
    8b-v1; a videollm-online checkpoint carries its own."""
    llm: str | None = None
    """Base LLM path or hub id (overrides the one the model names)."""
    vision: str | None = None
    """Vision encoder path or hub id (overrides the one the model names)."""
    device: str = "cpu"
    """Torch device, e.g. cpu, cuda, cuda:1."""
    dtype: str | None = None
    """Weights' type: float32, bfloat16 or float16 (default: float32 on cpu, bfloat16 on cuda)."""
    merge_lora: bool = False
    """Merge the LoRA adapter into the LLM for speed (the fast engine always does: its weights are the merged ones,
    which the model then shares instead of keeping a copy)."""
    vision_fp8: bool = False
    """Run the vision tower's encoder layers (SigLIP, CLIP) as FP8 matmuls, activations and weights in float8 e4m3
    (a GPU of compute capability 8.9+: Ada, Hopper): faster encoding where many streams share a GPU."""
    offline: bool = False
    """Never download: hub ids must be in the local Hugging Face cache (as HF_HUB_OFFLINE=1)."""
    threads: int | None = None
    """CPU threads for torch (default: $OMP_NUM_THREADS, else the physical cores, shared between the processes
    torchrun starts on this machine)."""


@dataclass
class EngineSettings:
    """How the engine narrates a stream: which engine, when to speak, how long a response may be, what it keeps."""

    engine: str = "default"
    """default: transformers' cache, any LLM; fast: static cache and CUDA graphs on a GPU (Llama-family LLMs)."""
    threshold: float | None = None
    """Stay silent after a frame when P(frame interval) >= this, in [0, 1]; higher makes the model more talkative.
    None: the model's own (`--help` names the released models')."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """A response stops at eos or after this many tokens."""
    cache_tokens: int | None = None
    """Keep at most N tokens per stream (the attention sink and the most recent ones), so that an endless stream
    runs in fixed memory; implies --engine fast (default: every token; where the fast engine batches many streams,
    as serve and demo do, 2048 a stream)."""
    ahead: int = 16
    """Fast engine on a file: feed N frames per forward, rolled back where the model speaks (the same turns as frame
    by frame; 1: frame by frame; live sources: always 1)."""
    weights: str | None = None
    """fp8 / int8: the LLM's linear weights in one byte (float8 e4m3 / int8, per-channel scales, weight-only; the
    float ones freed at load; implies --engine fast): ~1.3x one stream's frames/s on an H100; int8 stays closer to
    the bf16 model's answers."""


MODEL_OPTIONS = {
    "model": None,
    "preset": None,
    "llm": None,
    "vision": None,
    "device": None,
    "dtype": Option(choices=("float32", "bfloat16", "float16")),
    "merge_lora": None,
    "vision_fp8": None,
    "offline": None,
    "threads": Option(type=positive_int, metavar="N"),
}
ENGINE_OPTIONS = {
    "engine": Option(choices=ENGINES),
    "threshold": Option(
        type=threshold_value,
        help="Stay silent after a frame when P(frame interval) >= this, in [0, 1]; higher makes the model more "
        f"talkative (default: the model's own; the released models': {DEFAULT_THRESHOLD})",
    ),
    "max_new_tokens": None,
    "cache_tokens": Option(type=positive_int, metavar="N"),
    "ahead": Option(type=positive_int, metavar="N"),
    "weights": Option(choices=("fp8", "int8")),
}


def add_model_options(parser: Parser, names: list[str] | None = None) -> None:
    """The MODEL LOADING group, or the `names` of it that a command takes."""
    group = parser.add_argument_group("model loading")
    add_fields(parser, ModelOptions, {name: MODEL_OPTIONS[name] for name in names or MODEL_OPTIONS}, group)


def add_engine_options(parser: Parser, names: list[str] | None = None) -> None:
    """The ENGINE SETTINGS group, or the `names` of it that a command takes."""
    group = parser.add_argument_group("engine settings")
    add_fields(parser, EngineSettings, {name: ENGINE_OPTIONS[name] for name in names or ENGINE_OPTIONS}, group)


def check_device(device: str | None) -> None:
    """A CUDA device that is not here is one line, before any weights load."""
    if device and str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: no CUDA device is available here (use --device cpu)")
        index = str(device).partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def load_model_from_args(args: argparse.Namespace):
    """The model the MODEL LOADING options name: (model, template, name)."""
    from ...core.checkpoint import default_model, load_model
    from ...core.config import PRESETS

    check_device(args.device)
    vision_fp8 = getattr(args, "vision_fp8", False)
    if vision_fp8 and not str(args.device).startswith("cuda"):
        raise UserError(f"--vision-fp8 runs on a GPU (compute capability 8.9+); this is --device {args.device}")
    spec = args.model or default_model()
    if spec in PRESETS and not Path(spec).exists():
        print(
            f"note: {spec!r} is a preset, not a trained checkpoint: its connector is untrained, so what it says is "
            "noise (leave --model out for the bundled trained model)",
            file=sys.stderr,
        )
    dtype = args.dtype or ("bfloat16" if str(args.device).startswith("cuda") else "float32")
    loaded = load_model(
        args.model,
        preset=args.preset,
        llm=args.llm,
        vision=args.vision,
        device=args.device,
        dtype=dtype,
        merge_lora=args.merge_lora or uses_fast_engine(args),
    )
    weights = getattr(args, "weights", None)
    if weights:  # at load: the float linear weights are freed before anything else takes memory
        from ...engine.quant import quantize_linears

        quantize_linears(loaded[0].base_llm, weights)
    if vision_fp8:
        from ...engine.vision_fp8 import quantize_vision_tower

        quantize_vision_tower(loaded[0])
    return loaded


def uses_fast_engine(args: argparse.Namespace) -> bool:
    """Whether a command runs the fast engine: named, or implied by --cache-tokens or --weights."""
    options = (getattr(args, "engine", None) or "default", getattr(args, "cache_tokens", None))
    return engine_in_use(*options, getattr(args, "weights", None)) == "fast"


def model_argv(args: argparse.Namespace) -> list[str]:
    """The model options of a parsed command, as arguments again (for the tasks a SLURM launch starts)."""
    argv = []
    for option in ("model", "preset", "llm", "vision", "device", "dtype"):
        value = getattr(args, option, None)
        if value is not None:
            argv += [f"--{option}", str(value)]
    for flag in ("merge_lora", "vision_fp8"):
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    return argv
