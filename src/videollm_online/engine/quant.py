"""FP8 weights for the fast engine: float8 e4m3 linear weights with a scale per output channel, LoRA merged first.

A single stream is bound by reading the weights (a Llama-3-8B frame step reads ~15 GB of bf16 weights for 11
tokens), so storing them in one byte instead of two halves that read. The matmul is `torch._scaled_mm` (cuBLASLt's
FP8 GEMM, on GPUs of compute capability 8.9 and up: Ada, Hopper): it takes FP8 operands on both sides, so each
linear quantises its input on the fly, one scale per row (token), and the weight carries one scale per output
channel ("row-wise" scaling, output in bf16). Where row-wise scaling is refused (older builds) both sides fall back to
one scale per tensor. We call `torch._scaled_mm` directly rather than torchao: torchao is not installed on the GPU
machines this project is measured on (their image has torch, triton, no torchao) and is not a dependency here; the
engine's forward is our own code, so one function call per linear is all it needs, and it captures into the
engine's CUDA graphs like any other op.

On a CPU, or a GPU without FP8 matmuls, the same quantised numbers go through a dequantised float32 matmul (the
dequantised weight kept after the first call): no memory saved, but the same function, which is how the CPU tests
check the quantisation math and a tiny model's logits.
The LM head is left in the model's dtype: it is read only where a result is read, and its logits decide silence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
WEIGHT_FORMATS = ("fp8",)


def quantize_fp8(tensor: torch.Tensor, per_row: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) with tensor ~= q.float() * scale: q float8 e4m3 (same shape), scale float32 (rows, 1) per row
    (a weight's output channel, or an activation's token) or () per tensor. The largest magnitude of each row maps
    to 448, e4m3's largest finite value; an all-zero row gets scale 1 (its zeros stay zeros)."""
    values = tensor.float()
    amax = values.abs().amax(dim=-1, keepdim=True) if per_row else values.abs().amax()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (values / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def scaled_mm_available(device: torch.device) -> bool:
    """Whether `torch._scaled_mm` runs FP8 on this device (CUDA, compute capability >= 8.9)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9) and hasattr(torch, "_scaled_mm")


class Fp8Linear:
    """y = x W^T + b with W stored in float8 e4m3 and per-output-channel scales; called like `F.linear(x, W, b)`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, per_channel: bool = True):
        self.out_features, self.in_features = weight.shape
        self.out_dtype = weight.dtype if weight.dtype in (torch.bfloat16, torch.float16) else torch.float32
        self.bias = bias
        self.fast = scaled_mm_available(weight.device) and self.in_features % 16 == 0 and self.out_features % 16 == 0
        self.per_channel = per_channel
        if self.fast and per_channel and not self._rowwise_works(weight.device):
            self.per_channel = False  # this build has no row-wise FP8 GEMM: one scale per tensor
        self.weight, scale = quantize_fp8(weight, per_row=self.per_channel)
        self.scale_b = scale.reshape(1, -1) if self.per_channel else scale.reshape(())  # (1, N) or ()
        self.weight_t = self.weight.t()  # (K, N), column-major: what cuBLASLt's FP8 GEMM takes as its second operand
        self._dequantized: torch.Tensor | None = None

    @staticmethod
    def _rowwise_works(device: torch.device) -> bool:
        try:
            a = torch.zeros(16, 32, device=device).to(FP8)
            b = torch.zeros(16, 32, device=device).to(FP8).t()
            torch._scaled_mm(
                a,
                b,
                scale_a=torch.ones(16, 1, device=device),
                scale_b=torch.ones(1, 16, device=device),
                out_dtype=torch.bfloat16,
            )
            return True
        except (RuntimeError, NotImplementedError):
            return False

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size() + self.scale_b.numel() * 4

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        x_q, scale_a = quantize_fp8(rows, per_row=self.per_channel)  # (M, K) fp8, (M, 1) or ()
        if self.fast:
            count = x_q.shape[0]
            pad = -count % 16  # rows padded to a multiple of 16, as some cuBLASLt FP8 kernels want (zero rows)
            if pad:
                x_q = torch.cat([x_q, x_q.new_zeros(pad, self.in_features)])
                scale_a = torch.cat([scale_a, scale_a.new_ones(pad, 1)]) if self.per_channel else scale_a
            out = torch._scaled_mm(
                x_q,
                self.weight_t,
                scale_a=scale_a,
                scale_b=self.scale_b,
                out_dtype=torch.bfloat16 if self.per_channel else self.out_dtype,
            )
            out = out[:count].to(x.dtype)
        else:  # the same quantised numbers, dequantised: a CPU, or a GPU without FP8 matmuls
            if self._dequantized is None:  # kept: this path is for correctness, not memory
                weight_scale = self.scale_b.reshape(-1, 1) if self.per_channel else self.scale_b
                self._dequantized = dequantize_fp8(self.weight, weight_scale)
            out = F.linear(dequantize_fp8(x_q, scale_a), self._dequantized).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


def linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` for a plain weight tensor, or the FP8 matmul for an `Fp8Linear` (which carries its own bias)."""
    if isinstance(weight, Fp8Linear):
        return weight(x)
    return F.linear(x, weight, bias)
