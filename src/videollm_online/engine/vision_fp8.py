"""FP8 matmuls in a transformer vision tower (SigLIP, CLIP; `--vision-fp8`): both operands of every encoder linear
in float8 e4m3, the activations scaled per token as they come, the weights per output channel once.

Why not the LLM's weight-only kernel (`engine.quant`): there a frame step multiplies 11 rows and is bound by reading
the weights, so halving their bytes is the gain. An encoder layer multiplies 576 rows a frame (SigLIP-L/16 at 384
px), 18k rows for a 32-stream step: compute-bound GEMMs, where the gain is Hopper's FP8 tensor cores (twice bf16's
FLOPs). So the activations are quantised too, and the GEMM is cuBLASLt's / CUTLASS's rowwise-scaled one
(`torch._scaled_mm`), bias in its epilogue.

The price of quantising activations is a pass over them before each GEMM. It is folded into the operation that
precedes the GEMM anyway: LayerNorm before q/k/v and fc1, GELU before fc2 (`quantize_rows`, one Triton kernel that
reads the bf16 row once and writes e4m3 and a scale), so only out_proj's input costs a pass of its own. q, k and v
are one GEMM.

The rest of the tower (patch embedding, the final norm, the pooling head) stays in the model's dtype. `TorchOps`-style
plain torch ops compute the same quantisation where Triton does not run (a CPU: how the tests check the layer against
the tower's own; `torch._scaled_mm` has a CPU implementation too), and under `TRITON_INTERPRET=1` the tests run the
kernel itself on CPU tensors.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils.errors import UserError
from . import kernels
from .quant import FP8, kernel_available, quantize_fp8

ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "quick_gelu")
"""The MLP activations the fused quantisation knows: SigLIP's tanh GELU, the exact (erf) one, CLIP's quick GELU."""


def fp8_gemm_available(device: torch.device) -> bool:
    """Whether `torch._scaled_mm` runs FP8 GEMMs on this device's tensor cores: compute capability 8.9+ (Ada,
    Hopper, Blackwell)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def quantize_rows_torch(
    x: torch.Tensor,
    norm: nn.LayerNorm | None = None,
    activation: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) with f(x) ~= q.float() * scale per row: f a LayerNorm, an activation or nothing, computed in
    float32; q float8 e4m3 (rows, cols), scale float32 (rows, 1), the row's largest magnitude mapped to 448."""
    values = x.float()
    if norm is not None:
        values = F.layer_norm(values, (values.shape[-1],), norm.weight.float(), norm.bias.float(), norm.eps)
    elif activation == "quick_gelu":
        values = values * torch.sigmoid(1.702 * values)
    elif activation is not None:
        values = F.gelu(values, approximate="tanh" if activation == "gelu_pytorch_tanh" else "none")
    return quantize_fp8(values)


@functools.cache
def _kernels():
    """Built on first use, so that `TRITON_INTERPRET` is read then."""
    import triton
    import triton.language as tl

    @triton.jit
    def quantize_rows(
        x_ptr,
        weight_ptr,
        bias_ptr,
        q_ptr,
        scale_ptr,
        n_rows,
        n_cols,
        eps,
        NORM: tl.constexpr,
        GELU: tl.constexpr,  # 0 none, then ACTIVATIONS' order: 1 tanh approximation, 2 erf, 3 quick
        ROWS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK)
        inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
        if NORM:
            mean = tl.sum(x, axis=1) / n_cols
            centred = tl.where(inside, x - mean[:, None], 0.0)
            variance = tl.sum(centred * centred, axis=1) / n_cols
            weight = tl.load(weight_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            bias = tl.load(bias_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            x = centred * tl.rsqrt(variance + eps)[:, None] * weight[None, :] + bias[None, :]
        if GELU == 1:
            inner = tl.clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -40.0, 40.0)  # exp stays finite
            x = 0.5 * x * (2.0 / (1.0 + tl.exp(-2.0 * inner)))  # 1 + tanh(inner), overflow-free for inner << 0
        elif GELU == 2:
            x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
        elif GELU == 3:
            x = x / (1.0 + tl.exp(tl.minimum(-1.702 * x, 80.0)))
        x = tl.where(inside, x, 0.0)
        amax = tl.max(tl.abs(x), axis=1)
        scale = tl.where(amax > 0, amax / 448.0, 1.0)
        q = tl.clamp(tl.math.div_rn(x, scale[:, None]), -448.0, 448.0)
        # Round to e4m3's grid here, to nearest even, so that the conversion below is exact: Triton's interpreter
        # (the CPU tests) rounds e4m3 wrongly where a carry reaches the exponent (31.4 -> 16). Normal values keep 3
        # of float32's 23 mantissa bits; below 2^-6 the grid is 2^-9 (e4m3's subnormals).
        bits = q.to(tl.uint32, bitcast=True)
        normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & 0xFFF00000).to(tl.float32, bitcast=True)
        subnormal = ((tl.abs(q) * 512.0 + 12582912.0) - 12582912.0) / 512.0  # + 1.5 * 2^23: to an integer, ties even
        subnormal = tl.where((bits >> 31) != 0, -subnormal, subnormal)  # the sign bit kept, -0 included
        q = tl.where(tl.abs(q) < 0.015625, subnormal, normal)
        tl.store(q_ptr + offsets, q.to(q_ptr.dtype.element_ty), mask=inside)
        tl.store(scale_ptr + rows, scale, mask=rows < n_rows)

    return {"quantize_rows": quantize_rows}


def quantize_rows(
    x: torch.Tensor,
    norm: nn.LayerNorm | None = None,
    activation: str | None = None,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`quantize_rows_torch` as one Triton kernel where the fused kernels run (`fused=None`: the device's default):
    x (rows, cols) contiguous is read once, q and the scales written."""
    if fused is None:  # the same rule as the weight-only kernel's: both write / read e4m3 in Triton
        fused = kernel_available(x.device, "fp8")
    if not fused:
        return quantize_rows_torch(x, norm, activation)
    x = x.contiguous()  # the kernel reads rows of `cols` consecutive values
    rows, cols = x.shape
    q = torch.empty((rows, cols), dtype=FP8, device=x.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
    per_program = 16 if kernels.interpreting() else 1
    block = 1 << max(0, (cols - 1).bit_length())
    _kernels()["quantize_rows"][(kernels.cdiv(rows, per_program),)](
        x,
        x if norm is None else norm.weight,
        x if norm is None else norm.bias,
        q,
        scale,
        rows,
        cols,
        norm.eps if norm is not None else 0.0,
        NORM=norm is not None,
        GELU=0 if activation is None else 1 + ACTIVATIONS.index(activation),
        ROWS=per_program,
        BLOCK=block,
        num_warps=min(16, max(1, block // 256)),
    )
    return q, scale


class Fp8Linear(nn.Module):
    """A linear layer's weight in e4m3 with one scale per output channel, multiplied with rows already quantised."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, out_dtype: torch.dtype):
        super().__init__()
        q, scale = quantize_fp8(weight)
        self.register_buffer("weight", q)  # (N, K); its transpose is the column-major operand the GEMM wants
        self.register_buffer("scale", scale.reshape(1, -1).contiguous())  # (1, N)
        self.register_buffer("bias", None if bias is None else bias.to(out_dtype))
        self.out_dtype = out_dtype

    def forward(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch._scaled_mm(
            q,
            self.weight.t(),
            scale_a=scale,
            scale_b=self.scale,
            bias=self.bias,
            out_dtype=self.out_dtype,
            use_fast_accum=True,  # Hopper's FP8 accumulation, promoted to float32 along K: what inference kernels use
        )


def _stack_linears(linears: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = torch.cat([linear.weight.detach() for linear in linears])
    biases = [linear.bias for linear in linears]
    bias = None if any(b is None for b in biases) else torch.cat([b.detach() for b in biases])
    return weight, bias


class Fp8EncoderLayer(nn.Module):
    """A pre-norm ViT encoder layer (SigLIP's or CLIP's: layer_norm1, self_attn with q/k/v/out_proj, layer_norm2,
    mlp with fc1/fc2) computing the same function with its four GEMMs in FP8."""

    def __init__(self, layer: nn.Module, activation: str):
        super().__init__()
        attention, mlp = layer.self_attn, layer.mlp
        dtype = attention.q_proj.weight.dtype
        self.norm1, self.norm2 = layer.layer_norm1, layer.layer_norm2
        self.num_heads = attention.num_heads
        self.head_dim = attention.head_dim
        self.scale = getattr(attention, "scale", self.head_dim**-0.5)
        self.activation = activation
        self.qkv = Fp8Linear(*_stack_linears([attention.q_proj, attention.k_proj, attention.v_proj]), dtype)
        self.out = Fp8Linear(attention.out_proj.weight.detach(), attention.out_proj.bias, dtype)
        self.fc1 = Fp8Linear(mlp.fc1.weight.detach(), mlp.fc1.bias, dtype)
        self.fc2 = Fp8Linear(mlp.fc2.weight.detach(), mlp.fc2.bias, dtype)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, width = hidden.shape
        x = hidden.reshape(batch * tokens, width)
        qkv = self.qkv(*quantize_rows(x, norm=self.norm1))
        q, k, v = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.scale)
        attended = attended.transpose(1, 2).reshape(batch * tokens, width)
        x = x + self.out(*quantize_rows(attended))
        hidden_mlp = self.fc1(*quantize_rows(x, norm=self.norm2))
        x = x + self.fc2(*quantize_rows(hidden_mlp, activation=self.activation))
        return x.view(batch, tokens, width)


class Fp8Encoder(nn.Module):
    """Stands in for a tower's `encoder` (`SiglipEncoder`, `CLIPEncoder`): the same call, the last hidden state."""

    def __init__(self, encoder: nn.Module, activation: str):
        super().__init__()
        self.layers = nn.ModuleList(Fp8EncoderLayer(layer, activation) for layer in encoder.layers)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, **_):
        from transformers.modeling_outputs import BaseModelOutput

        hidden = inputs_embeds
        for layer in self.layers:
            hidden = layer(hidden, attention_mask)
        return BaseModelOutput(last_hidden_state=hidden)


def encoder_owner(vision_model: nn.Module) -> nn.Module | None:
    """The module holding a transformer tower's `encoder` (SigLIP's and CLIP's `vision_model`, or the tower itself
    where transformers flattened it), or None."""
    for owner in (getattr(vision_model, "vision_model", None), vision_model):
        encoder = getattr(owner, "encoder", None)
        if isinstance(encoder, Fp8Encoder):
            return owner
        layers = getattr(encoder, "layers", None)
        if (
            layers is not None
            and len(layers)
            and all(
                hasattr(layer, name) for layer in layers for name in ("layer_norm1", "self_attn", "layer_norm2", "mlp")
            )
        ):
            return owner
    return None


def quantize_vision_tower(model, check_device: bool = True) -> int:
    """Replace the encoder of the model's vision tower (`model.frame_encoder.vision_model`) with its FP8 version, in
    place (the bf16 encoder weights are freed); returns the number of layers. `check_device=False` lets a CPU run it
    (the tests: torch's CPU `_scaled_mm` is a slow reference, no speed-up)."""
    vision_model = model.frame_encoder.vision_model
    config = vision_model.config
    kind = getattr(config, "model_type", type(vision_model).__name__)
    owner = encoder_owner(vision_model)
    if owner is None:
        raise UserError(
            f"--vision-fp8 applies to transformer vision towers (SigLIP, CLIP); this model's is {kind!r}: leave "
            "--vision-fp8 out"
        )
    if isinstance(owner.encoder, Fp8Encoder):
        return len(owner.encoder.layers)
    if check_device and not fp8_gemm_available(model.device):
        where = model.device.type
        if where == "cuda":
            where = f"{torch.cuda.get_device_name(model.device)} (compute capability %d.%d)" % (
                torch.cuda.get_device_capability(model.device)
            )
        raise UserError(
            f"--vision-fp8 needs a GPU with FP8 tensor cores (compute capability 8.9+: Ada, Hopper); this is "
            f"{where}: leave --vision-fp8 out"
        )
    activation = getattr(config, "hidden_act", None)
    if activation not in ACTIVATIONS:
        raise UserError(
            f"--vision-fp8 knows the activations {', '.join(ACTIVATIONS)}; this {kind} tower uses {activation!r}: "
            "leave --vision-fp8 out"
        )
    layers = owner.encoder.layers
    dims = {layer.self_attn.q_proj.weight.shape[1] for layer in layers} | {
        layer.mlp.fc1.weight.shape[0] for layer in layers
    }
    if any(dim % 16 for dim in dims):  # the FP8 GEMM's constraint on K and N
        raise UserError(f"--vision-fp8 needs widths that are multiples of 16; this tower's are {sorted(dims)}")
    owner.encoder = Fp8Encoder(owner.encoder, activation)
    return len(owner.encoder.layers)
