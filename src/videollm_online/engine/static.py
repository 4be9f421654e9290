"""The fast decode path: a static KV cache for many sessions, one forward per step for all of them, CUDA graphs.

`StaticKV` runs Llama-family decoders (Llama, Mistral, Qwen2, SmolLM2: pre-norm, RoPE, grouped-query attention,
gated MLP) with its own forward over the Hugging Face weights: q/k/v and gate/up fused, LoRA merged, the cache
allocated once as (layers, sessions, kv heads, tokens, head dim). Each session owns a slot; a step feeds any number
of slots at once, each at its own position with its own length (rows that have nothing to feed pad along), and
attention reads only the filled part of the cache, rounded up to a bucket. On CUDA every (batch, length, span)
shape is captured once as a CUDA graph and replayed. A step's integer inputs travel in one packed host-to-device
copy; what comes back per feed is the argmax token and P(silence), computed on the GPU: one small host read per step.
Each layer's small operations between the matmuls run as fused Triton kernels on CUDA (`kernels.FusedOps`), or as
plain torch ops (`kernels.TorchOps`: CPU, no Triton, or `VIDEOLLM_ONLINE_FUSED_KERNELS=0`).

Endless streams: a `MemoryPolicy` keeps a session's first tokens (system prompt and first frame: the attention
sink) and its most recent ones; when the slot is full the oldest tokens after the sink are dropped and the kept
keys are re-rotated so positions stay contiguous (RoPE rotations compose), so memory and positions stay bounded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

from ..core.model import LiveModel
from ..core.policy import silence_probability
from ..utils.errors import UserError
from . import kernels
from .backend import Feed, FeedResult
from .quant import WEIGHT_FORMATS, QuantLinear, QuantRows, linear, quantized_groups


class ContextFullError(UserError):
    """A session outgrew its cache and no memory policy lets it drop old tokens."""


@dataclass
class MemoryPolicy:
    """Keep the sink and a recent window when a session fills its slot."""

    sink_tokens: int | None = None
    """Tokens kept at the start; None: everything before the first frame's decision (system prompt + frame 1)."""
    evict_fraction: float = 0.25
    """Share of the droppable tokens dropped at once when full: one shift of the cache serves many frames."""

    def __post_init__(self) -> None:
        if self.sink_tokens is not None and self.sink_tokens < 0:
            raise ValueError(f"sink_tokens must be >= 0, got {self.sink_tokens}")
        if not 0.0 < self.evict_fraction < 1.0:
            raise ValueError(f"evict_fraction must be in (0, 1), got {self.evict_fraction}")


def _bucket(value: int, buckets: list[int]) -> int:
    for bucket in buckets:
        if value <= bucket:
            return bucket
    raise ValueError(f"{value} is larger than the largest bucket {buckets[-1]}")


READ_BUCKETS = [2**i for i in range(16)]


def _packed_size(batch: int, steps: int, reads: int) -> int:
    """Length of a step's packed integer inputs (`StaticKV._unpack`): ids, is_frame, positions, read_index."""
    return 3 * batch * steps + batch * reads


def _merged_weight(linear: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear layer's weight with its active LoRA adapters folded in, and its bias."""
    base = getattr(linear, "base_layer", linear)
    weight = base.weight
    for adapter in getattr(linear, "active_adapters", []) or []:
        if adapter in getattr(linear, "lora_A", {}) and not getattr(linear, "merged", False):
            weight = weight + linear.get_delta_weight(adapter).to(weight.dtype)
    return weight.detach(), (None if base.bias is None else base.bias.detach())


def _adjacent_rows(weights: tuple[torch.Tensor, ...]) -> torch.Tensor | None:
    """The weights as one (sum of rows, K) tensor without a copy, if they are already consecutive rows of one
    storage (the linears of a model whose weights an earlier engine fused), else None."""
    first = weights[0]
    offset = first.storage_offset()
    for weight in weights:
        same_storage = weight.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        if not (same_storage and weight.is_contiguous() and weight.storage_offset() == offset):
            return None
        offset += weight.numel()
    rows = sum(weight.shape[0] for weight in weights)
    return first.as_strided((rows, first.shape[1]), (first.shape[1], 1), first.storage_offset())


def _fuse(linears: list[torch.nn.Module], share: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The linears' merged weights stacked (and their biases). With `share`, and no LoRA left to fold in, the model's
    own linears then read their rows of the stacked weight (views), so the weights are not held twice: ~9 GB on
    Llama-3-8B (q/k/v and gate/up)."""
    weights, biases = zip(*(_merged_weight(linear) for linear in linears))
    fused = _adjacent_rows(weights)
    if fused is None:
        fused = torch.cat(weights).contiguous()
        plain = [getattr(linear, "base_layer", linear) for linear in linears]
        if share and all(w is not None and w.data_ptr() == p.weight.data_ptr() for w, p in zip(weights, plain)):
            start = 0
            for module, weight in zip(plain, weights):
                module.weight.data = fused[start : start + weight.shape[0]]
                start += weight.shape[0]
    if all(b is None for b in biases):
        return fused, None
    biases = [
        b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) for w, b in zip(weights, biases)
    ]
    return fused, torch.cat(biases)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class _Layer:
    def __init__(self, layer: torch.nn.Module, weights: str | None = None):
        attention, mlp = layer.self_attn, layer.mlp
        self.norm_1 = layer.input_layernorm.weight.detach()
        self.norm_2 = layer.post_attention_layernorm.weight.detach()
        if isinstance(attention.q_proj, QuantRows) and weights is None:
            held = attention.q_proj.source.format
            raise UserError(
                f"the model's linear weights are {held} already (quantised in place); open the fast engine with "
                f"--weights {held}"
            )
        groups = quantized_groups(layer, weights) if weights is not None else None
        if groups is not None:  # the model's own linears read the same one-byte weights (held once)
            # views with split-K counters of their own, so that a second engine may run beside this one
            self.qkv, self.o, self.gate_up, self.down = (group.rows(0, group.out_features) for group in groups)
            self.qkv_bias = self.o_bias = None  # each QuantLinear carries its bias
            return
        share = weights is None  # an unmerged LoRA: one-byte weights are copies with the adapter folded in
        self.qkv, self.qkv_bias = _fuse([attention.q_proj, attention.k_proj, attention.v_proj], share)
        self.o, self.o_bias = _merged_weight(attention.o_proj)
        self.gate_up, _ = _fuse([mlp.gate_proj, mlp.up_proj], share)
        self.down, _ = _merged_weight(mlp.down_proj)
        if weights is not None:  # quantised after the LoRA merge; each carries its bias
            self.qkv, self.qkv_bias = QuantLinear(self.qkv, self.qkv_bias, weights), None
            self.o, self.o_bias = QuantLinear(self.o, self.o_bias, weights), None
            self.gate_up, self.down = QuantLinear(self.gate_up, None, weights), QuantLinear(self.down, None, weights)


class StaticKV:
    """Sessions' KV caches in one static tensor and the forward that feeds them, batched."""

    def __init__(
        self,
        model: LiveModel,
        silence_id: int,
        max_sessions: int = 1,
        max_tokens: int | None = None,
        policy: MemoryPolicy | None = None,
        cuda_graphs: bool | None = None,
        span_bucket: int = 1024,
        max_step_tokens: int = 256,
        fused_kernels: bool | None = None,
        attention_programs: int | None = None,
        weights: str | None = None,
        frames_per_step: int = 1,
    ):
        llm = model.base_llm
        config = llm.config
        decoder = llm.get_decoder()
        if getattr(config, "sliding_window", None) and (getattr(config, "use_sliding_window", True) is not False):
            raise UserError("the fast engine does not do sliding-window attention; use the default engine")
        needed = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
        if not hasattr(decoder, "layers") or not all(hasattr(decoder.layers[0], name) for name in needed):
            raise UserError(
                f"the fast engine runs Llama-family decoders; {type(llm).__name__} is not one (use the default engine)"
            )
        if weights is not None and weights not in WEIGHT_FORMATS:
            raise UserError(f"unknown weight format {weights!r}; valid: {', '.join(WEIGHT_FORMATS)}")
        self.weights = weights
        """None: the model's dtype; "fp8" / "int8": float8 e4m3 / int8 linear weights with per-channel scales
        (`engine.quant`, weight-only), the LM head as it is. The model's own decoder linears are quantised in place
        (`quant.quantize_linears`): their float weights are freed and the model's forward uses the one-byte ones."""
        self.model = model
        self.silence_id = silence_id
        self.device = model.device
        self.dtype = model.dtype
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.hidden_size = config.hidden_size
        if fused_kernels is None:
            fused_kernels = kernels.fused_by_default(self.device)
        elif fused_kernels and not kernels.fused_available(self.device):
            raise ValueError("fused_kernels needs Triton and a CUDA device (or TRITON_INTERPRET=1)")
        act = ACT2FN[config.hidden_act]
        self.ops = (
            kernels.FusedOps(config.rms_norm_eps, act, config.hidden_act, attention_programs=attention_programs)
            if fused_kernels
            else kernels.TorchOps(config.rms_norm_eps, act)
        )
        self.scale = self.head_dim**-0.5
        self.max_sessions = max_sessions
        self.max_tokens = max_tokens or config.max_position_embeddings
        self.policy = policy
        self.max_step_tokens = max_step_tokens
        with torch.no_grad():
            self.layers = [_Layer(layer, weights) for layer in decoder.layers]
            self.embedding = llm.get_input_embeddings().weight.detach()
            self.final_norm = decoder.norm.weight.detach()
            self.lm_head, _ = _merged_weight(llm.get_output_embeddings())  # the released LoRA targets lm_head too
            # Room past the capacity for a step's padding, which lands beyond a session's length and is overwritten.
            self.allocated = self.max_tokens + max_step_tokens
            positions = torch.arange(self.allocated + 1, device=self.device)[None]
            probe = torch.zeros(1, device=self.device, dtype=torch.float32)
            cos, sin = decoder.rotary_emb(probe, positions)  # (1, L, D), with the rope's own scaling
            self.rope_scaling = float(getattr(decoder.rotary_emb, "attention_scaling", 1.0))
            self.cos_f32, self.sin_f32 = cos[0].float(), sin[0].float()
            # rotate_half(x) * sin == roll(x, D/2) * sin with the first half of sin negated: one kernel fewer.
            half = self.head_dim // 2
            sin_folded = torch.cat([-self.sin_f32[:, :half], self.sin_f32[:, half:]], dim=-1)
            # The fused kernel computes in float32 and reads float32 tables; the torch ops multiply in the model dtype.
            table_dtype = torch.float32 if self.ops.fused else self.dtype
            self.cos_table, self.sin_table = self.cos_f32.to(table_dtype), sin_folded.to(table_dtype)
            shape = (len(self.layers), max_sessions, self.num_kv_heads, self.allocated, self.head_dim)
            self.k_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
            self.v_cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.lengths = [0] * max_sessions
        self.sinks: list[int | None] = [None] * max_sessions
        self.evictions = [0] * max_sessions
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs needs the model on a CUDA device")
        frame_step = model.config.frame_num_tokens + 1
        # `frames_per_step`: the multi-frame mode's full block (N frames of frame_step tokens) gets a step length of
        # its own, not the next power of two (16 frames of 11 tokens would pad 176 to 256: 45 % more compute).
        blocks = (
            [frame_step * frames_per_step]
            if 1 < frames_per_step and frame_step * frames_per_step <= max_step_tokens
            else []
        )
        self.step_buckets = sorted(
            {1, 2, 4, 8, frame_step, *blocks, *[2**i for i in range(4, 16) if 2**i < max_step_tokens], max_step_tokens}
        )
        self.span_buckets = sorted({*range(span_bucket, self.allocated, span_bucket), self.allocated})
        self.batch_buckets = sorted({*[2**i for i in range(16) if 2**i < max_sessions], max_sessions})
        self._graphs: dict[tuple[int, int, int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._inputs: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._pool = None
        self.capture_seconds = 0.0
        """Wall-clock seconds spent in first runs and captures of new step shapes (CUDA graphs), warm-up included."""

    # ------------------------------------------------------------------ slots
    def reset_slot(self, slot: int) -> None:
        self.lengths[slot] = 0
        self.sinks[slot] = None
        self.evictions[slot] = 0

    def truncate(self, slot: int, num_tokens: int) -> None:
        self.lengths[slot] = min(self.lengths[slot], num_tokens)

    def _kept(self, slot: int) -> int:
        """Tokens at the start of a slot that the policy never drops (the attention sink)."""
        if self.policy is not None and self.policy.sink_tokens is not None:
            return self.policy.sink_tokens
        return self.sinks[slot] if self.sinks[slot] is not None else self.lengths[slot]

    def room_error(self, slot: int, incoming: int) -> str | None:
        """Why `incoming` more tokens cannot go into a slot (None: they fit, dropping old tokens if need be)."""
        if self.lengths[slot] + incoming <= self.max_tokens:
            return None
        if self.policy is None:
            return (
                f"the stream outgrew the cache ({self.max_tokens} tokens, about "
                f"{self.max_tokens // (self.model.config.frame_num_tokens + 1)} frames): give the engine a memory "
                "policy (narrate --cache-tokens N) or more room (max_tokens)"
            )
        if self._kept(slot) + incoming > self.max_tokens:
            return (
                f"a single input of {incoming} tokens does not fit the cache of {self.max_tokens} tokens beside "
                f"the {self._kept(slot)} kept at the start"
            )
        return None

    def _make_room(self, slot: int, incoming: int) -> None:
        """Drop old tokens after the sink (re-rotating the kept keys) so `incoming` more fit."""
        error = self.room_error(slot, incoming)
        if error is not None:
            raise ContextFullError(error)
        length = self.lengths[slot]
        if length + incoming <= self.max_tokens:
            return
        sink = self._kept(slot)
        drop = max(length + incoming - self.max_tokens, math.ceil((length - sink) * self.policy.evict_fraction))
        # Keys were rotated for their old positions p; they now sit at p - drop: rotate by -drop.
        cos = self.cos_f32[drop] / self.rope_scaling
        sin = -self.sin_f32[drop] / self.rope_scaling
        keep = slice(sink + drop, length)
        kept_k = self.k_cache[:, slot, :, keep].float()
        kept_k = (kept_k * cos + _rotate_half(kept_k) * sin).to(self.dtype)
        kept_v = self.v_cache[:, slot, :, keep].clone()
        self.k_cache[:, slot, :, sink : length - drop] = kept_k
        self.v_cache[:, slot, :, sink : length - drop] = kept_v
        self.lengths[slot] = length - drop
        self.evictions[slot] += drop

    # ------------------------------------------------------------------ the forward
    def _embed_inputs(self, ids: torch.Tensor, frames: torch.Tensor, is_frame: torch.Tensor) -> torch.Tensor:
        x = F.embedding(ids.clamp(max=self.embedding.shape[0] - 1), self.embedding)  # (B, T, H)
        return torch.where(is_frame[..., None], frames, x)

    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self.ops.add_rms_norm(x, None, weight)[1]

    @staticmethod
    def _unpack(packed: torch.Tensor, batch: int, steps: int, reads: int) -> tuple[torch.Tensor, ...]:
        """Views of a step's integer inputs, packed in one buffer so that one copy moves them to the device:
        ids, is_frame (0/1), positions (each (B, T)) and read_index (B, R)."""
        cells = batch * steps
        return (
            packed[:cells].view(batch, steps),
            packed[cells : 2 * cells].view(batch, steps),
            packed[2 * cells : 3 * cells].view(batch, steps),
            packed[3 * cells :].view(batch, reads),
        )

    def _forward(self, packed: torch.Tensor, frames: torch.Tensor, key: tuple[int, int, int, int]) -> torch.Tensor:
        """One step for rows 0..B-1 (B, T): returns (B, R, 2) = (argmax token, P(silence)) at `read_index`."""
        batch, steps, reads, span = key
        ids, is_frame, positions, read_index = self._unpack(packed, batch, steps, reads)
        is_frame = is_frame != 0
        ops = self.ops
        group, q_size = self.num_heads // self.num_kv_heads, self.num_heads * self.head_dim
        x = self._embed_inputs(ids, frames, is_frame)
        # Few queries over a long cache (a frame step): attention split over the key length (`ops.decode_attention`:
        # split-key kernels, or two matmuls and a softmax that cuBLAS spreads over the keys), as fused attention
        # kernels parallelise over queries and leave most of the GPU idle here. The split kernels take one (session,
        # kv head) a program, so a batch of frame steps suits them too; the matmuls see the whole batch at once.
        # Many queries (several frames a session): the fused attention kernel parallelises well, stores no scores.
        few_queries = (group * steps if ops.fused else batch * group * steps) <= 64
        visible = hidden = None
        if not (few_queries and ops.fused):  # the fused attention reads the causal mask off the positions
            visible = kernels.visible_keys(positions, group, span)
            hidden = ~visible
        rope = ops.rope_tables(self.cos_table, self.sin_table, positions)  # once for all layers
        delta = None  # the last sublayer's output, added to the residual stream by the next norm
        for index, layer in enumerate(self.layers):
            x, h = ops.add_rms_norm(x, delta, layer.norm_1)
            qkv = linear(h, layer.qkv, layer.qkv_bias)
            q = ops.rope_and_cache(
                qkv, rope, self.k_cache[index], self.v_cache[index], self.num_heads, self.num_kv_heads, self.scale
            )
            # q: (B, KVH, G * T, D), scaled; this step's k and v are in the cache
            keys, values = self.k_cache[index, :batch, :, :span], self.v_cache[index, :batch, :, :span]
            if few_queries:
                attended = ops.decode_attention(q, keys, values, hidden, positions)
            else:
                attended = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible, scale=1.0)
            attended = attended.view(batch, self.num_kv_heads, group, steps, self.head_dim).permute(0, 3, 1, 2, 4)
            x, h = ops.add_rms_norm(
                x, linear(attended.reshape(batch, steps, q_size), layer.o, layer.o_bias), layer.norm_2
            )
            delta = linear(ops.act_mul(linear(h, layer.gate_up)), layer.down)
        x = x + delta
        x = x.gather(1, read_index[..., None].expand(-1, -1, x.shape[-1]))  # (B, R, H)
        logits = F.linear(self._rms_norm(x, self.final_norm), self.lm_head).float()  # (B, R, V)
        silence = silence_probability(logits, self.silence_id)  # on the device, inside the CUDA graph
        return torch.stack([logits.argmax(dim=-1).float(), silence], dim=-1)

    def _buffers(self, key: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The device inputs of a step shape, (packed ints, frames (B, T, H)): kept per shape, so a CUDA graph reads
        them where they are written. Frame rows that a step does not set keep stale values, which `is_frame` masks."""
        if key not in self._inputs:
            batch, steps, reads, _ = key
            self._inputs[key] = (
                torch.zeros(_packed_size(batch, steps, reads), dtype=torch.long, device=self.device),
                torch.zeros(batch, steps, self.hidden_size, dtype=self.dtype, device=self.device),
            )
        return self._inputs[key]

    def _run(self, key: tuple[int, int, int, int], host: torch.Tensor) -> torch.Tensor:
        """Copy the packed host ints into the shape's buffer and run the step (replaying its CUDA graph)."""
        packed, frames = self._buffers(key)
        packed.copy_(host, non_blocking=True)  # the one host-to-device copy of the step
        if not self.cuda_graphs:
            return self._forward(packed, frames, key)
        if key in self._graphs:
            graph, output = self._graphs[key]
            graph.replay()
            return output
        # First time for this shape: a warm-up run (its result is the real one: the inputs are the real ones, and
        # the cache writes it makes are the ones the replay would make; kernels are built here, outside capture),
        # then capture.
        started = time.perf_counter()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            result = self._forward(packed, frames, key).clone()
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            output = self._forward(packed, frames, key)
        self._graphs[key] = (graph, output)
        torch.cuda.current_stream().synchronize()
        self.capture_seconds += time.perf_counter() - started
        return result

    def _host_ints(self, batch: int, steps: int, reads: int) -> torch.Tensor:
        """A zeroed host buffer for a step's packed ints (pinned on CUDA, so its copy is asynchronous)."""
        return torch.zeros(_packed_size(batch, steps, reads), dtype=torch.long, pin_memory=self.device.type == "cuda")

    @torch.inference_mode()
    def warmup(self, shapes: list[tuple[int, int, int]], max_tokens: int | None = None) -> int:
        """Capture the CUDA graphs of (batch, step tokens, reads) shapes at every cache span a stream of up to
        `max_tokens` meets, so that it never pauses for a capture. Run it before sessions start: it writes filler
        into the cache. Returns the number of graphs captured."""
        if not self.cuda_graphs:
            return 0
        before = len(self._graphs)
        for batch, steps, reads in shapes:
            batch, steps = _bucket(batch, self.batch_buckets), _bucket(steps, self.step_buckets)
            reads = _bucket(reads, READ_BUCKETS)
            last = _bucket(min(max_tokens or self.allocated, self.allocated), self.span_buckets)
            for span in [span for span in self.span_buckets if span <= last]:
                host = self._host_ints(batch, steps, reads)
                positions = self._unpack(host, batch, steps, reads)[2]
                positions[:] = max(0, span - steps) + torch.arange(steps)[None]
                self._run((batch, steps, reads, span), host)
        torch.cuda.synchronize()
        return len(self._graphs) - before

    # ------------------------------------------------------------------ feeding
    @torch.inference_mode()
    def feed(self, rows: dict[int, list[Feed]]) -> dict[int, list[FeedResult]]:
        """Feed each slot its feeds (in order, one forward for all); return each feed's result."""
        rows = {slot: feeds for slot, feeds in rows.items() if feeds}
        for slot, feeds in rows.items():
            total = sum(feed.length for feed in feeds)
            while total > self.max_step_tokens:  # a long prompt: feed its head alone first
                head, feeds = self._split(feeds)
                self._step({slot: head})
                total = sum(feed.length for feed in feeds)
            rows[slot] = feeds
        return self._step(rows)

    def _split(self, feeds: list[Feed]) -> tuple[list[Feed], list[Feed]]:
        """Split the leading ids of the first feed into a text-only head (its result is not needed)."""
        first = feeds[0]
        cut = min(len(first.ids) - (first.frame is None), self.max_step_tokens)  # leave the feed a token to read
        if cut <= 0:
            raise ValueError(
                f"a multi-frame feed longer than max_step_tokens ({self.max_step_tokens}); feed fewer frames at once"
            )
        return [Feed(first.ids[:cut])], [Feed(first.ids[cut:], first.frame), *feeds[1:]]

    def _step(self, rows: dict[int, list[Feed]]) -> dict[int, list[FeedResult]]:
        for slot, feeds in rows.items():
            self._make_room(slot, sum(feed.length for feed in feeds))
        batch = _bucket(max(rows) + 1, self.batch_buckets)
        steps = _bucket(max(sum(f.length for f in feeds) for feeds in rows.values()), self.step_buckets)
        # Reads rounded up to a power of two: a multi-frame step's frame count varies (a query or a response ends a
        # guess early), and each count would be another CUDA graph at every span. Extra reads repeat the last one.
        reads = _bucket(max(len(feeds) for feeds in rows.values()), READ_BUCKETS)
        starts = torch.tensor(self.lengths[:batch])  # rows without a feed pad along from their own length
        host = self._host_ints(batch, steps, reads)
        ids, is_frame, positions, read_index = self._unpack(host, batch, steps, reads)
        positions[:] = starts[:, None] + torch.arange(steps)[None]  # (B, T)
        span = _bucket(int(positions.max()) + 1, self.span_buckets)
        key = (batch, steps, reads, span)
        frames = self._buffers(key)[1]
        for slot, feeds in rows.items():
            offset = 0
            for index, feed in enumerate(feeds):
                ids[slot, offset : offset + len(feed.ids)] = torch.tensor(feed.ids, dtype=torch.long)
                offset += len(feed.ids)
                if feed.frame is not None:
                    size = feed.frame.shape[0]
                    frames[slot, offset : offset + size] = feed.frame  # straight into the step's device buffer
                    is_frame[slot, offset : offset + size] = 1
                    offset += size
                read_index[slot, index] = offset - 1
            read_index[slot, len(feeds) :] = offset - 1
        output = self._run(key, host).tolist()  # the one host read of the step
        results = {}
        for slot, feeds in rows.items():
            if self.sinks[slot] is None and any(feed.frame is not None for feed in feeds):
                self.sinks[slot] = self.lengths[slot] + sum(feed.length for feed in feeds)
            self.lengths[slot] += sum(feed.length for feed in feeds)
            results[slot] = [FeedResult(int(token), silence) for token, silence in output[slot][: len(feeds)]]
        return results


class SlotBackend:
    """One session's view of a `StaticKV`: the backend interface of `engine.backend` over a slot."""

    def __init__(self, static: StaticKV, slot: int):
        self.static = static
        self.slot = slot

    def reset(self) -> None:
        self.static.reset_slot(self.slot)

    @property
    def num_tokens(self) -> int:
        return self.static.lengths[self.slot]

    def feed(self, feeds: list[Feed]) -> list[FeedResult]:
        return self.static.feed({self.slot: feeds})[self.slot]

    def truncate(self, num_tokens: int) -> None:
        self.static.truncate(self.slot, num_tokens)
