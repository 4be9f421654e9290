"""Weight-only quantised linears for the fast engine: float8 e4m3 or int8 weights with one float32 scale per output
channel, LoRA merged first; the activations stay in the model's dtype.

A single stream is bound by reading the weights (a Llama-3-8B frame step reads ~15 GB of bf16 weights for 11
tokens), so storing them in one byte instead of two halves that read. The matmul is our own Triton kernel
(`weight_only_matmul`): it streams W_q tiles from memory, converts each one to the activations' dtype in registers
inside the K loop, runs `tl.dot` with float32 accumulation, and multiplies the accumulator by the channel scales
(and adds the bias) once at the end. It tiles over N with small row blocks and, at few rows, splits K over several
programs a tile (the last to finish adds the partial sums), so that the few token rows of a frame step (11) still
spread the weight read over all the multiprocessors with enough of it in flight; `triton.autotune` picks the tiles
and the split per (row bucket, N, K) at the first call of each shape, which the engine makes before any CUDA-graph
capture.

Why not cuBLASLt's FP8 GEMM (`torch._scaled_mm`), which this module used first: it needs both operands in FP8, so
every linear quantised its input on the fly (a kernel of its own, and a second rounding), and its kernels for few
rows are slow: measured 0.36-1.0x bf16 `F.linear` at 11 rows on an H100 (`benchmarks/results/fp8_matmul_h100.json`),
one stream 0.78x. torchao's weight-only kernels are not an option either: torchao is not on the GPU image these
figures are measured on (torch and triton are) and is no dependency here.

int8 takes the same kernel and scheme (symmetric, the largest magnitude of a channel maps to 127): for GPUs without
FP8 (Triton converts float8 e4m3 from compute capability 8.9 on: Ada, Hopper), and it rounds finer than e4m3.

Without the kernel (a CPU, no Triton, `VIDEOLLM_ONLINE_FUSED_KERNELS=0`, FP8 on an older GPU) the same quantised
numbers go through a dequantised float32 matmul (the dequantised weight kept after the first call): no memory saved,
but the same function, which is how the CPU tests check a tiny model's logits; under `TRITON_INTERPRET=1` the tests
run the kernel itself on CPU tensors. The LM head is left in the model's dtype: it is read only where a result is
read, and its logits decide silence.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import torch
import torch.nn.functional as F

from ..utils.errors import UserError
from . import kernels

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
INT8_MAX = 127.0  # symmetric: -128 is never used, so q and -q are both representable
WEIGHT_FORMATS = ("fp8", "int8")


def quantize_fp8(tensor: torch.Tensor, per_row: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) with tensor ~= q.float() * scale: q float8 e4m3 (same shape), scale float32 (rows, 1) per row
    (a weight's output channel) or () per tensor. The largest magnitude of each row maps to 448, e4m3's largest
    finite value; an all-zero row gets scale 1 (its zeros stay zeros)."""
    values = tensor.float()
    amax = values.abs().amax(dim=-1, keepdim=True) if per_row else values.abs().amax()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (values / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def quantize_int8(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) as `quantize_fp8` per row, q int8 rounded to nearest: the largest magnitude of a row maps to 127."""
    values = tensor.float()
    amax = values.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    q = (values / scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


QUANTIZERS = {"fp8": quantize_fp8, "int8": quantize_int8}


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def kernel_available(device: torch.device, weights: str) -> bool:
    """Whether `weight_only_matmul` runs for this format on this device: where the fused kernels run by default
    (Triton on CUDA), FP8 from compute capability 8.9 on (Triton converts e4m3 there); or under Triton's
    interpreter (tests)."""
    if kernels.interpreting():
        return kernels.triton_available()
    if not kernels.fused_by_default(device):
        return False
    return weights != "fp8" or torch.cuda.get_device_capability(device) >= (8, 9)


class QuantLinear:
    """y = x (W_q * scale)^T + b with W_q in float8 e4m3 or int8, one scale per output channel; called like
    `F.linear(x, W, b)`."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        weights: str = "fp8",
        use_kernel: bool | None = None,
    ):
        if weights not in QUANTIZERS:
            raise ValueError(f"unknown weight format {weights!r}; valid: {', '.join(WEIGHT_FORMATS)}")
        self.format = weights
        self.out_features, self.in_features = weight.shape
        self.weight, scale = QUANTIZERS[weights](weight)  # (N, K), K contiguous: each tile row is one load
        self.scale = scale.reshape(-1).contiguous()  # (N,) float32
        self.bias = bias
        self.use_kernel = kernel_available(weight.device, weights) if use_kernel is None else use_kernel
        # the split-K tile counters, made once here (outside any CUDA-graph capture); the kernel keeps them at 0
        self.counters = split_counters(self.out_features, weight.device) if self.use_kernel else None
        self._dequantized: torch.Tensor | None = None

    def rows(self, start: int, stop: int) -> QuantLinear:
        """Output channels start..stop-1 as a linear of their own: views of this one's weight, scales and bias, with
        split-K counters of its own (so that it may run beside this one)."""
        view = object.__new__(QuantLinear)
        view.format, view.in_features, view.out_features = self.format, self.in_features, stop - start
        view.weight, view.scale = self.weight[start:stop], self.scale[start:stop]
        view.bias = None if self.bias is None else self.bias[start:stop]
        view.use_kernel = self.use_kernel
        view.counters = split_counters(view.out_features, self.weight.device) if self.use_kernel else None
        view._dequantized = None
        return view

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size() + self.scale.numel() * 4

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        if self.use_kernel:
            out = weight_only_matmul(rows, self.weight, self.scale, self.bias, counters=self.counters)
        else:  # the same quantised numbers, dequantised: a CPU, or no kernel for this format here
            if self._dequantized is None:  # kept: this path is for correctness, not memory
                self._dequantized = dequantize(self.weight, self.scale[:, None])
            out = F.linear(rows.float(), self._dequantized, None if self.bias is None else self.bias.float())
            out = out.to(x.dtype)
        return out.reshape(*shape[:-1], self.out_features)


class QuantRows(torch.nn.Module):
    """Stands in for one of the model's linears (q_proj, gate_proj, ...): rows of a `QuantLinear` that stacks it with
    its neighbours (q/k/v, gate/up), so the model's own forward (the default engine, eval's teacher-forced metrics)
    and the fast engine compute with the same one-byte weights, held once. The tensors are plain attributes, not
    buffers: a model quantised in place is for inference (no `state_dict`, no `.to()` of them)."""

    def __init__(self, source: QuantLinear, start: int, stop: int):
        super().__init__()
        self.source, self.start, self.stop = source, start, stop
        self.in_features, self.out_features = source.in_features, stop - start
        self._rows = source.rows(start, stop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._rows(x)

    def extra_repr(self) -> str:
        return f"{self.source.format}, in_features={self.in_features}, out_features={self.out_features}"


GROUPS = (
    ("self_attn", ("q_proj", "k_proj", "v_proj")),
    ("self_attn", ("o_proj",)),
    ("mlp", ("gate_proj", "up_proj")),
    ("mlp", ("down_proj",)),
)
"""A Llama-family decoder layer's linears, in the groups the fast engine multiplies as one matrix each."""


def quantized_groups(layer: torch.nn.Module, weights: str) -> list[QuantLinear] | None:
    """The layer's linears as one-byte `QuantLinear`s, one per group of `GROUPS` (q/k/v, o, gate/up, down), the
    model's own linears replaced by `QuantRows` of them on first use (so its float weights are freed). None where
    a group is not plain `nn.Linear`s (an unmerged LoRA: the caller folds it into copies). A layer quantised
    before to another format is an error: its float weights are gone."""
    found = []
    for owner_name, names in GROUPS:
        owner = getattr(layer, owner_name)
        modules = [getattr(owner, name) for name in names]
        if all(isinstance(module, QuantRows) for module in modules):
            source = modules[0].source
            if source.format != weights:
                raise UserError(
                    f"the model's linear weights are {source.format} already (quantised in place); open the "
                    f"fast engine with the same --weights {source.format}"
                )
            spans = [(module.start, module.stop) for module in modules]
            consecutive = all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            whole = spans[0][0] == 0 and spans[-1][1] == source.out_features
            if any(m.source is not source for m in modules) or not consecutive or not whole:
                return None
            found.append(source)
        elif all(type(module) is torch.nn.Linear for module in modules):
            found.append(None)
        else:
            return None
    quantized = []
    for (owner_name, names), source in zip(GROUPS, found):
        if source is None:
            owner = getattr(layer, owner_name)
            modules = [getattr(owner, name) for name in names]
            weight = torch.cat([module.weight.detach() for module in modules])
            biases = [module.bias for module in modules]
            bias = None
            if any(b is not None for b in biases):
                bias = torch.cat(
                    [b.detach() if b is not None else weight.new_zeros(m.out_features) for b, m in zip(biases, modules)]
                )
            source = QuantLinear(weight, bias, weights)
            del weight
            start = 0
            for name, module in zip(names, modules):
                setattr(owner, name, QuantRows(source, start, start + module.out_features))
                start += module.out_features
        quantized.append(source)
    return quantized


def quantize_linears(llm: torch.nn.Module, weights: str) -> int:
    """Quantise a Llama-family LLM's decoder linears to `weights` ("fp8" / "int8") in place (`quantized_groups`):
    the float weights are freed and every forward, the model's own included, uses the one-byte ones. Returns the
    number of layers quantised (layers with an unmerged LoRA are left as they are)."""
    if weights not in QUANTIZERS:
        raise UserError(f"unknown weight format {weights!r}; valid: {', '.join(WEIGHT_FORMATS)}")
    decoder = llm.get_decoder()
    with torch.no_grad():
        return sum(quantized_groups(layer, weights) is not None for layer in decoder.layers)


@contextlib.contextmanager
def linears_restored(llm: torch.nn.Module):
    """Put the decoder's linear modules back as they were when the block ends, whatever quantised them in place
    meanwhile (for benchmarks that compare weight formats on one model: the float weights stay alive throughout)."""
    saved = [
        (owner, name, getattr(owner, name))
        for layer in llm.get_decoder().layers
        for owner_name, names in GROUPS
        for owner in [getattr(layer, owner_name)]
        for name in names
    ]
    try:
        yield
    finally:
        for owner, name, module in saved:
            setattr(owner, name, module)


def linear(x: torch.Tensor, weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` for a plain weight tensor, or the quantised matmul for a `QuantLinear` (which carries its bias)."""
    if isinstance(weight, QuantLinear):
        return weight(x)
    return F.linear(x, weight, bias)


# ---------------------------------------------------------------------- the kernel
def row_bucket(rows: int) -> int:
    """The autotuner's key for a row count: 16 (a frame step, a reply token), 32, 64, 128, 256 and more (a block of
    frames): one tuning per bucket, and the engine's step shapes fall in a handful of them."""
    return min(max(16, 1 << (rows - 1).bit_length()), 512)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, SWAP, SPLIT_K) per row bucket: at few rows the leaders of a sweep
# on an H200 (`benchmarks/fp8_matmul.py --sweep`: 48 tile and split choices at 1 and 11 rows). Few rows: memory-bound,
# so row blocks of 16 and tiles over N and K small enough that there are several programs per multiprocessor to keep
# bytes in flight: Llama-3-8B's o and down have only 4096 channels (128 tiles of 32, about one per H100
# multiprocessor), so K is split too (SPLIT_K programs a tile, the last one to finish adds up the partial sums). Many
# rows (a block of 16 frames: 176): the product is transposed (SWAP: W x^T), so that the converted weight tile is the
# operand Hopper's wgmma may take from registers, and wide row blocks convert each weight tile fewer times.
CONFIGS = {
    16: [
        (16, 32, 256, 4, 4, 0, 1),
        (16, 128, 128, 8, 3, 0, 1),
        (16, 32, 256, 4, 3, 0, 2),
        (16, 32, 256, 4, 3, 0, 4),
        (16, 32, 128, 4, 4, 0, 8),
        (16, 64, 256, 4, 3, 0, 2),
        (16, 64, 256, 4, 3, 0, 4),
        (16, 64, 128, 4, 4, 0, 4),
        (16, 128, 128, 8, 3, 0, 2),
    ],
    32: [
        (32, 32, 128, 4, 4, 0, 1),
        (32, 32, 256, 4, 4, 0, 1),
        (32, 64, 128, 4, 4, 1, 1),
        (32, 128, 128, 8, 3, 0, 1),
        (32, 32, 256, 4, 3, 0, 4),
        (32, 64, 128, 4, 4, 0, 4),
    ],
    64: [(64, 32, 128, 4, 4, 0, 1), (64, 64, 128, 4, 4, 1, 1), (64, 128, 128, 8, 3, 1, 1)],
    128: [
        (64, 64, 128, 4, 4, 0, 1),
        (128, 64, 128, 4, 3, 1, 1),
        (128, 128, 64, 8, 3, 1, 1),
        (256, 128, 64, 8, 3, 1, 1),
    ],
}
SPLIT_ROWS = 32
"""K is split only up to this many rows (the buckets whose configs split): where the weight read dominates."""
MAX_SPLIT_K = 8
"""The most programs a tile's K is split over: the partial sums' buffer is (MAX_SPLIT_K, rows, N) float32."""
INTERPRETER_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SWAP": 0, "SPLIT_K": 1}
"""Under the interpreter (which runs programs one after another): one small config, no tuning."""

CONFIG_KEYS = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages", "SWAP", "SPLIT_K")


def config_dict(config: tuple) -> dict:
    """A CONFIGS tuple as the keyword arguments `weight_only_matmul(config=...)` takes."""
    return dict(zip(CONFIG_KEYS, config))


def _configs_for(bucket: int) -> list[tuple[int, int, int, int, int, int, int]]:
    return CONFIGS[min(bucket, 128)]


def _as_tuple(config) -> tuple:
    """A triton.Config as a CONFIGS tuple."""
    options = {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
    return tuple(options[key] for key in CONFIG_KEYS)


def _prune(configs, named_args, **_):
    """Only the configs of the call's row bucket are timed."""
    wanted = set(_configs_for(named_args["M_BUCKET"]))
    return [c for c in configs if _as_tuple(c) in wanted]


@functools.cache
def _kernels():
    """(the jitted kernel, its autotuned form), built on first use (so `TRITON_INTERPRET` is read then)."""
    import triton
    import triton.language as tl

    @triton.jit(do_not_specialize=["M", "M_BUCKET"])
    def matmul(
        x_ptr,
        w_ptr,
        scale_ptr,
        bias_ptr,
        out_ptr,
        partial_ptr,
        counter_ptr,
        M,
        N,
        K,
        M_BUCKET,
        stride_xm,
        stride_wn,
        stride_om,
        HAS_BIAS: tl.constexpr,
        DOT_F32: tl.constexpr,
        EVEN_K: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        SWAP: tl.constexpr,
        SPLIT_K: tl.constexpr,
    ):
        # Row blocks vary fastest: the programs that share a weight tile run together, so it leaves HBM once and
        # the other row blocks find it in L2.
        pid_m, pid_n, pid_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        # Rows and channels past the end wrap around (their results are not stored), so the loads need no mask.
        rows_in, cols_in = rows % M, cols % N
        ks = tl.arange(0, BLOCK_K)
        # Triton's interpreter gets bf16 dots and int8 -> bf16 casts wrong: it multiplies in float32 instead
        dot_dtype = tl.float32 if DOT_F32 else x_ptr.dtype.element_ty
        k_tiles = tl.cdiv(K, BLOCK_K)
        if SPLIT_K == 1:  # the loop from a constant 0, as the software pipeliner knows it best
            first, last = 0, k_tiles
        else:  # program pid_k takes its share of the K tiles
            share = tl.cdiv(k_tiles, SPLIT_K)
            first, last = pid_k * share, tl.minimum(pid_k * share + share, k_tiles)
        x_ptrs = x_ptr + rows_in[:, None].to(tl.int64) * stride_xm + (first * BLOCK_K + ks)[None, :]
        w_ptrs = w_ptr + cols_in[:, None].to(tl.int64) * stride_wn + (first * BLOCK_K + ks)[None, :]
        if SWAP:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(first, last):
            # dequantised in registers: exact (e4m3 and int8 values are all bf16/fp16 values); the scale comes last
            if EVEN_K:
                x = tl.load(x_ptrs).to(dot_dtype)
                w = tl.load(w_ptrs).to(dot_dtype)
            else:  # the K tail: zeros on both sides (a masked-off lane's bits could read as NaN)
                in_k = ks[None, :] < K - k * BLOCK_K
                x = tl.load(x_ptrs, mask=in_k, other=0.0).to(dot_dtype)
                w = tl.where(in_k, tl.load(w_ptrs, mask=in_k).to(dot_dtype), 0.0)
            if SWAP:  # (W x^T): the converted weight is the operand Hopper's wgmma may take from registers
                acc = tl.dot(w, tl.trans(x), acc)
            else:
                acc = tl.dot(x, tl.trans(w), acc)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        if SWAP:
            acc = tl.trans(acc)
        inside = (rows[:, None] < M) & (cols[None, :] < N)
        stored = inside
        if SPLIT_K > 1:
            # Each split stores its float32 partial sums (partial_ptr: (SPLIT_K, M, N)) and counts itself in on the
            # tile's counter; the split that arrives last adds the partials up, in split order (so the sum does
            # not depend on which one came last), finishes the tile and sets its counter back to 0 for the next call.
            offsets = rows[:, None].to(tl.int64) * N + cols[None, :]
            tl.store(partial_ptr + pid_k * M * N + offsets, acc, mask=inside)
            tl.debug_barrier()  # every thread's partial is written before the count says so (release, below)
            tile = pid_m * tl.num_programs(1) + pid_n
            arrived = tl.atomic_add(counter_ptr + tile, 1, sem="acq_rel", scope="gpu")
            # (the count broadcast to the tile: a scalar in a mask trips Triton's interpreter)
            stored = inside & ((tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32) + arrived) == SPLIT_K - 1)
            if arrived == SPLIT_K - 1:
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                for split in tl.static_range(SPLIT_K):  # .cg: from L2, where the other programs' stores are
                    acc += tl.load(partial_ptr + split * M * N + offsets, mask=inside, other=0.0, cache_modifier=".cg")
                tl.atomic_xchg(counter_ptr + tile, 0)
        acc = acc * tl.load(scale_ptr + cols_in)[None, :]
        if HAS_BIAS:
            acc += tl.load(bias_ptr + cols_in).to(tl.float32)[None, :]
        out_ptrs = out_ptr + rows[:, None].to(tl.int64) * stride_om + cols[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=stored)

    even_k = triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
    configs = [
        triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SWAP": swap, "SPLIT_K": split},
            num_warps=warps,
            num_stages=stages,
        )
        for m, n, k, warps, stages, swap, split in sorted({c for group in CONFIGS.values() for c in group})
    ]
    options = {}
    accepted = inspect.signature(triton.autotune).parameters
    if "do_bench" in accepted:  # a short timing per config: the whole tuning is a second or two per shape
        options["do_bench"] = functools.partial(triton.testing.do_bench, warmup=5, rep=20)
    if "cache_results" in accepted:  # the next process reads the winners from Triton's cache instead of timing
        options["cache_results"] = True
    tuned = triton.autotune(
        configs, key=["M_BUCKET", "N", "K"], prune_configs_by={"early_config_prune": _prune}, **options
    )(even_k(matmul))
    return even_k(matmul), tuned


def split_counters(n: int, device: torch.device | str) -> torch.Tensor:
    """The zeroed per-tile counters a split-K call needs for N output channels: the kernel sets each back to 0 when
    its tile is done, so a layer allocates them once (`QuantLinear`) and every call, a CUDA graph's replays
    included, finds them at 0. Calls sharing them must not run at the same time (one stream)."""
    return torch.zeros(-(-SPLIT_ROWS // 16) * -(-n // 16), dtype=torch.int32, device=device)  # tiles of 16 or more


def weight_only_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: dict | None = None,
    counters: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (M, K) @ (weight (N, K) * scale (N,)[:, None])^T + bias (N,), in x's dtype, accumulated in float32.
    `weight` float8 e4m3 or int8; any M, N, K. `config` (`config_dict`'s keys; num_warps / num_stages optional):
    these tiles instead of the autotuned ones (the interpreter's default: one small config). `counters`: the
    layer's `split_counters` (zeroed ones are made for this call without them)."""
    rows, k = x.shape
    n = weight.shape[0]
    if x.stride(-1) != 1:
        x = x.contiguous()
    if weight.stride(-1) != 1:
        raise ValueError("the weight's rows must be contiguous")
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    if rows == 0:
        return out
    plain, tuned = _kernels()
    if config is None and kernels.interpreting():
        config = INTERPRETER_CONFIG
    may_split = rows <= SPLIT_ROWS and (config is None or config.get("SPLIT_K", 1) > 1)
    if may_split:
        partial = torch.empty(MAX_SPLIT_K, rows, n, dtype=torch.float32, device=x.device)
        counters = split_counters(n, x.device) if counters is None else counters
    else:  # not read without a split
        partial, counters = out, scale
    bias_arg = bias if bias is not None else scale  # not read without HAS_BIAS
    args = (x, weight, scale, bias_arg, out, partial, counters, rows, n, k, row_bucket(rows))
    args += (x.stride(0), weight.stride(0), out.stride(0))
    if config is not None:
        config = {"SPLIT_K": 1, **config}
        if config["SPLIT_K"] > MAX_SPLIT_K or (config["SPLIT_K"] > 1 and rows > SPLIT_ROWS):
            raise ValueError(f"SPLIT_K {config['SPLIT_K']} needs at most {SPLIT_ROWS} rows and {MAX_SPLIT_K} splits")
        if min(config["BLOCK_M"], config["BLOCK_N"]) < 16:
            raise ValueError("BLOCK_M and BLOCK_N must be at least 16 (tl.dot's smallest tile; the counters' size)")
        grid = (-(-rows // config["BLOCK_M"]), -(-n // config["BLOCK_N"]), config["SPLIT_K"])
        plain[grid](*args, HAS_BIAS=bias is not None, DOT_F32=kernels.interpreting(), **config)
    else:
        tuned[lambda meta: (-(-rows // meta["BLOCK_M"]), -(-n // meta["BLOCK_N"]), meta["SPLIT_K"])](
            *args, HAS_BIAS=bias is not None, DOT_F32=False
        )
    return out


def chosen_config(x_rows: int, n: int, k: int, weight_dtype: torch.dtype) -> dict | None:
    """The autotuner's pick for a shape once it has run (for benchmarks' records), or None."""
    tuned = _kernels()[1]
    for key, config in tuned.cache.items():  # (M_BUCKET, N, K, then the tensor arguments' dtypes)
        if tuple(key[:3]) == (row_bucket(x_rows), n, k) and str(weight_dtype) in key[3:]:
            return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}
    return None
