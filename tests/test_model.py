"""Tier 1: the LIVE model on tiny random LLMs (Llama, Mistral, Qwen2) and vision towers (SigLIP, CLIP)."""

import pytest
import torch

from tiny_models import TINY_LLMS, TINY_VISIONS, random_frames, tiny_model
from videollm_online.core.text import IGNORE_INDEX

CONVERSATION = [
    {"role": "system", "content": "S"},
    {"role": "stream", "num_frames": 3, "learn": True},
    {"role": "assistant", "content": "ok", "learn": True},
    {"role": "stream", "num_frames": 2, "learn": True},
]


@pytest.mark.parametrize("vision", sorted(TINY_VISIONS))
@pytest.mark.parametrize("llm", sorted(TINY_LLMS))
def test_frames_to_logits_and_loss(llm, vision):
    model, template = tiny_model(llm, vision)
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    embeds = model.frames_to_embeds(images)
    assert embeds.shape == (5, 10, 32)  # (N, CLS + 3x3, H)
    tokens = template.tokenize(CONVERSATION)
    input_ids, labels = torch.tensor([tokens.input_ids]), torch.tensor([tokens.labels])
    full = model(input_ids, frame_embeds=embeds).logits
    assert full.shape == (1, len(tokens.input_ids), model.base_llm.config.vocab_size)
    output = model(input_ids, frame_embeds=embeds, labels=labels)  # the LM head runs at learned positions only
    learned = labels != IGNORE_INDEX
    torch.testing.assert_close(output.logits, full[learned], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert model.connector[0].weight.grad is not None


def test_uint8_frames_are_normalised_by_the_model(tiny):
    """The training collator hands over uint8 frames; the model normalises them on its own device."""
    from videollm_online.core.model import preprocess_frames

    model, template = tiny
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    input_ids = torch.tensor([template.tokenize(CONVERSATION).input_ids])
    from_uint8 = model(input_ids, pixel_values=images).logits
    from_normalised = model(input_ids, pixel_values=preprocess_frames(images, model.config)).logits
    torch.testing.assert_close(from_uint8, from_normalised)
    assert not torch.equal(from_uint8, model(input_ids, pixel_values=images.flip(0)).logits)


def test_frame_features_use_cls_and_pooled_grid():
    model, _ = tiny_model("llama", "clip")
    pixels = torch.randn(2, 3, 32, 32)
    outputs = model.frame_encoder.vision_model(pixel_values=pixels)
    features = model.encode_frames(pixels)
    torch.testing.assert_close(features[:, 0], outputs.pooler_output)
    # CLIP: CLS first, then an 8x8 patch grid; pooled 3x3 token (0, 0) averages grid rows/cols 0..2
    grid = outputs.last_hidden_state[:, 1:].reshape(2, 8, 8, -1)
    torch.testing.assert_close(features[:, 1], grid[:, 0:3, 0:3].mean(dim=(1, 2)))
    torch.testing.assert_close(features[:, -1], grid[:, 5:8, 5:8].mean(dim=(1, 2)))


def test_convolutional_tower_pools_its_feature_map():
    """ConvNeXt gives (N, C, 8, 8) and a pooled (N, C): the CLS token is the pooled output, the 3x3 tokens average
    the map's cells, and the connector takes the last stage's width."""
    model, _ = tiny_model("llama", "convnext")
    pixels = torch.randn(2, 3, 32, 32)
    outputs = model.frame_encoder.vision_model(pixel_values=pixels)
    assert outputs.last_hidden_state.shape == (2, 24, 8, 8)
    features = model.encode_frames(pixels)
    assert features.shape == (2, 10, 24)
    torch.testing.assert_close(features[:, 0], outputs.pooler_output)
    torch.testing.assert_close(features[:, 1], outputs.last_hidden_state[:, :, 0:3, 0:3].mean(dim=(2, 3)))
    torch.testing.assert_close(features[:, -1], outputs.last_hidden_state[:, :, 5:8, 5:8].mean(dim=(2, 3)))
    assert model.connector[0].in_features == 24


@pytest.mark.parametrize("vision", ["siglip", "convnext"])
def test_many_frames_go_through_the_encoder_in_fixed_chunks(vision, monkeypatch):
    """A batch of 300 frames is encoded as chunks of ENCODER_CHUNK frames (the last filled up), with the same features
    as one call over all of them, and gradients reach the encoder."""
    import videollm_online.core.model as model_module

    monkeypatch.setattr(model_module, "ENCODER_CHUNK", 128)
    model, _ = tiny_model("llama", vision)
    pixels = torch.randn(300, 3, 32, 32)
    whole = model.frame_encoder(pixels)
    shapes = []
    hook = model.frame_encoder.register_forward_pre_hook(lambda module, args: shapes.append(args[0].shape[0]))
    features = model.encode_frames(pixels)
    hook.remove()
    assert shapes == [128, 128, 128]
    torch.testing.assert_close(features, whole, atol=1e-5, rtol=1e-5)
    features.sum().backward()
    assert all(p.grad is not None for p in model.frame_encoder.parameters() if p.requires_grad)
    assert model.encode_frames(pixels[:5]).shape[0] == 5  # few frames: one call, no filling


def test_batch_norms_keep_their_running_statistics_while_the_model_trains():
    """In training a batch holds a few videos' consecutive frames; batch statistics would make a frame's features
    depend on the frames around it. A ResNet's batch norms stay in eval mode (the rest trains), so a frame encodes
    the same alone, in any company, and as at inference; its parameters still get gradients."""
    from torch import nn

    model, _ = tiny_model("llama", "resnet")
    batch_norms = [m for m in model.frame_encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms
    for norm in batch_norms:  # running statistics other than the initial (0, 1), as after pretraining
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    frame = torch.randn(1, 3, 32, 32)
    at_inference = model.encode_frames(frame)
    model.train()
    assert model.training and model.llm.training and not any(norm.training for norm in batch_norms)
    alone = model.encode_frames(frame)
    in_company = model.encode_frames(torch.cat([frame, torch.randn(7, 3, 32, 32) * 3 + 1]))[:1]
    torch.testing.assert_close(alone, at_inference)
    torch.testing.assert_close(in_company, alone)
    in_company.sum().backward()
    assert all(norm.weight.grad is not None for norm in batch_norms)
    # The vision stage trains the encoder on its own (mixed episodes a batch): its batch norms train there.
    model.frame_encoder.train()
    assert all(norm.training for norm in batch_norms)


def test_a_tower_of_unknown_width_is_named():
    from types import SimpleNamespace

    from videollm_online.core.model import vision_width
    from videollm_online.utils.errors import UserError

    with pytest.raises(UserError, match="'mystery'.*neither hidden_size nor hidden_sizes"):
        vision_width(SimpleNamespace(model_type="mystery"))


def test_placeholder_mismatch_names_both_counts(tiny):
    model, template = tiny
    input_ids = torch.tensor([template.tokenize(CONVERSATION).input_ids])
    with pytest.raises(ValueError, match=r"50 `<v>` tokens in the input, 40 frame tokens given"):
        model(input_ids, frame_embeds=random_frames(4, model))


def test_batch_equals_one_by_one(tiny):
    model, template = tiny
    a = template.tokenize(CONVERSATION)
    b = template.tokenize(CONVERSATION[:3])
    frames = random_frames(8, model)
    length = len(a.input_ids)
    padded_b = b.input_ids + [template.ids.eos] * (length - len(b.input_ids))
    mask = torch.tensor([[1] * length, [1] * len(b.input_ids) + [0] * (length - len(b.input_ids))])
    batch = model(torch.tensor([a.input_ids, padded_b]), frame_embeds=frames, attention_mask=mask).logits
    alone_a = model(torch.tensor([a.input_ids]), frame_embeds=frames[:5]).logits
    alone_b = model(torch.tensor([b.input_ids]), frame_embeds=frames[5:]).logits
    torch.testing.assert_close(batch[0], alone_a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch[1, : len(b.input_ids)], alone_b[0], atol=1e-5, rtol=1e-5)


def test_stream_loss_weight_scales_only_frame_positions():
    losses = {}
    for weight in (0.0, 1.0, 2.0):
        model, template = tiny_model(stream_loss_weight=weight)
        tokens = template.tokenize(CONVERSATION)
        input_ids, labels = torch.tensor([tokens.input_ids]), torch.tensor([tokens.labels])
        output = model(input_ids, frame_embeds=random_frames(5, model), labels=labels)
        losses[weight] = output.loss.item()
    # loss(w) = (text + w * stream) / count, linear in w
    stream_part = losses[1.0] - losses[0.0]
    assert stream_part > 0
    assert losses[2.0] == pytest.approx(losses[0.0] + 2 * stream_part, rel=1e-5)
    # and by hand: per-position cross-entropy summed over learned positions
    model, template = tiny_model()
    tokens = template.tokenize(CONVERSATION)
    input_ids, labels = torch.tensor([tokens.input_ids]), torch.tensor([tokens.labels])
    logits = model(input_ids, frame_embeds=random_frames(5, model)).logits[0]
    learned = labels[0] != IGNORE_INDEX
    ce = torch.nn.functional.cross_entropy(logits[learned], labels[0][learned], reduction="mean")
    assert losses[1.0] == pytest.approx(ce.item(), rel=1e-5)


def test_placeholder_id_past_the_embedding_table_is_clamped(tiny):
    model, template = tiny
    table = model.base_llm.get_input_embeddings().num_embeddings
    assert template.ids.v_placeholder == table  # as Llama-3's <v> = 128256
    embeds = model.embed_tokens(torch.tensor([[template.ids.v_placeholder] * 10]), random_frames(1, model))
    torch.testing.assert_close(embeds[0], random_frames(1, model)[0])


def test_configs_from_a_preset_share_nothing_with_it():
    from videollm_online.core.config import LiveConfig

    first = LiveConfig.from_name("tiny")
    first.extra["train"] = {"steps": 1}  # what training writes
    first.llm_config["hidden_size"] = 64
    second = LiveConfig.from_name("tiny")
    assert second.extra == {} and second.llm_config["hidden_size"] == 32
