"""Checkpoints: the project's own format, and the released VideoLLM-online layout (PEFT adapter over the base LLM)."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, LlamaForCausalLM, SiglipVisionModel

from tiny_models import random_frames, randomise_lora, tiny_config, tiny_model
from videollm_online.core.checkpoint import (
    RELEASED_LORA_TARGETS,
    add_lora,
    load_checkpoint,
    resolve_source,
    save_checkpoint,
)
from videollm_online.core.config import TINY_LLM, TINY_VISION
from videollm_online.core.text import build_tiny_tokenizer
from videollm_online.utils.errors import ModelNotFoundError

CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "stream", "num_frames": 2},
    {"role": "assistant", "content": "hello"},
    {"role": "stream", "num_frames": 1},
]


def logits_of(model, template, frames):
    input_ids = torch.tensor([template.tokenize(CONVERSATION).input_ids])
    with torch.no_grad():
        return model(input_ids, frame_features=frames).logits


def test_plain_checkpoint_round_trip(tmp_path):
    model, template = tiny_model()
    frames = torch.randn(3, 10, 32)
    save_checkpoint(model, template, tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert {"videollm_online.json", "connector.safetensors", "llm", "vision", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded, loaded_template = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(logits_of(loaded, loaded_template, frames), logits_of(model, template, frames))
    assert loaded.config == model.config


def test_convolutional_tower_round_trip(tmp_path):
    """A checkpoint with a ConvNeXt tower loads it back with its weights: the same frame tokens from pixels."""
    model, template = tiny_model("llama", "convnext")
    pixels = torch.randn(2, 3, 32, 32)
    save_checkpoint(model, template, tmp_path / "ckpt", save_vision=True)
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().encode_frames(pixels), model.encode_frames(pixels))


def test_lora_checkpoint_round_trip_and_merge(tmp_path):
    model, template = tiny_model()
    add_lora(model, r=4, alpha=8, dropout=0.0)
    randomise_lora(model)
    frames = torch.randn(3, 10, 32)
    expected = logits_of(model.eval(), template, frames)
    save_checkpoint(model, template, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").exists()
    loaded, loaded_template = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(logits_of(loaded, loaded_template, frames), expected)
    merged, merged_template = load_checkpoint(tmp_path / "ckpt", merge_lora=True)
    assert not hasattr(merged.llm, "peft_config")
    torch.testing.assert_close(logits_of(merged, merged_template, frames), expected, atol=1e-5, rtol=1e-5)


class SeedLiveLlama(LlamaForCausalLM):
    """The released checkpoint's module layout: a LlamaForCausalLM subclass with a `connector` attribute."""

    def __init__(self, config):
        super().__init__(config)
        self.connector = nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 32))

    def seed_logits(self, input_ids, frame_features, v_placeholder_id):
        # The seed's joining of embeddings: clamp the ids, embed, write connector(frames) into `<v>` positions.
        embeds = self.get_input_embeddings()(input_ids.clamp(max=self.config.vocab_size - 1))
        v_mask = input_ids == v_placeholder_id
        embeds[v_mask] = self.connector(frame_features).flatten(0, 1).to(embeds.dtype)
        return self(inputs_embeds=embeds).logits


@pytest.fixture
def released(tmp_path):
    """Base LLM dir, vision dir, and an adapter dir written by PEFT from the seed's module layout."""
    torch.manual_seed(0)
    base = tmp_path / "base-llm"
    LlamaForCausalLM(AutoConfig.for_model(**TINY_LLM)).save_pretrained(base)
    tokenizer = build_tiny_tokenizer()
    tokenizer.save_pretrained(base)
    vision = tmp_path / "vision"
    SiglipVisionModel(AutoConfig.for_model(**TINY_VISION)).save_pretrained(vision)

    seed_model = SeedLiveLlama.from_pretrained(base)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=RELEASED_LORA_TARGETS,
        modules_to_save=["connector"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(seed_model, lora)
    randomise_lora(peft_model)
    with torch.no_grad():
        for parameter in peft_model.base_model.model.connector.modules_to_save["default"].parameters():
            parameter.add_(torch.randn_like(parameter))
    adapter = tmp_path / "videollm-online-tiny-v1plus"
    peft_model.save_pretrained(adapter)
    tokenizer.add_tokens(["<v>"], special_tokens=True)
    tokenizer.save_pretrained(adapter)
    return base, vision, adapter, peft_model.eval()


def test_released_adapter_gives_the_seed_models_logits(released):
    base, vision, adapter, seed_model = released
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["connector"] and saved["target_modules"] == RELEASED_LORA_TARGETS
    model, template = load_checkpoint(adapter, preset="tiny", llm=str(base), vision=str(vision))
    assert isinstance(model.frame_encoder.vision_model, SiglipVisionModel)
    frames = torch.randn(3, 10, 32)
    input_ids = torch.tensor([template.tokenize(CONVERSATION).input_ids])
    with torch.no_grad():
        expected = seed_model.seed_logits(input_ids, frames, template.ids.v_placeholder)
    torch.testing.assert_close(logits_of(model, template, frames), expected)
    merged, _ = load_checkpoint(adapter, preset="tiny", llm=str(base), vision=str(vision), merge_lora=True)
    torch.testing.assert_close(logits_of(merged, template, frames), expected, atol=1e-5, rtol=1e-5)
    # and through the Hugging Face API, as the released adapters are used
    from videollm_online.core.model import LiveModel

    via_hub_api = LiveModel.from_pretrained(adapter, preset="tiny", llm=str(base), vision=str(vision))
    torch.testing.assert_close(logits_of(via_hub_api, via_hub_api.template, frames), expected)


def test_released_adapter_from_the_local_hub_cache(released, tmp_path, monkeypatch):
    """A hub id resolves from the local Hugging Face cache, offline."""
    base, vision, adapter, _ = released
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--someone--tiny-live" / "snapshots" / ("0" * 40)
    snapshot.parent.mkdir(parents=True)
    adapter.rename(snapshot)
    (cache / "models--someone--tiny-live" / "refs").mkdir()
    (cache / "models--someone--tiny-live" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_source("someone/tiny-live", "model") == snapshot
    model, _ = load_checkpoint("someone/tiny-live", preset="tiny", llm=str(base), vision=str(vision))
    assert model.connector is not None
    with pytest.raises(ModelNotFoundError, match="nor in the local Hugging Face cache.*hf download someone/absent"):
        resolve_source("someone/absent", "model")


def test_missing_things_are_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="is not a checkpoint"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(ModelNotFoundError, match="needs the Python package 'not_a_package'"):
        resolve_source("package:not_a_package/x.gguf", "LLM")


def test_checkpoint_is_written_atomically(tmp_path):
    model, template = tiny_model()
    save_checkpoint(model, template, tmp_path / "ckpt")
    model.config.extra["note"] = "second"
    save_checkpoint(model, template, tmp_path / "ckpt")  # replaces the old one whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert json.loads((tmp_path / "ckpt" / "videollm_online.json").read_text())["extra"] == {"note": "second"}


def test_config_presets_and_validation():
    from videollm_online.core.config import PRESETS, LiveConfig

    for name in PRESETS:
        config = LiveConfig.from_name(name)
        assert LiveConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert LiveConfig.from_name("8b-v1").frame_token_interval is None
    assert LiveConfig.from_name("8b-v1plus").frame_num_tokens == 10
    presets = "8b-v1, 8b-v1plus, demo, demo-192, demo-convnext, demo-resnet, tiny"
    with pytest.raises(ValueError, match=f"valid presets: {presets}"):
        LiveConfig.from_name("huge")
    with pytest.raises(ValueError, match="frame_num_tokens is 10 but"):
        tiny_config(frame_token_pooled=2)
    with pytest.raises(ValueError, match="threshold"):
        tiny_config(frame_token_interval_threshold=1.5)
    with pytest.raises(ValueError, match="unknown LiveConfig fields: colour"):
        LiveConfig.from_dict({"colour": 1})


def test_frames_from_features_and_embeds_agree(tiny):
    model, template = tiny
    features = torch.randn(3, 10, 32)
    input_ids = torch.tensor([template.tokenize(CONVERSATION).input_ids])
    with torch.no_grad():
        a = model(input_ids, frame_features=features).logits
        b = model(input_ids, frame_embeds=model.embed_frames(features)).logits
    torch.testing.assert_close(a, b)
    assert random_frames(2, model).shape == (2, 10, 32)
