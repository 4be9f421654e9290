"""Fused kernels for the fast engine's small per-layer operations, in Triton, with the plain PyTorch ops beside them.

A frame step of one stream feeds 11 tokens: its weight matmuls stream the whole model from memory, and what else a
layer does (norms, residual adds, RoPE, cache writes, the attention softmax, the gated activation) is a crowd of
tiny kernels whose launch and latency cost about a quarter of the step (`benchmarks/results/profile_step_h100.txt`).
`FusedOps` does each group in one kernel: residual add + RMSNorm; RoPE on q and k + the q layout for grouped
attention + the q scale + both cache writes; the masked softmax, with the causal mask read from the positions
instead of a mask tensor; SiLU(gate) * up. `TorchOps` is the same interface over plain PyTorch ops (CPU, or no
Triton). Both compute in float32 where the torch path's kernels do, so they agree to rounding.

The kernels run compiled on CUDA and, with `TRITON_INTERPRET=1` set before the first kernel is built, on CPU
tensors through Triton's interpreter: that is how the CPU test suite checks them against `TorchOps`.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
import torch.nn.functional as F


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def fused_available(device: torch.device) -> bool:
    """Whether `FusedOps` can run on tensors of `device`: Triton on a CUDA device, or Triton's interpreter."""
    return triton_available() and (device.type == "cuda" or interpreting())


def fused_by_default(device: torch.device) -> bool:
    """The fast engine's default: the fused kernels wherever they can run, unless `VIDEOLLM_ONLINE_FUSED_KERNELS=0`
    (for a GPU whose Triton build fails: the torch ops give the same results)."""
    return os.environ.get("VIDEOLLM_ONLINE_FUSED_KERNELS", "1") != "0" and device.type == "cuda" and \
        fused_available(device)


class TorchOps:
    """The layer's small operations as plain PyTorch ops (several kernels each)."""

    fused = False

    def __init__(self, eps: float, act):
        self.eps = eps
        self.act = act

    def add_rms_norm(self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + delta, RMSNorm(x + delta) * weight); delta None: no add."""
        if delta is not None:
            x = x + delta
        return x, F.rms_norm(x, (x.shape[-1],), weight, eps=self.eps)  # one fused kernel; accumulates in float32

    def rope_tables(self, cos: torch.Tensor, sin_folded: torch.Tensor, positions: torch.Tensor) -> tuple:
        """What `rope_and_cache` needs for a step's positions (B, T), computed once for all layers: the (L, D) tables'
        rows at the positions (B, T, 1, D) and each position's cache row."""
        batch, steps = positions.shape
        rows = torch.arange(batch, device=positions.device)[:, None].expand(batch, steps)  # (B, T)
        return cos[positions][:, :, None], sin_folded[positions][:, :, None], positions, rows

    def rope_and_cache(self, qkv: torch.Tensor, rope: tuple, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       num_heads: int, kv_heads: int, scale: float) -> torch.Tensor:
        """Rotate q and k of `qkv` (B, T, (H + 2 KVH) * D) at the positions of `rope` (from `rope_tables`), write k and
        v into the layer's cache (slots, KVH, L, D) at rows 0..B-1, and return the scaled q grouped under its kv
        head: (B, KVH, G * T, D)."""
        cos, sin, positions, rows = rope
        batch, steps = positions.shape
        head_dim = cos.shape[-1]
        group = num_heads // kv_heads
        q_size, kv_size = num_heads * head_dim, kv_heads * head_dim
        qk = qkv[..., :q_size + kv_size].view(batch, steps, num_heads + kv_heads, head_dim)
        qk = qk * cos + qk.roll(head_dim // 2, dims=-1) * sin  # RoPE on q and k at once; sin is sign-folded
        q, k = qk[:, :, :num_heads], qk[:, :, num_heads:]
        v = qkv[..., q_size + kv_size:].view(batch, steps, kv_heads, head_dim)
        k_cache[rows, :, positions] = k
        v_cache[rows, :, positions] = v
        # Queries grouped under their kv head: (B, KVH, G * T, D), head h reads kv head h // G.
        q = q.view(batch, steps, kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
        return q.reshape(batch, kv_heads, group * steps, head_dim) * scale

    def masked_softmax_(self, scores: torch.Tensor, hidden: torch.Tensor | None, positions: torch.Tensor
                        ) -> torch.Tensor:
        """Softmax over the last dim of scores (B, KVH, G * T, S) where key s is visible to the query of step t when
        s <= positions[b, t] (`hidden` is the complement, (B, 1, G * T, S)); in the scores' dtype, accumulating in
        float32."""
        scores.masked_fill_(hidden, float("-inf"))
        return scores.softmax(dim=-1)

    def act_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """act(gate) * up for the fused (..., 2 I) projection."""
        gate, up = gate_up.chunk(2, dim=-1)
        return self.act(gate) * up


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@functools.cache
def _kernels():
    """The Triton kernels, built on first use (so `TRITON_INTERPRET` is read then, not at import). Each program
    takes ROWS rows: one on a GPU (many small programs spread over the multiprocessors), many under the interpreter
    (which runs programs one after another, about a millisecond each)."""
    import triton
    import triton.language as tl

    @triton.jit
    def add_rms_norm(x_ptr, delta_ptr, weight_ptr, out_ptr, n_rows, n_cols, eps, HAS_DELTA: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, BLOCK)
        inside = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        x = tl.load(x_ptr + offsets, mask=inside, other=0.0)
        if HAS_DELTA:
            delta = tl.load(delta_ptr + offsets, mask=inside, other=0.0)
            x = (x.to(tl.float32) + delta.to(tl.float32)).to(x_ptr.dtype.element_ty)  # the residual keeps its dtype
            tl.store(x_ptr + offsets, x, mask=inside)
        xf = x.to(tl.float32)
        variance = tl.sum(xf * xf, axis=1) / n_cols  # (ROWS,)
        weight = tl.load(weight_ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
        normed = xf * tl.rsqrt(variance + eps)[:, None] * weight[None, :]
        tl.store(out_ptr + offsets, normed.to(out_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def rope_and_cache(qkv_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, k_ptr, v_ptr, steps, num_heads, kv_heads, group,
                       scale, cache_slot_stride, cache_head_stride, HEAD_DIM: tl.constexpr, HEADS: tl.constexpr,
                       BLOCK: tl.constexpr):
        token = tl.program_id(0)  # b * steps + t; the program does all its heads: q heads, then k, then v
        b = token // steps
        t = token % steps
        position = tl.load(pos_ptr + token)
        head = tl.arange(0, HEADS)[:, None]  # (HEADS, 1)
        d = tl.arange(0, BLOCK)[None, :]  # (1, BLOCK)
        inside = (head < num_heads + 2 * kv_heads) & (d < HEAD_DIM)
        src = qkv_ptr + token.to(tl.int64) * (num_heads + 2 * kv_heads) * HEAD_DIM + head * HEAD_DIM
        x = tl.load(src + d, mask=inside, other=0.0).to(tl.float32)
        # q and k rotate; rotate_half(x) * sin == x[(d + D/2) % D] * (sin with its first half negated)
        partner = tl.load(src + (d + HEAD_DIM // 2) % HEAD_DIM, mask=inside, other=0.0).to(tl.float32)
        cos = tl.load(cos_ptr + position * HEAD_DIM + d, mask=d < HEAD_DIM, other=0.0)
        sin = tl.load(sin_ptr + position * HEAD_DIM + d, mask=d < HEAD_DIM, other=0.0)
        rotated = tl.where(head < num_heads + kv_heads, x * cos + partner * sin, x)
        # q: (B, KVH, G * T, D), row g * T + t of kv head h // G, scaled
        q_row = (b * kv_heads + head // group) * group * steps + (head % group) * steps + t
        tl.store(q_ptr + q_row.to(tl.int64) * HEAD_DIM + d, (rotated * scale).to(q_ptr.dtype.element_ty),
                 mask=inside & (head < num_heads))
        # k and v: the layer's cache (slots, KVH, L, D) at slot b, kv head, position
        kv_head = (head - num_heads) % kv_heads
        offset = b.to(tl.int64) * cache_slot_stride + kv_head * cache_head_stride + position.to(tl.int64) * HEAD_DIM
        is_k = (head >= num_heads) & (head < num_heads + kv_heads)
        tl.store(k_ptr + offset + d, rotated.to(k_ptr.dtype.element_ty), mask=inside & is_k)
        tl.store(v_ptr + offset + d, rotated.to(v_ptr.dtype.element_ty), mask=inside & (head >= num_heads + kv_heads))

    @triton.jit
    def masked_softmax(scores_ptr, pos_ptr, n_rows, steps, rows_per_batch, span: tl.constexpr, ROWS: tl.constexpr,
                       BLOCK: tl.constexpr):
        # span is a compile-time constant: one build per cache bucket (a handful), loop bounds the interpreter reads
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # over (B, KVH, G * T)
        valid = rows < n_rows
        b = rows // rows_per_batch
        t = rows % steps  # rows within a (b, kv head) are g * T + t
        last = tl.load(pos_ptr + b * steps + t, mask=valid, other=-1)[:, None]  # the last key each query sees
        base = scores_ptr + rows[:, None].to(tl.int64) * span
        if span <= BLOCK:  # the whole row in one block: one read and one write
            cols = tl.arange(0, BLOCK)[None, :]
            s = tl.load(base + cols, mask=cols <= last, other=float("-inf")).to(tl.float32)
            peak = tl.max(s, axis=1)[:, None]
            e = tl.exp(s - tl.where(peak > float("-inf"), peak, 0.0))
            norm = tl.sum(e, axis=1)[:, None]
            tl.store(base + cols, (e / tl.where(norm > 0, norm, 1.0)).to(scores_ptr.dtype.element_ty),
                     mask=valid[:, None] & (cols < span))
        else:  # blocks of BLOCK keys, two passes
            top = tl.full([ROWS, BLOCK], float("-inf"), tl.float32)
            total = tl.zeros([ROWS, BLOCK], tl.float32)
            for start in range(0, span, BLOCK):  # per lane: a running max and the sum of exps under it
                cols = start + tl.arange(0, BLOCK)[None, :]
                s = tl.load(base + cols, mask=cols <= last, other=float("-inf")).to(tl.float32)
                new_top = tl.maximum(top, s)
                seen = new_top > float("-inf")
                total = tl.where(seen, total * tl.exp(top - new_top) + tl.exp(s - new_top), 0.0)
                top = new_top
            peak = tl.max(top, axis=1)[:, None]
            peak = tl.where(peak > float("-inf"), peak, 0.0)  # rows past the end
            norm = tl.sum(tl.where(top > float("-inf"), total * tl.exp(top - peak), 0.0), axis=1)[:, None]
            norm = tl.where(norm > 0, norm, 1.0)
            for start in range(0, span, BLOCK):
                cols = start + tl.arange(0, BLOCK)[None, :]
                s = tl.load(base + cols, mask=cols <= last, other=float("-inf")).to(tl.float32)
                p = tl.where(cols <= last, tl.exp(s - peak) / norm, 0.0)
                tl.store(base + cols, p.to(scores_ptr.dtype.element_ty), mask=valid[:, None] & (cols < span))

    @triton.jit
    def silu_mul(gate_up_ptr, out_ptr, total, inter, BLOCK: tl.constexpr):
        index = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # over the (rows, I) output
        inside = index < total
        row, col = index // inter, index % inter
        gate = tl.load(gate_up_ptr + row * 2 * inter + col, mask=inside, other=0.0).to(tl.float32)
        up = tl.load(gate_up_ptr + row * 2 * inter + inter + col, mask=inside, other=0.0).to(tl.float32)
        tl.store(out_ptr + index, (gate * tl.sigmoid(gate) * up).to(out_ptr.dtype.element_ty), mask=inside)

    return {"add_rms_norm": add_rms_norm, "rope_and_cache": rope_and_cache, "masked_softmax": masked_softmax,
            "silu_mul": silu_mul}


class FusedOps(TorchOps):
    """The same operations, one Triton kernel each (the activation: SiLU only; others fall back to `TorchOps`)."""

    fused = True

    def __init__(self, eps: float, act, hidden_act: str, rows_per_program: int | None = None):
        super().__init__(eps, act)
        self.silu = hidden_act == "silu"
        self.rows = rows_per_program or (16 if interpreting() else 1)
        self.k = _kernels()

    def add_rms_norm(self, x, delta, weight):
        if not x.is_contiguous() or (delta is not None and not delta.is_contiguous()):
            return super().add_rms_norm(x, delta, weight)
        cols = x.shape[-1]
        rows = x.numel() // cols
        out = torch.empty_like(x)
        block = _pow2(cols)
        self.k["add_rms_norm"][(cdiv(rows, self.rows),)](
            x, x if delta is None else delta, weight, out, rows, cols, self.eps, HAS_DELTA=delta is not None,
            ROWS=self.rows, BLOCK=block, num_warps=min(16, max(1, self.rows * block // 256)))
        return x, out  # x was updated in place

    def rope_tables(self, cos, sin_folded, positions):
        return cos, sin_folded, positions.contiguous()  # the kernel reads the tables' rows itself

    def rope_and_cache(self, qkv, rope, k_cache, v_cache, num_heads, kv_heads, scale):
        cos, sin_folded, positions = rope
        batch, steps = positions.shape
        head_dim = cos.shape[-1]
        if not (qkv.is_contiguous() and k_cache.is_contiguous() and v_cache.is_contiguous() and head_dim % 2 == 0):
            return super().rope_and_cache(qkv, super().rope_tables(cos, sin_folded, positions), k_cache, v_cache,
                                          num_heads, kv_heads, scale)
        group = num_heads // kv_heads
        q = torch.empty(batch, kv_heads, group * steps, head_dim, dtype=qkv.dtype, device=qkv.device)
        heads, block = _pow2(num_heads + 2 * kv_heads), _pow2(head_dim)
        self.k["rope_and_cache"][(batch * steps,)](
            qkv, cos, sin_folded, positions, q, k_cache, v_cache, steps, num_heads, kv_heads, group,
            scale, k_cache.stride(0), k_cache.stride(1), HEAD_DIM=head_dim, HEADS=heads, BLOCK=block,
            num_warps=min(8, max(1, heads * block // 512)))
        return q

    def masked_softmax_(self, scores, hidden, positions):
        if not scores.is_contiguous():
            return super().masked_softmax_(scores, hidden, positions)
        batch, kv_heads, rows, span = scores.shape
        n_rows = batch * kv_heads * rows
        # Rows up to 16k keys in one block (one pass over the scores); longer ones in blocks of 1024, two passes.
        block = _pow2(span) if self.rows * _pow2(span) <= 16384 else max(64, 1024 // self.rows)
        self.k["masked_softmax"][(cdiv(n_rows, self.rows),)](
            scores, positions.contiguous(), n_rows, positions.shape[1], kv_heads * rows, span, ROWS=self.rows,
            BLOCK=block, num_warps=min(16, max(4, self.rows * block // 512)))
        return scores

    def act_mul(self, gate_up):
        if not self.silu or not gate_up.is_contiguous():
            return super().act_mul(gate_up)
        inter = gate_up.shape[-1] // 2
        out = torch.empty(*gate_up.shape[:-1], inter, dtype=gate_up.dtype, device=gate_up.device)
        block = 1024 * self.rows
        self.k["silu_mul"][(cdiv(out.numel(), block),)](gate_up, out, out.numel(), inter, BLOCK=block, num_warps=4)
        return out


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
