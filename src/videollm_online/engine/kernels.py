"""Fused kernels for the fast engine's small per-layer operations, in Triton, with the plain PyTorch ops beside them.

A frame step of one stream feeds 11 tokens: its weight matmuls stream the whole model from memory, and what else a
layer does (norms, residual adds, RoPE, cache writes, the attention softmax, the gated activation) is a crowd of
tiny kernels whose launch and latency cost about a quarter of the step (`benchmarks/results/profile_step_h100.txt`).
`FusedOps` does each group in one kernel: residual add + RMSNorm; RoPE on q and k + the q layout for grouped
attention + the q scale + both cache writes; the masked softmax, with the causal mask read from the positions
instead of a mask tensor; SiLU(gate) * up. The attention of a frame step (`decode_attention`: few queries, a long
cache) is split over the keys: one program per (session, kv head) and chunk reads its keys and values once, keeps
the scores in registers, and a second small kernel combines the chunks' partial softmaxes. `TorchOps` is the same
interface over plain PyTorch ops (CPU, or no Triton). Both compute in float32 where the torch path's kernels do, so
they agree to rounding.

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
    return (
        os.environ.get("VIDEOLLM_ONLINE_FUSED_KERNELS", "1") != "0"
        and device.type == "cuda"
        and fused_available(device)
    )


class TorchOps:
    """The layer's small operations as plain PyTorch ops (several kernels each)."""

    fused = False

    def __init__(self, eps: float, act):
        self.eps = eps
        self.act = act

    def add_rms_norm(
        self, x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor
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

    def rope_and_cache(
        self,
        qkv: torch.Tensor,
        rope: tuple,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        num_heads: int,
        kv_heads: int,
        scale: float,
    ) -> torch.Tensor:
        """Rotate q and k of `qkv` (B, T, (H + 2 KVH) * D) at the positions of `rope` (from `rope_tables`), write k and
        v into the layer's cache (slots, KVH, L, D) at rows 0..B-1, and return the scaled q grouped under its kv
        head: (B, KVH, G * T, D)."""
        cos, sin, positions, rows = rope
        batch, steps = positions.shape
        head_dim = cos.shape[-1]
        group = num_heads // kv_heads
        q_size, kv_size = num_heads * head_dim, kv_heads * head_dim
        qk = qkv[..., : q_size + kv_size].view(batch, steps, num_heads + kv_heads, head_dim)
        qk = qk * cos + qk.roll(head_dim // 2, dims=-1) * sin  # RoPE on q and k at once; sin is sign-folded
        q, k = qk[:, :, :num_heads], qk[:, :, num_heads:]
        v = qkv[..., q_size + kv_size :].view(batch, steps, kv_heads, head_dim)
        k_cache[rows, :, positions] = k
        v_cache[rows, :, positions] = v
        # Queries grouped under their kv head: (B, KVH, G * T, D), head h reads kv head h // G.
        q = q.view(batch, steps, kv_heads, group, head_dim).permute(0, 2, 3, 1, 4)
        return q.reshape(batch, kv_heads, group * steps, head_dim) * scale

    def masked_softmax_(
        self, scores: torch.Tensor, hidden: torch.Tensor | None, positions: torch.Tensor
    ) -> torch.Tensor:
        """Softmax over the last dim of scores (B, KVH, G * T, S) where key s is visible to the query of step t when
        s <= positions[b, t] (`hidden` is the complement, (B, 1, G * T, S)); in the scores' dtype, accumulating in
        float32."""
        scores.masked_fill_(hidden, float("-inf"))
        return scores.softmax(dim=-1)

    def decode_attention(
        self,
        q: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        hidden: torch.Tensor | None,
        positions: torch.Tensor,
    ) -> torch.Tensor:
        """Attention of few queries over a long cache: q (B, KVH, G * T, D), scaled; keys and values (B, KVH, S, D),
        the filled part of the cache; key s visible to the query of step t when s <= positions[b, t] (`hidden`, as
        in `masked_softmax_`). Two matmuls and the masked softmax, which cuBLAS spreads over the whole key length;
        the scores stay in the model's dtype. Returns (B, KVH, G * T, D)."""
        scores = torch.matmul(q, keys.transpose(-1, -2))  # (B, KVH, G * T, S)
        return torch.matmul(self.masked_softmax_(scores, hidden, positions), values)

    def act_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """act(gate) * up for the fused (..., 2 I) projection."""
        gate, up = gate_up.chunk(2, dim=-1)
        return self.act(gate) * up


def visible_keys(positions: torch.Tensor, group: int, span: int) -> torch.Tensor:
    """The causal mask of a step in the grouped query layout: (B, 1, G * T, S), True where key s is visible to the
    query of step t (s <= positions[b, t]; the cache holds the step's own tokens by then)."""
    batch, steps = positions.shape
    visible = torch.arange(span, device=positions.device)[None, None, :] <= positions[:, :, None]  # (B, T, S)
    return visible[:, None, None].expand(batch, 1, group, steps, span).reshape(batch, 1, group * steps, span)


@functools.cache
def _multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


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
    def add_rms_norm(
        x_ptr,
        delta_ptr,
        weight_ptr,
        out_ptr,
        n_rows,
        n_cols,
        eps,
        HAS_DELTA: tl.constexpr,
        ROWS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
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
    def rope_and_cache(
        qkv_ptr,
        cos_ptr,
        sin_ptr,
        pos_ptr,
        q_ptr,
        k_ptr,
        v_ptr,
        steps,
        num_heads,
        kv_heads,
        group,
        scale,
        cache_slot_stride,
        cache_head_stride,
        HEAD_DIM: tl.constexpr,
        HEADS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
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
        tl.store(
            q_ptr + q_row.to(tl.int64) * HEAD_DIM + d,
            (rotated * scale).to(q_ptr.dtype.element_ty),
            mask=inside & (head < num_heads),
        )
        # k and v: the layer's cache (slots, KVH, L, D) at slot b, kv head, position
        kv_head = (head - num_heads) % kv_heads
        offset = b.to(tl.int64) * cache_slot_stride + kv_head * cache_head_stride + position.to(tl.int64) * HEAD_DIM
        is_k = (head >= num_heads) & (head < num_heads + kv_heads)
        tl.store(k_ptr + offset + d, rotated.to(k_ptr.dtype.element_ty), mask=inside & is_k)
        tl.store(v_ptr + offset + d, rotated.to(v_ptr.dtype.element_ty), mask=inside & (head >= num_heads + kv_heads))

    @triton.jit
    def masked_softmax(
        scores_ptr, pos_ptr, n_rows, steps, rows_per_batch, span: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr
    ):
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
            tl.store(
                base + cols,
                (e / tl.where(norm > 0, norm, 1.0)).to(scores_ptr.dtype.element_ty),
                mask=valid[:, None] & (cols < span),
            )
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

    @triton.jit
    def attention_split(
        q_ptr,
        k_ptr,
        v_ptr,
        pos_ptr,
        part_ptr,
        stats_ptr,
        kv_heads,
        steps,
        rows,
        span,
        chunk,
        slot_stride,
        head_stride,
        n_splits,
        head_dim,
        ROWS: tl.constexpr,
        DIM: tl.constexpr,
        BLOCK_N: tl.constexpr,
        UPCAST: tl.constexpr,
        IEEE: tl.constexpr,
    ):
        # One program: the G * T query rows of one (b, kv head) over one chunk of the keys, an online softmax; it
        # writes its unnormalised output and each row's (max, sum of exps) for `attention_combine`.
        bh = tl.program_id(0)
        split = tl.program_id(1)
        b = bh // kv_heads
        m = tl.arange(0, ROWS)
        d = tl.arange(0, DIM)
        row_ok = m < rows
        last = tl.load(pos_ptr + b * steps + m % steps, mask=row_ok, other=-1)  # the last key each query sees
        q = tl.load(
            q_ptr + (bh * rows + m[:, None]).to(tl.int64) * head_dim + d[None, :],
            mask=row_ok[:, None] & (d[None, :] < head_dim),
            other=0.0,
        )
        kv = b.to(tl.int64) * slot_stride + (bh % kv_heads).to(tl.int64) * head_stride
        top = tl.full([ROWS], float("-inf"), tl.float32)
        total = tl.zeros([ROWS], tl.float32)
        acc = tl.zeros([ROWS, DIM], tl.float32)
        start = split * chunk
        for offset in range(0, chunk, BLOCK_N):
            n = start + offset + tl.arange(0, BLOCK_N)
            inside = (n[:, None] < span) & (d[None, :] < head_dim)
            at = kv + n[:, None].to(tl.int64) * head_dim + d[None, :]
            k = tl.load(k_ptr + at, mask=inside, other=0.0)
            if UPCAST:  # the interpreter's tl.dot gets 16-bit inputs wrong: it multiplies in float32 instead
                q, k = q.to(tl.float32), k.to(tl.float32)
            if IEEE:  # float32 models: full-precision products, as torch's matmul (TF32 off by default)
                s = tl.dot(q, tl.trans(k), input_precision="ieee")  # (ROWS, BLOCK_N), float32
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(n[None, :] <= last[:, None], s, float("-inf"))
            new_top = tl.maximum(top, tl.max(s, axis=1))
            base = tl.where(new_top > float("-inf"), new_top, 0.0)  # rows that see nothing yet stay at zero
            p = tl.exp(s - base[:, None])
            scale = tl.exp(top - base)
            total = total * scale + tl.sum(p, axis=1)
            v = tl.load(v_ptr + at, mask=inside, other=0.0)
            p = p.to(v.dtype)  # the probabilities in the model's dtype, as the torch ops' softmax leaves them
            if UPCAST:
                p, v = p.to(tl.float32), v.to(tl.float32)
            if IEEE:
                acc = acc * scale[:, None] + tl.dot(p, v, input_precision="ieee")
            else:
                acc = acc * scale[:, None] + tl.dot(p, v)
            top = new_top
        part = bh * n_splits + split  # partials (B * KVH, splits, rows, D) and stats (B * KVH, splits, rows, 2)
        tl.store(
            part_ptr + ((part * rows + m[:, None]).to(tl.int64) * head_dim + d[None, :]),
            acc,
            mask=row_ok[:, None] & (d[None, :] < head_dim),
        )
        tl.store(stats_ptr + (part * rows + m) * 2, top, mask=row_ok)
        tl.store(stats_ptr + (part * rows + m) * 2 + 1, total, mask=row_ok)

    @triton.jit
    def attention_combine(
        part_ptr, stats_ptr, out_ptr, rows, n_splits, head_dim, SPLITS: tl.constexpr, DIM: tl.constexpr
    ):
        # One program per query row of a (b, kv head): the splits' partial outputs, weighed by their maxima.
        row = tl.program_id(0)  # (b * KVH + h) * rows + m
        bh = row // rows
        m = row % rows
        split = tl.arange(0, SPLITS)
        d = tl.arange(0, DIM)
        ok = split < n_splits
        at = (bh * n_splits + split) * rows + m
        top = tl.load(stats_ptr + at * 2, mask=ok, other=float("-inf"))
        total = tl.load(stats_ptr + at * 2 + 1, mask=ok, other=0.0)
        peak = tl.max(top, axis=0)
        weight = tl.where(top > float("-inf"), tl.exp(top - tl.where(peak > float("-inf"), peak, 0.0)), 0.0)
        norm = tl.sum(total * weight, axis=0)
        acc = tl.load(
            part_ptr + at[:, None].to(tl.int64) * head_dim + d[None, :],
            mask=ok[:, None] & (d[None, :] < head_dim),
            other=0.0,
        )
        out = tl.sum(acc * weight[:, None], axis=0) / tl.where(norm > 0, norm, 1.0)
        tl.store(out_ptr + row.to(tl.int64) * head_dim + d, out.to(out_ptr.dtype.element_ty), mask=d < head_dim)

    return {
        "add_rms_norm": add_rms_norm,
        "rope_and_cache": rope_and_cache,
        "masked_softmax": masked_softmax,
        "silu_mul": silu_mul,
        "attention_split": attention_split,
        "attention_combine": attention_combine,
    }


class FusedOps(TorchOps):
    """The same operations, one Triton kernel each (the activation: SiLU only; others fall back to `TorchOps`)."""

    fused = True

    def __init__(
        self,
        eps: float,
        act,
        hidden_act: str,
        rows_per_program: int | None = None,
        attention_programs: int | None = None,
    ):
        super().__init__(eps, act)
        self.silu = hidden_act == "silu"
        self.rows = rows_per_program or (16 if interpreting() else 1)
        self.k = _kernels()
        self.attention_programs = attention_programs

    def add_rms_norm(self, x, delta, weight):
        if not x.is_contiguous() or (delta is not None and not delta.is_contiguous()):
            return super().add_rms_norm(x, delta, weight)
        cols = x.shape[-1]
        rows = x.numel() // cols
        out = torch.empty_like(x)
        block = _pow2(cols)
        self.k["add_rms_norm"][(cdiv(rows, self.rows),)](
            x,
            x if delta is None else delta,
            weight,
            out,
            rows,
            cols,
            self.eps,
            HAS_DELTA=delta is not None,
            ROWS=self.rows,
            BLOCK=block,
            num_warps=min(16, max(1, self.rows * block // 256)),
        )
        return x, out  # x was updated in place

    def rope_tables(self, cos, sin_folded, positions):
        return cos, sin_folded, positions.contiguous()  # the kernel reads the tables' rows itself

    def rope_and_cache(self, qkv, rope, k_cache, v_cache, num_heads, kv_heads, scale):
        cos, sin_folded, positions = rope
        batch, steps = positions.shape
        head_dim = cos.shape[-1]
        if not (qkv.is_contiguous() and k_cache.is_contiguous() and v_cache.is_contiguous() and head_dim % 2 == 0):
            return super().rope_and_cache(
                qkv, super().rope_tables(cos, sin_folded, positions), k_cache, v_cache, num_heads, kv_heads, scale
            )
        group = num_heads // kv_heads
        q = torch.empty(batch, kv_heads, group * steps, head_dim, dtype=qkv.dtype, device=qkv.device)
        heads, block = _pow2(num_heads + 2 * kv_heads), _pow2(head_dim)
        self.k["rope_and_cache"][(batch * steps,)](
            qkv,
            cos,
            sin_folded,
            positions,
            q,
            k_cache,
            v_cache,
            steps,
            num_heads,
            kv_heads,
            group,
            scale,
            k_cache.stride(0),
            k_cache.stride(1),
            HEAD_DIM=head_dim,
            HEADS=heads,
            BLOCK=block,
            num_warps=min(8, max(1, heads * block // 512)),
        )
        return q

    def masked_softmax_(self, scores, hidden, positions):
        if not scores.is_contiguous():
            return super().masked_softmax_(scores, hidden, positions)
        batch, kv_heads, rows, span = scores.shape
        n_rows = batch * kv_heads * rows
        # Rows up to 16k keys in one block (one pass over the scores); longer ones in blocks of 1024, two passes.
        block = _pow2(span) if self.rows * _pow2(span) <= 16384 else max(64, 1024 // self.rows)
        self.k["masked_softmax"][(cdiv(n_rows, self.rows),)](
            scores,
            positions.contiguous(),
            n_rows,
            positions.shape[1],
            kv_heads * rows,
            span,
            ROWS=self.rows,
            BLOCK=block,
            num_warps=min(16, max(4, self.rows * block // 512)),
        )
        return scores

    def decode_attention(self, q, keys, values, hidden, positions):
        """Split-key attention (flash decoding): programs over (b, kv head) x chunks of the keys, each reading its
        keys and values once with no scores written, then one small kernel combines the chunks."""
        batch, kv_heads, rows, head_dim = q.shape
        span = keys.shape[2]
        if not (
            q.is_contiguous()
            and keys.stride(-1) == 1
            and values.stride() == keys.stride()
            and keys.stride(2) == head_dim
        ):
            return super().decode_attention(q, keys, values, hidden, positions)
        block = 64  # keys per inner step
        # Enough chunks to fill the GPU (a program per multiprocessor or so), each a whole number of blocks.
        splits = max(1, min(cdiv(span, block), cdiv(self.programs(q.device), batch * kv_heads)))
        chunk = cdiv(cdiv(span, splits), block) * block
        splits = cdiv(span, chunk)
        part = torch.empty(batch * kv_heads, splits, rows, head_dim, dtype=torch.float32, device=q.device)
        stats = torch.empty(batch * kv_heads, splits, rows, 2, dtype=torch.float32, device=q.device)
        dim = max(16, _pow2(head_dim))  # tl.dot needs 16 or more on each side: padded lanes load zeros
        self.k["attention_split"][(batch * kv_heads, splits)](
            q,
            keys,
            values,
            positions.contiguous(),
            part,
            stats,
            kv_heads,
            positions.shape[1],
            rows,
            span,
            chunk,
            keys.stride(0),
            keys.stride(1),
            splits,
            head_dim,
            ROWS=max(16, _pow2(rows)),
            DIM=dim,
            BLOCK_N=block,
            UPCAST=interpreting(),
            IEEE=q.dtype == torch.float32,
            num_warps=4,
        )
        out = torch.empty_like(q)
        self.k["attention_combine"][(batch * kv_heads * rows,)](
            part, stats, out, rows, splits, head_dim, SPLITS=_pow2(splits), DIM=dim, num_warps=1
        )
        return out

    def programs(self, device: torch.device) -> int:
        """How many attention programs to aim for (`attention_programs` if given): the multiprocessor count on a GPU,
        two under the interpreter, which runs programs one after another."""
        if self.attention_programs:
            return self.attention_programs
        return _multiprocessors(device) if device.type == "cuda" else 2

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
