"""Why float8 e4m3 weights cost the bundled demo model more than int8: the fast engine's weight-only quantisation
(`engine.quant`, one scale per output channel, LoRA merged first, LM head left as it is) simulated on a CPU by fake
quantisation, and which cheap change within "e4m3 weights, per-channel or per-tensor scales, some layers left in
the model's dtype" brings FP8 close to int8.

    OMP_NUM_THREADS=2 nice -n 10 timeout 1500 .venv/bin/python benchmarks/fp8_sensitivity_cpu.py --videos 20

The bundled demo model is loaded in float32 (`core.checkpoint.load_model`, as `eval` does, with `merge_lora` so the
decoder linears hold the merged weights the engine quantises). For each held-out world video (`/tmp/heldout`,
written with `data synth-world --videos 50 --seed 2 --video-fps 2 --time-grid 0.5` if missing; the first `--videos`)
the frames are sampled and embedded once as `eval --dataset world` does, and the video's conversations of
`--kinds` (default: the narration one, the task event recall and precision score; `live_chat` adds questions) are
tokenized by `StreamTemplate.tokenize`, the teacher-forced input of the streaming metrics and of training. Every
weight variant then runs one teacher-forced forward of the model over each, with the chosen decoder linears (q/k/v
and gate/up fused as in `engine.static._Layer`, o, down) replaced in place by quantise -> dequantise in float32 and
restored afterwards.

Measured per variant against the float32 reference:

* at every frame's decision position (the last `<v>` of each frame, where the engines decide after each frame):
  the share of decisions of `DecisionPolicy.for_model` (P(silence) < the model's threshold) that flip, and the mean
  absolute (and signed) change of P(silence);
* at the assistant's response tokens (learned positions that are not frames): the share where the argmax token
  differs from the reference's, and the mean KL(reference || variant) of the next-token distribution;
* accuracy against the labels at both (how much of the change is harm rather than noise);
* the relative Frobenius error of the quantised weights, and of all decoder linears (kept ones count as exact), and
  the share of the decoder linears' weights stored in one byte (`quantised_share`: what the variant saves).

Variants: int8, fp8 (per channel, the engine's), fp8 per tensor (one scale per fused matrix), fp8 leaving the first,
the last or both decoder layers exact, fp8 on the MLP only, on attention only, fp8 per channel with the scale of
least squared error among amax / 448 * 2^(-j/16), j = 0..15 (e4m3's grid is the same up to powers of two, so one
octave covers every alignment), fp8 on one kind of matrix only (qkv, o, gate_up or down, in every layer) and on
all but qkv. The layer scan puts fp8 on one decoder layer at a time (all its linears), on the first `--scan-videos`
videos (10).

A variant whose first changed layer is k runs from the reference's input of layer k (the layers before it are
exact, so that input is the same; checked once, `resume_check_max_abs_diff`): the layer scan costs half as much.
Results: benchmarks/results/fp8_sensitivity_cpu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

from videollm_online.core.checkpoint import load_model
from videollm_online.core.policy import DecisionPolicy, silence_probability
from videollm_online.core.text import IGNORE_INDEX
from videollm_online.engine.quant import FP8, FP8_MAX, dequantize, quantize_fp8, quantize_int8
from videollm_online.utils.files import read_jsonl, write_json_atomic
from videollm_online.video import open_video

RESULTS = Path(__file__).parent / "results" / "fp8_sensitivity_cpu.json"
HELDOUT_COMMAND = ["data", "synth-world", "--videos", "50", "--seed", "2", "--video-fps", "2", "--time-grid", "0.5"]

# The fast engine's linears per decoder layer (`engine.static._Layer`): each group is one matrix there.
GROUPS = {
    "qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")),
    "o": ("self_attn", ("o_proj",)),
    "gate_up": ("mlp", ("gate_proj", "up_proj")),
    "down": ("mlp", ("down_proj",)),
}
ATTENTION, MLP = ("qkv", "o"), ("gate_up", "down")


# ---------------------------------------------------------------------- fake quantisers (float32 in, float32 out)
def fake_int8(weight: torch.Tensor) -> torch.Tensor:
    return dequantize(*quantize_int8(weight))


def fake_fp8(weight: torch.Tensor) -> torch.Tensor:
    return dequantize(*quantize_fp8(weight))


def fake_fp8_tensor(weight: torch.Tensor) -> torch.Tensor:
    return dequantize(*quantize_fp8(weight, per_row=False))


def fake_fp8_mse(weight: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """e4m3 per channel with, for each channel, the scale amax / 448 * 2^(-j/steps) (j < steps) of least squared
    error (values past 448 clip, as `quantize_fp8` clips)."""
    values = weight.float()
    amax = values.abs().amax(dim=-1, keepdim=True)
    base = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    best, best_error = None, None
    for j in range(steps):
        scale = base * 2.0 ** (-j / steps)
        fake = dequantize((values / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale)
        error = (fake - values).pow(2).sum(dim=-1, keepdim=True)
        if best is None:
            best, best_error = fake, error
        else:
            better = error < best_error
            best, best_error = torch.where(better, fake, best), torch.where(better, error, best_error)
    return best


QUANTIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "int8": fake_int8,
    "fp8": fake_fp8,
    "fp8_tensor": fake_fp8_tensor,
    "fp8_mse": fake_fp8_mse,
}


# ---------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    name: str
    quantizer: str | None  # None: the reference
    layers: tuple[int, ...] = ()
    groups: tuple[str, ...] = tuple(GROUPS)


def build_variants(num_layers: int) -> list[Variant]:
    every = tuple(range(num_layers))
    last = num_layers - 1
    return [
        Variant("none", None),
        Variant("int8", "int8", every),
        Variant("fp8", "fp8", every),
        Variant("fp8_tensor", "fp8_tensor", every),
        Variant("fp8_skip_first", "fp8", every[1:]),
        Variant("fp8_skip_last", "fp8", every[:last]),
        Variant("fp8_skip_first_last", "fp8", every[1:last]),
        Variant("fp8_mlp", "fp8", every, MLP),
        Variant("fp8_attention", "fp8", every, ATTENTION),
        Variant("fp8_mse", "fp8_mse", every),
        *(Variant(f"fp8_only_{group}", "fp8", every, (group,)) for group in GROUPS),
        Variant("fp8_except_qkv", "fp8", every, ("o", "gate_up", "down")),
    ]


def scan_variants(num_layers: int) -> list[Variant]:
    return [Variant(f"fp8_layer_{index}", "fp8", (index,)) for index in range(num_layers)]


# ---------------------------------------------------------------------- weights: quantised once, swapped in place
class FakeWeights:
    """The decoder's linears and their fake-quantised weights, computed once per (quantiser, layer, group): a fused
    group (qkv, gate_up) is quantised as one matrix, as the engine stores it, then split back."""

    def __init__(self, model):
        self.layers = model.base_llm.get_decoder().layers
        self.cache: dict[tuple[str, int, str], list[torch.Tensor]] = {}

    def linears(self, layer: int, group: str) -> list[torch.nn.Linear]:
        parent, names = GROUPS[group]
        module = getattr(self.layers[layer], parent)
        return [getattr(module, name) for name in names]

    def fake(self, quantizer: str, layer: int, group: str) -> list[torch.Tensor]:
        key = (quantizer, layer, group)
        if key not in self.cache:
            weights = [linear.weight.detach() for linear in self.linears(layer, group)]
            fused = QUANTIZERS[quantizer](torch.cat(weights))
            self.cache[key] = list(fused.split([w.shape[0] for w in weights]))
        return self.cache[key]

    @contextlib.contextmanager
    def applied(self, variant: Variant) -> Iterator[None]:
        """The variant's weights in place of the chosen linears' (the original tensors put back on exit)."""
        saved = []
        try:
            if variant.quantizer is not None:
                for layer in variant.layers:
                    for group in variant.groups:
                        for linear, fake in zip(self.linears(layer, group), self.fake(variant.quantizer, layer, group)):
                            saved.append((linear, linear.weight.data))
                            linear.weight.data = fake
            yield
        finally:
            for linear, original in reversed(saved):
                linear.weight.data = original

    def relative_error(self, variant: Variant) -> dict[str, float]:
        """Frobenius error / norm over the quantised linears and over all decoder linears, and the share of the
        decoder linears' weights the variant stores in one byte."""
        error = quantised_norm = total_norm = 0.0
        quantised_size = total_size = 0
        chosen = {(layer, group) for layer in variant.layers for group in variant.groups}
        for layer in range(len(self.layers)):
            for group in GROUPS:
                weights = [linear.weight.detach() for linear in self.linears(layer, group)]
                norm = sum(float(w.pow(2).sum()) for w in weights)
                size = sum(w.numel() for w in weights)
                total_norm, total_size = total_norm + norm, total_size + size
                if variant.quantizer is not None and (layer, group) in chosen:
                    fakes = self.fake(variant.quantizer, layer, group)
                    error += sum(float((f - w).pow(2).sum()) for f, w in zip(fakes, weights))
                    quantised_norm, quantised_size = quantised_norm + norm, quantised_size + size
        return {
            "weight_rel_error": (error / quantised_norm) ** 0.5 if quantised_norm else 0.0,
            "weight_rel_error_all": (error / total_norm) ** 0.5,
            "quantised_share": quantised_size / total_size,
        }


# ---------------------------------------------------------------------- data
def ensure_heldout(root: Path) -> None:
    """The held-out world (seed 2), written with the project's own command when missing."""
    if (root / "conversations.jsonl").exists():
        return
    command = [sys.executable, "-m", "videollm_online", *HELDOUT_COMMAND, "--out", str(root), "-q"]
    print("writing the held-out world:", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def video_conversations(root: Path, limit: int, kinds: list[str]) -> list[tuple[str, list[dict]]]:
    """(video, its conversation rows of these kinds) for the first `limit` videos, in the order `eval` takes them."""
    rows = [row for row in read_jsonl(root / "conversations.jsonl") if row.get("kind") in kinds]
    videos = sorted({row["video"] for row in rows})[:limit]
    return [(video, [row for row in rows if row["video"] == video]) for video in videos]


def video_embeds(model, root: Path, video: str) -> torch.Tensor:
    """The video's frame embeddings, sampled and embedded as `eval --dataset world` does (32 frames at a time)."""
    with open_video(
        str(root / "videos" / f"{video}.mp4"), fps=model.config.frame_fps, resolution=model.config.frame_resolution
    ) as stream:
        images = [frame.image for frame in stream]
    return torch.cat([model.frames_to_embeds(images[i : i + 32]) for i in range(0, len(images), 32)])


@dataclass
class Conversation:
    input_ids: torch.Tensor  # (L,)
    frames: torch.Tensor  # (N, T, H): the conversation's frames, in order of their `<v>` tokens
    scored_labels: torch.Tensor  # (L,): IGNORE_INDEX except at the scored positions, where the LM head runs
    is_decision: torch.Tensor  # (scored,): the scored rows that are decisions; the others are response tokens
    decision_labels: torch.Tensor  # (decisions,): IGNORE_INDEX where the conversation learns nothing
    response_labels: torch.Tensor  # (responses,)


def teacher_forced(template, row: dict, embeds: torch.Tensor) -> Conversation:
    """The conversation's teacher-forced input (`StreamTemplate.tokenize`) and the positions scored: each frame's
    last `<v>` (the decision after the frame, where the engines decide) and the learned positions that are not
    frames (the assistant's tokens and eos)."""
    tokenized = template.tokenize(row["conversation"])
    input_ids = torch.tensor(tokenized.input_ids)
    labels = torch.tensor(tokenized.labels)
    is_frame = input_ids == template.ids.v_placeholder
    frame_tokens = template.config.frame_num_tokens
    num_frames = int(is_frame.sum()) // frame_tokens
    start = row.get("start_frame", 0)
    if embeds.shape[0] < start + num_frames:
        raise ValueError(f"video {row['video']}: the conversation has {num_frames} frames, the video fewer")
    decisions = torch.zeros_like(is_frame)
    decisions[torch.nonzero(is_frame)[:, 0][frame_tokens - 1 :: frame_tokens]] = True
    responses = (labels != IGNORE_INDEX) & ~is_frame
    scored = decisions | responses
    # the LM head runs where a label is given (`LiveModel.forward_embeds`); unlearned decisions get the silence id
    filled = torch.where(labels == IGNORE_INDEX, template.ids.silence, labels)
    return Conversation(
        input_ids=input_ids,
        frames=embeds[start : start + num_frames],
        scored_labels=torch.where(scored, filled, IGNORE_INDEX),
        is_decision=decisions[scored],
        decision_labels=labels[decisions],
        response_labels=labels[responses],
    )


# ---------------------------------------------------------------------- forward and metrics
@contextlib.contextmanager
def recorded_layer_inputs(decoder) -> Iterator[list[torch.Tensor]]:
    """The hidden states entering each decoder layer during the forwards run inside."""
    inputs: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _module, args: inputs.append(args[0])) for layer in decoder.layers]
    try:
        yield inputs
    finally:
        for hook in hooks:
            hook.remove()


@contextlib.contextmanager
def layers_from(decoder, start: int) -> Iterator[None]:
    """The decoder without its first `start` layers: it then takes the hidden states entering layer `start`."""
    layers = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(layers)[start:])
    try:
        yield
    finally:
        decoder.layers = layers


@dataclass
class Outputs:
    """What one forward gives at the scored positions."""

    silence: torch.Tensor  # P(silence) at the decision positions
    speaks: torch.Tensor  # the policy's decision there
    log_probs: torch.Tensor  # (responses, V) next-token log-probabilities at the response tokens


@torch.inference_mode()
def run(
    model,
    conversation: Conversation,
    policy: DecisionPolicy,
    silence_id: int,
    start: int = 0,
    layer_inputs: list[torch.Tensor] | None = None,
) -> Outputs:
    """One teacher-forced forward (`LiveModel.forward_embeds` with labels: the LM head on the scored rows only).
    `start` > 0: from the reference's input of that layer (`layer_inputs`), the same numbers when the layers
    before it are exact, at a fraction of the cost."""
    decoder = model.base_llm.get_decoder()
    if start:
        hidden = layer_inputs[start]
    else:
        hidden = model.embed_tokens(conversation.input_ids[None], conversation.frames)
    with layers_from(decoder, start):
        logits = model.forward_embeds(
            hidden, labels=conversation.scored_labels[None], input_ids=conversation.input_ids[None]
        ).logits.float()
    silence = silence_probability(logits[conversation.is_decision], silence_id)
    return Outputs(silence, policy.responds(silence), logits[~conversation.is_decision].log_softmax(dim=-1))


def resume_error(reference: Outputs, resumed: Outputs) -> float:
    """The largest difference between the reference and the same weights run from a later layer's input."""
    differences = [reference.silence - resumed.silence, (reference.log_probs - resumed.log_probs).flatten()]
    return float(torch.cat(differences).abs().max())


def first_layer(variant: Variant) -> int:
    """The first layer the variant changes: those before it are the reference's."""
    return min(variant.layers, default=0)


@dataclass
class Tally:
    """Sums over positions of one variant against the reference."""

    decisions: int = 0
    flips: int = 0
    abs_silence_change: float = 0.0
    silence_change: float = 0.0
    labelled_decisions: int = 0
    right_decisions: int = 0
    tokens: int = 0
    token_disagreements: int = 0
    kl: float = 0.0
    right_tokens: int = 0
    conversations: int = 0

    def add(self, reference: Outputs, outputs: Outputs, conversation: Conversation, silence_id: int) -> None:
        self.conversations += 1
        self.decisions += len(outputs.speaks)
        self.flips += int((outputs.speaks != reference.speaks).sum())
        change = outputs.silence - reference.silence
        self.abs_silence_change += float(change.abs().sum())
        self.silence_change += float(change.sum())
        labelled = conversation.decision_labels != IGNORE_INDEX
        should_speak = conversation.decision_labels[labelled] != silence_id
        self.labelled_decisions += int(labelled.sum())
        self.right_decisions += int((outputs.speaks[labelled] == should_speak).sum())
        top, reference_top = outputs.log_probs.argmax(dim=-1), reference.log_probs.argmax(dim=-1)
        self.tokens += len(top)
        self.token_disagreements += int((top != reference_top).sum())
        self.right_tokens += int((top == conversation.response_labels).sum())
        kl = F.kl_div(outputs.log_probs, reference.log_probs, log_target=True, reduction="none").sum(dim=-1)
        self.kl += float(kl.sum())

    def summary(self) -> dict[str, float | int]:
        return {
            "decision_flip_rate": self.flips / max(self.decisions, 1),
            "decision_flips": self.flips,
            "silence_prob_abs_change": self.abs_silence_change / max(self.decisions, 1),
            "silence_prob_mean_change": self.silence_change / max(self.decisions, 1),
            "decision_accuracy": self.right_decisions / max(self.labelled_decisions, 1),
            "token_disagreement_rate": self.token_disagreements / max(self.tokens, 1),
            "token_disagreements": self.token_disagreements,
            "token_kl_mean": self.kl / max(self.tokens, 1),
            "token_accuracy": self.right_tokens / max(self.tokens, 1),
            "conversations": self.conversations,
            "decision_positions": self.decisions,
            "response_tokens": self.tokens,
        }


# ---------------------------------------------------------------------- the study
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path("/tmp/heldout"))
    parser.add_argument("--videos", type=int, default=20, help="the first N held-out videos")
    parser.add_argument(
        "--scan-videos", type=int, default=10, help="the layer scan on the first N of them (0: none; default: 10)"
    )
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=["narration"],
        help="conversation kinds (default: narration, the task the event recall scores; also: live_chat)",
    )
    parser.add_argument("--model", default=None, help="default: the bundled demo model")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def study(args: argparse.Namespace) -> dict:
    """Every variant on every conversation; the report is written after each video (a run cut short keeps what
    it measured) and returned at the end."""
    started = time.perf_counter()
    model, template, name = load_model(args.model, dtype="float32", merge_lora=True)
    decoder = model.base_llm.get_decoder()
    num_layers = len(decoder.layers)
    variants, scan = build_variants(num_layers), scan_variants(num_layers)
    policy = DecisionPolicy.for_model(model.config)
    silence_id = template.ids.silence
    weights = FakeWeights(model)
    errors = {variant.name: weights.relative_error(variant) for variant in [*variants, *scan]}
    tallies = {variant.name: Tally() for variant in [*variants, *scan]}
    videos = video_conversations(args.data_root, args.videos, args.kinds)
    header = {
        "what": __doc__.split("\n\n")[0],
        "command": command_line(),
        "model": name,
        "machine": machine(),
        "data_root": str(args.data_root),
        "kinds": args.kinds,
        "threshold": policy.threshold,
        "resume_check_max_abs_diff": None,
    }
    for index, (video, rows) in enumerate(videos):
        with torch.inference_mode():
            embeds = video_embeds(model, args.data_root, video)
        for row in rows:
            conversation = teacher_forced(template, row, embeds)
            with recorded_layer_inputs(decoder) as layer_inputs:
                reference = run(model, conversation, policy, silence_id)
            tallies["none"].add(reference, reference, conversation, silence_id)  # its accuracy on the labels
            if header["resume_check_max_abs_diff"] is None:  # once: resuming from a layer's input changes nothing
                resumed = run(model, conversation, policy, silence_id, num_layers // 2, layer_inputs)
                header["resume_check_max_abs_diff"] = resume_error(reference, resumed)
            for variant in [*variants[1:], *(scan if index < args.scan_videos else [])]:
                with weights.applied(variant):
                    outputs = run(model, conversation, policy, silence_id, first_layer(variant), layer_inputs)
                tallies[variant.name].add(reference, outputs, conversation, silence_id)
        seconds = time.perf_counter() - started
        print(f"video {video} ({index + 1}/{len(videos)}): {len(rows)} conversations, {seconds:.0f} s", flush=True)
        report = {
            **header,
            "videos": index + 1,
            "complete": index + 1 == len(videos),
            "scan_videos": min(args.scan_videos, index + 1),
            "conversations": tallies["none"].conversations,
            "decision_positions": tallies["none"].decisions,
            "response_tokens": tallies["none"].tokens,
            "seconds": round(seconds, 1),
            "variants": {
                variant.name: {**tallies[variant.name].summary(), **errors[variant.name]} for variant in variants
            },
            "layer_scan": [
                {"layer": layer, **tallies[variant.name].summary(), **errors[variant.name]}
                for layer, variant in enumerate(scan)
                if tallies[variant.name].conversations
            ],
        }
        write_json_atomic(args.output, report)
    return report


def command_line() -> str:
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = [f"OMP_NUM_THREADS={threads}"] if threads else []
    return " ".join([*prefix, "python", "benchmarks/fp8_sensitivity_cpu.py", *sys.argv[1:]])


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def print_table(report: dict) -> None:
    """flip: decisions flipped; |dP|, dP: mean absolute and signed change of P(silence); tok diff: response tokens
    whose argmax changed; KL: mean KL(reference || variant) per response token; acc: against the labels; W err:
    relative error of the quantised weights; 1-byte %: share of the decoder linears' weights quantised."""
    print(
        f"{'variant':22s} {'flip %':>7s} {'|dP|':>7s} {'dP':>8s} {'tok diff %':>10s} {'KL':>8s} "
        f"{'dec acc %':>9s} {'tok acc %':>9s} {'W err %':>8s} {'1-byte %':>8s}"
    )
    rows = list(report["variants"].items())
    rows += [(f"fp8_layer_{values['layer']}", values) for values in report["layer_scan"]]
    for name, values in rows:
        print(
            f"{name:22s} {100 * values['decision_flip_rate']:7.2f} {values['silence_prob_abs_change']:7.4f} "
            f"{values['silence_prob_mean_change']:+8.4f} {100 * values['token_disagreement_rate']:10.2f} "
            f"{values['token_kl_mean']:8.5f} {100 * values['decision_accuracy']:9.2f} "
            f"{100 * values['token_accuracy']:9.2f} {100 * values['weight_rel_error']:8.2f} "
            f"{100 * values['quantised_share']:8.1f}"
        )


def main() -> int:
    args = parse_args()
    ensure_heldout(args.data_root)
    report = study(args)
    print_table(report)
    counts = ("videos", "conversations", "decision_positions", "response_tokens", "scan_videos", "seconds")
    print(json.dumps({key: report[key] for key in counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
