"""The seed's per-frame loop, kept plain as the oracle for tests and the baseline for benchmarks.

It follows the released demo's inference loop: `last_ids` holds what must be fed before the next frame, the KV cache
grows by concatenation (transformers' dynamic cache), the decision is read from the frame's last position, and a
response is generated greedily token by token. All frames and queries are given up front. It shares only the text
pieces with `StreamSession`, so the two agreeing token for token checks the session's state handling.
"""

from __future__ import annotations

import torch

from ..core.model import LiveModel
from ..core.policy import DEFAULT_MAX_NEW_TOKENS, DEFAULT_THRESHOLD, DecisionPolicy
from ..core.text import StreamTemplate


@torch.inference_mode()
def reference_stream(
    model: LiveModel,
    template: StreamTemplate,
    frame_embeds: torch.Tensor,
    frame_times: list[float],
    queries: list[tuple[float, str]] = (),
    threshold: float = DEFAULT_THRESHOLD,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> list[tuple[float, str, list[int]]]:
    """Frames (N, T, H) at `frame_times`, queries (time, text); returns turns (video_time, role, token ids)."""
    policy = DecisionPolicy(threshold, max_new_tokens)  # the rule the engines follow, and its checks
    device = model.device
    ids = template.ids

    def tensor(token_ids: list[int]) -> torch.Tensor:
        return torch.tensor([token_ids], dtype=torch.long, device=device)

    def forward(inputs_embeds: torch.Tensor, past):
        out = model.forward_embeds(inputs_embeds, past_key_values=past, use_cache=True)
        return out.logits[:, -1], out.kv_cache

    def generate(prompt: torch.Tensor, past):
        logits, past = forward(model.embed_tokens(prompt), past)
        output_ids = []
        for _ in range(policy.max_new_tokens):
            next_id = logits.argmax(dim=-1)
            if next_id.item() == ids.eos:
                break
            output_ids.append(next_id.item())
            if len(output_ids) == policy.max_new_tokens:
                break
            logits, past = forward(model.embed_tokens(next_id[:, None]), past)
        return output_ids, past

    queries = sorted(queries)
    system = template.system_text()
    past = None
    last_ids = tensor(template.encode(system + "\n["))  # fed before the first frame
    mode = "start"  # "start" | "stream" (a frame was last) | "turn" (a response was last; its eos is owed)
    turns: list[tuple[float, str, list[int]]] = []

    def answer(video_time: float, query: str):
        nonlocal past, last_ids, mode
        if mode == "start":
            prompt = template.encode(system + f"\nUser: {query}\nAssistant:")
        elif mode == "stream":
            prompt = template.encode(f"]\nUser: {query}\nAssistant:")
        else:
            prompt = [ids.eos] + template.encode(f"\nUser: {query}\nAssistant:")
        turns.append((video_time, "user", template.encode(query)))
        output_ids, past = generate(tensor(prompt), past)
        turns.append((video_time, "assistant", output_ids))
        last_ids = tensor([ids.eos] + template.encode("\n["))
        mode = "turn"

    last_time = None
    for video_time, frame in zip(frame_times, frame_embeds):
        while queries and queries[0][0] < video_time:
            query_time, query = queries.pop(0)
            answer(max(query_time, last_time if last_time is not None else query_time), query)
        inputs_embeds = torch.cat([model.embed_tokens(last_ids), frame[None].to(model.dtype)], dim=1)
        logits, past = forward(inputs_embeds, past)
        mode, last_time = "stream", video_time
        if queries and queries[0][0] <= video_time:
            while queries and queries[0][0] <= video_time:
                query_time, query = queries.pop(0)
                answer(max(query_time, video_time), query)
            continue
        if not policy.responds_to_logits(logits, ids.silence)[0]:
            last_ids = tensor([ids.interval] if ids.interval is not None else [])
            continue
        output_ids, past = generate(tensor(template.encode("]\nAssistant:")), past)
        turns.append((video_time, "assistant", output_ids))
        last_ids = tensor([ids.eos] + template.encode("\n["))
        mode = "turn"
    while queries:
        query_time, query = queries.pop(0)
        answer(max(query_time, last_time) if last_time is not None else query_time, query)
    return turns
