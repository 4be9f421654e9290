"""Shared builders for tier-1 tests: tiny random models on the CPU, built in the test, no files."""

from __future__ import annotations

import torch

from videollm_online.core.checkpoint import build_model
from videollm_online.core.config import TINY_LLM, TINY_VISION, LiveConfig

TINY_LLMS = {
    "llama": TINY_LLM,
    "mistral": {**TINY_LLM, "model_type": "mistral", "sliding_window": None},
    "qwen2": {**TINY_LLM, "model_type": "qwen2", "use_sliding_window": False},
}
TINY_VISIONS = {
    "siglip": TINY_VISION,
    "clip": {**TINY_VISION, "model_type": "clip_vision_model", "projection_dim": 16},
    # A convolutional tower: a feature map (N, C, h, w) instead of a token sequence; 32 px -> 16 -> 8 x 8.
    "convnext": {
        "model_type": "convnext",
        "num_stages": 2,
        "hidden_sizes": [16, 24],
        "depths": [1, 1],
        "patch_size": 2,
    },
    "resnet": {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [16, 24],
        "depths": [1, 1],
        "layer_type": "basic",
        "downsample_in_first_stage": False,
    },
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


def scripted_model(answer: str):
    """A tiny model that, after the prompt's last token `:` (of `Assistant:`), always says `answer` then eos.

    Every layer's output projections are zeroed, so each position's hidden state is its own token embedding: the
    model is a bigram table. The answer's tokens (and `:`) get orthogonal embeddings, and the LM head maps each one
    to the token that follows it. The answer's characters must all differ (one successor per token)."""
    model, template = tiny_model()
    llm = model.base_llm
    chain = template.encode(":" + answer)
    if len(set(chain)) != len(chain):
        raise ValueError(f"the answer's tokens must all differ: {answer!r}")
    hidden = llm.get_input_embeddings().embedding_dim
    with torch.no_grad():
        for layer in llm.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embedding, head = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
        head.zero_()
        for k, (token, following) in enumerate(zip(chain, [*chain[1:], template.ids.eos])):
            embedding[token] = torch.eye(hidden)[k]
            head[following] = 100 * torch.eye(hidden)[k]
    return model, template


def randomise_lora(model) -> None:
    """Fresh LoRA B matrices are zero; give them values so the adapter changes the logits."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
