"""The LIVE model: a vision encoder, a connector and any Hugging Face causal LM.

A frame becomes `frame_num_tokens` vectors (the encoder's pooled/CLS output plus a k x k average pool of its patch
grid), the connector (Linear -> GELU -> Linear) maps them into the LLM's embedding space, and they replace the `<v>`
placeholders of the token sequence in one vectorised step. The connector is registered as the attribute
`connector` of the LLM module itself, as in the released checkpoints, so a PEFT adapter over the LLM carries it
(`modules_to_save=["connector"]`) with the released key names.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelHubMixin
from torch import nn
from transformers.utils import ModelOutput

from ..utils.errors import UserError
from .config import LiveConfig
from .hub import LIBRARY_NAME, LICENSE, TAGS
from .text import IGNORE_INDEX, SpecialIds, StreamTemplate


def build_connector(vision_hidden: int, llm_hidden: int, hidden: int | None = None) -> nn.Sequential:
    """Linear -> GELU -> Linear, keys `0.*` and `2.*` as in the released checkpoints."""
    hidden = hidden or llm_hidden
    return nn.Sequential(nn.Linear(vision_hidden, hidden), nn.GELU(), nn.Linear(hidden, llm_hidden))


def vision_width(vision_config) -> int:
    """Channels of a vision tower's output: `hidden_size` of a transformer (SigLIP, CLIP), the last stage's width of
    a convolutional one (ConvNeXt, ResNet)."""
    width = getattr(vision_config, "hidden_size", None)
    if isinstance(width, int):
        return width
    sizes = getattr(vision_config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise UserError(
        f"cannot tell the output width of vision model {vision_config.model_type!r}: its config has "
        "neither hidden_size nor hidden_sizes; use a SigLIP/CLIP-style or ConvNeXt/ResNet-style tower"
    )


class FrameEncoder(nn.Module):
    """Vision tower + token selection: pixels (N, 3, R, R) -> frame features (N, frame_num_tokens, vision_hidden).

    Transformer towers (SigLIP, CLIP) give a patch grid as a token sequence, convolutional ones (ConvNeXt, ResNet) as
    a feature map (N, C, h, w); either way the grid is average-pooled to k x k tokens and the pooled output (the
    whole frame) is the CLS token."""

    def __init__(self, vision_model: nn.Module, config: LiveConfig):
        super().__init__()
        self.vision_model = vision_model
        self.config = config
        vision_config = vision_model.config
        self.hidden_size: int = vision_width(vision_config)
        self.patch_size: int | None = getattr(vision_config, "patch_size", None)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        outputs = self.vision_model(pixel_values=pixel_values)
        tokens = []
        if self.config.frame_token_cls:
            if outputs.pooler_output is None:
                raise ValueError("frame_token_cls needs a vision model with a pooled output; this one has none")
            tokens.append(outputs.pooler_output.flatten(1)[:, None])  # (N, 1, Hv); conv towers pool to (N, C, 1, 1)
        k = self.config.frame_token_pooled
        if k:
            hidden = outputs.last_hidden_state
            if hidden.ndim == 4:  # a feature map (N, Hv, h, w)
                grid = hidden
            else:
                side = pixel_values.shape[-1] // self.patch_size
                # The patch grid is the last side*side tokens: CLIP puts its CLS first, SigLIP has none.
                patches = hidden[:, -side * side :]  # (N, side*side, Hv)
                grid = patches.transpose(1, 2).unflatten(2, (side, side))  # (N, Hv, side, side)
            pooled = F.adaptive_avg_pool2d(grid, (k, k))  # (N, Hv, k, k)
            tokens.append(pooled.flatten(2).transpose(1, 2))  # (N, k*k, Hv)
        return torch.cat(tokens, dim=1)


def preprocess_frames(images, config: LiveConfig, device=None, dtype=None) -> torch.Tensor:
    """uint8 RGB frames (N, R, R, 3) as numpy or torch (or a list of (R, R, 3)) -> normalised (N, 3, R, R)."""
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(image) for image in images])
    pixels = torch.as_tensor(images)
    if pixels.ndim == 3:
        pixels = pixels[None]
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise ValueError(f"frames must be (N, H, W, 3) RGB, got shape {tuple(pixels.shape)}")
    pixels = pixels.to(device=device).permute(0, 3, 1, 2).float().div_(255)  # (N, 3, R, R)
    mean = torch.tensor(config.image_mean, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std, device=pixels.device).view(1, 3, 1, 1)
    pixels = (pixels - mean) / std
    return pixels.to(dtype) if dtype is not None else pixels


@dataclass
class LiveOutput(ModelOutput):
    """Loss, logits (B, L, V) and the KV cache (named `kv_cache`: transformers renames `past_key_values`)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    kv_cache: Any = None


ENCODER_CHUNK = 128
"""Frames per encoder call when a batch has more (see `LiveModel.encode_frames`)."""


class LiveModel(
    nn.Module, ModelHubMixin, library_name=LIBRARY_NAME, license=LICENSE, tags=TAGS, pipeline_tag="video-text-to-text"
):
    """Vision encoder + connector + LLM, one forward for training and streaming alike.

    `save_pretrained` / `from_pretrained` / `push_to_hub` follow the Hugging Face API. The mixin is
    `ModelHubMixin`, not `PyTorchModelHubMixin`: that one saves the whole state dict, base LLM included (16 GB for
    an 8B model), where a checkpoint here is a PEFT adapter (LoRA + connector) over base models named by hub id,
    the project's config, the vision encoder when trained, and a model card (see `checkpoint.save_checkpoint`)."""

    accepts_loss_kwargs = False
    """The loss is each batch's mean over its learned positions (`loss`). Without this flag the HF Trainer, seeing
    `**kwargs` in `forward`, takes the model for one that divides its loss by a global token count the Trainer
    passes: it multiplies the loss by the number of processes and skips the division by the accumulation steps, so
    the logged losses and the gradients came out that many times too large."""

    template: StreamTemplate | None = None
    """The tokenizer and chat template the model was built or loaded with (`checkpoint.assemble` sets it)."""

    def __init__(self, config: LiveConfig, llm: nn.Module, frame_encoder: FrameEncoder, ids: SpecialIds):
        super().__init__()
        self.config = config
        self.llm = llm
        self.frame_encoder = frame_encoder
        self.ids = ids
        if not hasattr(self.base_llm, "connector"):
            raise ValueError("the LLM has no `connector` attribute: build it with model.attach_connector")

    def train(self, mode: bool = True) -> LiveModel:
        """Training mode, except for the encoder's batch norms, which keep normalising with their running
        statistics.

        A LIVE model trains on whole conversations: its batch's frames are the consecutive frames of a few videos, so
        batch statistics would normalise away whatever stays the same within a video (the objects on the table),
        leaving little but motion, and unlike what inference, with the running statistics, sees. (Vision
        pretraining, whose batches mix many episodes, trains the frame encoder's batch norms as usual.)"""
        super().train(mode)
        for module in self.frame_encoder.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(False)
        return self

    # ------------------------------------------------------------------ Hugging Face hub API
    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: LiveConfig | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        save_vision: bool | None = None,
        save_tokenizer: bool = True,
        dtype: str | torch.dtype | None = None,
        **push_to_hub_kwargs,
    ) -> str | None:
        """Write the checkpoint directory (atomically): PEFT adapter, `videollm_online.json`, the tokenizer, the
        vision encoder when it is not rebuilt from a named source (or `save_vision`), and the model card `README.md`
        (`model_card_kwargs`: eval_report, datasets, training_data, license, name). With `push_to_hub`, upload it
        to `repo_id` (default: the directory's name) and return the commit's URL."""
        from .checkpoint import save_checkpoint

        if self.template is None:
            raise ValueError("this model has no template (tokenizer): build it with checkpoint.build_model or load it")
        if config is not None and config != self.config:
            raise ValueError("save_pretrained saves the model's own config; change model.config instead")
        save_checkpoint(
            self,
            self.template,
            save_directory,
            save_vision=save_vision,
            save_tokenizer=save_tokenizer,
            dtype=dtype,
            model_card_kwargs=model_card_kwargs,
        )
        if push_to_hub:  # the directory just written, uploaded as it is
            from huggingface_hub import HfApi

            api = HfApi(endpoint=push_to_hub_kwargs.pop("endpoint", None), token=push_to_hub_kwargs.pop("token", None))
            repo_id = api.create_repo(
                repo_id or Path(save_directory).name, exist_ok=True, private=push_to_hub_kwargs.pop("private", None)
            ).repo_id
            return api.upload_folder(repo_id=repo_id, folder_path=save_directory, **push_to_hub_kwargs).commit_url
        return None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str = "Upload a videollm-online checkpoint",
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        create_pr: bool | None = None,
        endpoint: str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
        **save_kwargs,
    ) -> str:
        """`save_pretrained` into a temporary directory, then one commit of that directory to the hub repo `repo_id`
        (created if missing) through `huggingface_hub.HfApi.upload_folder`; returns the commit's URL. `endpoint`:
        another hub than the one `HF_ENDPOINT` names."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "checkpoint"
            self.save_pretrained(folder, model_card_kwargs=model_card_kwargs, **save_kwargs)
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=branch, create_pr=create_pr
            )
        return commit.commit_url

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        preset: str | None = None,
        llm: str | None = None,
        vision: str | None = None,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "cpu",
        merge_lora: bool = False,
        is_trainable: bool = False,
    ) -> LiveModel:
        """A checkpoint directory or hub id (resolved as every command resolves `--model`), in eval mode, with
        its template as `model.template`. Also reads the released VideoLLM-online adapters (`preset`, default
        `8b-v1plus`); `llm` / `vision` override where the base models come from."""
        from .checkpoint import load_checkpoint

        model, _ = load_checkpoint(
            pretrained_model_name_or_path,
            preset=preset,
            llm=llm,
            vision=vision,
            dtype=dtype,
            device=device,
            merge_lora=merge_lora,
            is_trainable=is_trainable,
        )
        return model

    @property
    def base_llm(self) -> nn.Module:
        """The causal LM itself, under any PEFT wrapper."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    @property
    def connector(self) -> nn.Module:
        return self.base_llm.connector

    @property
    def hidden_size(self) -> int:
        """Width of the LLM's embeddings, which frame embeddings match."""
        return self.base_llm.get_input_embeddings().embedding_dim

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.base_llm.get_input_embeddings().weight.dtype

    # ------------------------------------------------------------------ frames
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (N, 3, R, R) -> frame features (N, T, Hv), before the connector.

        More than `ENCODER_CHUNK` frames (a training batch: every frame of every conversation) go through the encoder
        in chunks of that size, the last one filled up with repeats of the first frames, whose features are dropped.
        The encoder then meets at most ENCODER_CHUNK input shapes instead of a new one at almost every batch: GPU
        convolution libraries choose and build their kernels anew for each new shape."""
        count = pixel_values.shape[0]
        if count <= ENCODER_CHUNK:
            return self.frame_encoder(pixel_values)
        fill = -count % ENCODER_CHUNK
        padded = torch.cat([pixel_values, pixel_values[:fill]]) if fill else pixel_values
        return torch.cat([self.frame_encoder(chunk) for chunk in padded.split(ENCODER_CHUNK)])[:count]

    def embed_frames(self, frame_features: torch.Tensor) -> torch.Tensor:
        """Frame features (N, T, Hv) -> frame embeddings (N, T, H) in the LLM's space."""
        return self.connector(frame_features.to(self.dtype))

    def normalise_frames(self, images) -> torch.Tensor:
        """uint8 RGB frames (N, R, R, 3) -> the encoder's input (N, 3, R, R), on its device and in its dtype."""
        encoder_dtype = next(self.frame_encoder.parameters()).dtype
        return preprocess_frames(images, self.config, device=self.device, dtype=encoder_dtype)

    def frames_to_embeds(self, images) -> torch.Tensor:
        """uint8 RGB frames (N, R, R, 3) -> frame embeddings (N, T, H)."""
        return self.embed_frames(self.encode_frames(self.normalise_frames(images)))

    # ------------------------------------------------------------------ tokens
    def embed_tokens(self, input_ids: torch.Tensor, frame_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with `<v>` positions filled by frame embeddings, in order of appearance."""
        embedding = self.base_llm.get_input_embeddings()
        # `<v>` may lie past the embedding table (Llama-3: id 128256 = vocab size): clamp, then overwrite.
        inputs_embeds = embedding(input_ids.clamp(max=embedding.num_embeddings - 1))  # (B, L, H)
        v_mask = input_ids == self.ids.v_placeholder
        num_placeholders = int(v_mask.sum())
        num_frame_tokens = 0 if frame_embeds is None else frame_embeds.shape[0] * frame_embeds.shape[1]
        if num_placeholders != num_frame_tokens:
            raise ValueError(
                f"frame embeddings and placeholders do not match: {num_placeholders} `{self.config.v_placeholder}` "
                f"tokens in the input, {num_frame_tokens} frame tokens given"
            )
        if num_placeholders:
            frame_embeds = frame_embeds.to(inputs_embeds.dtype).reshape(-1, inputs_embeds.shape[-1])
            inputs_embeds = inputs_embeds.masked_scatter(v_mask[..., None], frame_embeds)
        return inputs_embeds

    def forward(
        self,
        input_ids: torch.Tensor,
        frame_features: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        frame_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> LiveOutput:
        """Frames come as one of: pixels (normalised (N, 3, R, R), or uint8 RGB frames (N, R, R, 3) normalised
        here), features (N, T, Hv) or embeddings (N, T, H), for the `<v>` tokens of the whole batch in row-major
        order."""
        if sum(x is not None for x in (frame_features, pixel_values, frame_embeds)) > 1:
            raise ValueError("pass frames once: pixel_values, frame_features or frame_embeds")
        if pixel_values is not None:
            if pixel_values.dtype == torch.uint8:
                pixel_values = self.normalise_frames(pixel_values)
            frame_features = self.encode_frames(pixel_values)
        if frame_features is not None:
            frame_embeds = self.embed_frames(frame_features)
        inputs_embeds = self.embed_tokens(input_ids, frame_embeds)
        return self.forward_embeds(
            inputs_embeds, past_key_values, use_cache, attention_mask, labels, input_ids, **kwargs
        )

    def forward_embeds(
        self,
        inputs_embeds,
        past_key_values=None,
        use_cache=None,
        attention_mask=None,
        labels=None,
        input_ids=None,
        **kwargs,
    ) -> LiveOutput:
        """The LLM over ready embeddings (B, L, H); the cache argument is named for the installed transformers.
        With labels (training) the LM head runs only at learned positions, and `logits` holds just those rows:
        most positions are frame tokens that learn nothing, and full-vocabulary logits would dominate memory."""
        if labels is not None and past_key_values is None:
            hidden = self.base_llm.get_decoder()(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **kwargs
            ).last_hidden_state  # (B, L, H)
            learned = labels != IGNORE_INDEX
            logits = self.base_llm.get_output_embeddings()(hidden[learned])  # (N_learned, V)
            loss = self.loss(logits, labels[learned], input_ids[learned])
            return LiveOutput(loss=loss, logits=logits)
        if past_key_values is not None:
            kwargs[self._cache_kwarg] = past_key_values
        outputs = self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=use_cache, **kwargs)
        cache = outputs["cache"] if self._cache_kwarg == "cache" else outputs["past_key_values"]
        return LiveOutput(logits=outputs.logits, kv_cache=cache)

    @functools.cached_property
    def _cache_kwarg(self) -> str:
        # transformers >= 5.2x names the KV cache `cache`; earlier releases `past_key_values`.
        return "cache" if "cache" in inspect.signature(self.base_llm.forward).parameters else "past_key_values"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over learned positions (logits (N, V) and labels (N,) of those positions); positions whose
        input is `<v>` (the stream decisions) weigh `stream_loss_weight`. Normalised by the number of learned
        positions, as the seed does."""
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        weight = torch.where(input_ids == self.ids.v_placeholder, self.config.stream_loss_weight, 1.0)
        return (ce * weight).sum() / max(len(labels), 1)


def attach_connector(llm: nn.Module, vision_hidden: int, config: LiveConfig) -> nn.Module:
    """Register a fresh connector as `llm.connector` (the released module layout), in the LLM's dtype."""
    llm_hidden = llm.get_input_embeddings().embedding_dim
    connector = build_connector(vision_hidden, llm_hidden, config.connector_hidden_size)
    llm.connector = connector.to(dtype=llm.get_input_embeddings().weight.dtype, device=llm.device)
    return llm.connector
