"""Hugging Face conventions for checkpoints: base models by hub id, and a generated model card.

A checkpoint names its base models by hub id (the card's `base_model`, the adapter's `base_model_name_or_path`),
whatever local copy the config loads them from (a directory, a `package:` GGUF file); `hub_id_of` finds the id. The
card's evaluation table comes from an `eval` report (its JSON) passed in or kept in the checkpoint as `EVAL_FILE`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .config import SOURCE_HUB_IDS, LiveConfig

LIBRARY_NAME = "videollm-online"
LICENSE = "apache-2.0"
"""The card's licence: the package's, unless the base LLM's licence binds its derivatives (`BASE_LICENSES`)."""
BASE_LICENSES = {"meta-llama/Meta-Llama-3-8B-Instruct": "llama3", "meta-llama/Meta-Llama-3-8B": "llama3"}
TAGS = ["videollm-online", "video-text-to-text", "streaming", "live-video", "peft", "lora"]
EVAL_FILE = "eval_results.json"
"""An `eval` report (the JSON `videollm-online eval --output` writes) kept beside the weights, for the card."""
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CACHE_REPO = re.compile(r"models--([\w.-]+)--([\w.-]+)")
# Report keys that describe the run rather than measure the model.
_NOT_METRICS = {
    "model",
    "dataset",
    "split",
    "data_root",
    "world_size",
    "engine",
    "cache_tokens",
    "command",
    "device",
    "note",
    "predictions",
    "threshold",
    "window_s",
}


def is_hub_id(name: str | None) -> bool:
    """`org/name` and nothing else: not a path (`./x`, `/x`, `~/x`, `a/b/c`), not a `package:` file."""
    return bool(name) and bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def hub_id_of(source: str | None) -> str | None:
    """The hub id behind a model source: the source itself, a known local copy, a snapshot of the HF cache
    (`.../models--org--name/snapshots/...`), or a saved model whose config names its hub origin. None if unknown."""
    if not source:
        return None
    if source in SOURCE_HUB_IDS:
        return SOURCE_HUB_IDS[source]
    if is_hub_id(source):
        return source
    cached = _CACHE_REPO.search(source)
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    config = Path(source).expanduser() / "config.json"
    if config.is_file():
        try:
            name = json.loads(config.read_text()).get("_name_or_path")
        except (OSError, ValueError):
            return None
        return name if isinstance(name, str) and _HUB_ID.match(name) and not Path(name).exists() else None
    return None


def base_model_ids(config: LiveConfig) -> dict[str, str]:
    """{"llm": id, "vision": id} for the parts that have a hub id (a vision encoder trained from a random config
    has none)."""
    ids = {
        "llm": config.llm_hub_id or hub_id_of(config.llm),
        "vision": config.vision_hub_id or hub_id_of(config.vision),
    }
    return {part: hub_id for part, hub_id in ids.items() if hub_id}


def read_eval_report(report: str | Path | dict[str, Any] | None) -> dict[str, Any] | None:
    """An `eval` report as a dict: given, read from a JSON file, or None."""
    if report is None or isinstance(report, dict):
        return report
    return json.loads(Path(report).read_text())


def eval_metrics(report: dict[str, Any]) -> dict[str, float | int]:
    """The report's numeric measurements, in its order."""
    return {
        key: value
        for key, value in report.items()
        if key not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def model_card(
    config: LiveConfig,
    *,
    eval_report: str | Path | dict[str, Any] | None = None,
    datasets: list[str] | None = None,
    training_data: str | None = None,
    license: str | None = None,
    name: str | None = None,
    adapter: bool = True,
    vision_saved: bool = False,
):
    """A `huggingface_hub.ModelCard` for a checkpoint of `config`: YAML metadata (base models by hub id, library,
    licence, tags, training data) and a body with what it is, how to load it, and the evaluation table when known."""
    from huggingface_hub import ModelCard, ModelCardData

    bases = base_model_ids(config)
    report = read_eval_report(eval_report)
    train = config.extra.get("train") if isinstance(config.extra.get("train"), dict) else {}
    data = ModelCardData(
        base_model=list(bases.values()) or None,
        library_name=LIBRARY_NAME,
        license=license or BASE_LICENSES.get(bases.get("llm", ""), LICENSE),
        tags=list(TAGS),
        datasets=datasets or None,
        pipeline_tag="video-text-to-text",
    )
    title = name or "VideoLLM-online checkpoint"
    lines = [
        f"# {title}",
        "",
        "A streaming video LLM ([VideoLLM-online](https://arxiv.org/abs/2406.11816), CVPR 2024): it watches a "
        "video frame by frame and decides at every frame whether to speak. This checkpoint was written by "
        "the `videollm-online` package.",
        "",
        "## Parts",
        "",
    ]
    llm = (
        f"`{bases['llm']}`"
        if "llm" in bases
        else "built from a config (weights in `llm/`)"
        if config.llm is None
        else "a local model"
    )
    lines.append(f"- LLM: {llm}" + (", with a LoRA adapter (`adapter_model.safetensors`)" if adapter else ""))
    if config.vision_config is not None and config.vision is None:
        kind = config.vision_config.get("model_type", "vision")
        lines.append(f"- Vision encoder: a `{kind}` tower built from a config, not a hub model (weights in `vision/`)")
    else:
        vision = f"`{bases['vision']}`" if "vision" in bases else "a local model"
        lines.append(f"- Vision encoder: {vision}" + (", fine-tuned (weights in `vision/`)" if vision_saved else ""))
    lines += [
        f"- Frames: {config.frame_num_tokens} tokens each at {config.frame_resolution} px, "
        f"{config.frame_fps:g} fps; silence threshold {config.frame_token_interval_threshold}",
        "- Connector: Linear-GELU-Linear, saved with the adapter (`connector`)",
        "",
    ]
    if training_data or datasets or train:
        lines += ["## Training data", ""]
        if training_data:
            lines.append(training_data)
        elif datasets:
            lines.append(", ".join(f"`{d}`" for d in datasets))
        if train:
            settings = {
                k: train[k]
                for k in (
                    "lora_r",
                    "lora_alpha",
                    "learning_rate",
                    "batch_size",
                    "num_epochs",
                    "max_steps",
                    "max_time_minutes",
                    "train_vision",
                )
                if k in train
            }
            lines += ["", "Settings of the last `train` run: " + ", ".join(f"`{k}={v}`" for k, v in settings.items())]
        lines.append("")
    if report:
        metrics = eval_metrics(report)
        if metrics:
            where = report.get("dataset") or "evaluation"
            split = f" ({report['split']})" if report.get("split") else ""
            settings = ", ".join(f"{k} {report[k]}" for k in ("threshold", "window_s", "engine") if report.get(k))
            settings = f" ({settings})" if settings else ""
            lines += [
                "## Evaluation",
                "",
                f"`videollm-online eval` on `{where}`{split}{settings}:",
                "",
                "| metric | value |",
                "| --- | --- |",
            ]
            lines += [
                f"| {key} | {round(value, 4) if isinstance(value, float) else value} |"
                for key, value in metrics.items()
            ]
            lines.append("")
    lines += [
        "## Use",
        "",
        "```python",
        "from videollm_online.core.model import LiveModel",
        "",
        'model = LiveModel.from_pretrained("path/or/hub-id")',
        "```",
        "",
        "or from the command line: `videollm-online narrate VIDEO --model path/or/hub-id`.",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
