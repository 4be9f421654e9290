"""Shared builders for tier-1 tests: tiny random models on the CPU, built in the test, no files."""

from __future__ import annotations

import torch

from videollm_online.checkpoint import build_model
from videollm_online.config import TINY_LLM, TINY_VISION, LiveConfig

TINY_LLMS = {
    "llama": TINY_LLM,
    "mistral": {**TINY_LLM, "model_type": "mistral", "sliding_window": None},
    "qwen2": {**TINY_LLM, "model_type": "qwen2", "use_sliding_window": False},
}
TINY_VISIONS = {
    "siglip": TINY_VISION,
    "clip": {**TINY_VISION, "model_type": "clip_vision_model", "projection_dim": 16},
}


def tiny_config(llm: str = "llama", vision: str = "siglip", **overrides) -> LiveConfig:
    return LiveConfig.from_name("tiny", llm_config=TINY_LLMS[llm], vision_config=TINY_VISIONS[vision], **overrides)


def tiny_model(llm: str = "llama", vision: str = "siglip", **overrides):
    model, template = build_model(tiny_config(llm, vision, **overrides))
    return model.eval(), template


def make_decisive(model, template, seed: int = 0, scale: float = 4.0) -> None:
    """Give the silence and eos rows of the LM head large random directions, so that P(silence) swings across
    the threshold from frame to frame and responses end: a random tiny model then both talks and stays silent."""
    generator = torch.Generator().manual_seed(seed)
    head = model.base_llm.get_output_embeddings().weight
    with torch.no_grad():
        for token in {template.ids.silence, template.ids.eos}:
            head[token] = torch.randn(head.shape[1], generator=generator) * scale


def random_frames(num_frames: int, model, seed: int = 0) -> torch.Tensor:
    """Frame embeddings (N, T, H) for a model."""
    generator = torch.Generator().manual_seed(seed)
    hidden = model.base_llm.get_input_embeddings().embedding_dim
    return torch.randn(num_frames, model.config.frame_num_tokens, hidden, generator=generator)
