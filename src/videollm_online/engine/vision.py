"""Frames to frame embeddings off the LLM's critical path: the vision tower and connector on a CUDA stream of their
own, replayed as a CUDA graph per batch size, so frame i+1 is encoded while the LLM decides on frame i.

Eager, a SigLIP-L forward is ~10 ms of Python launching kernels for ~2 ms of GPU work: at 100+ frames/s the host
would be the bottleneck, hence the graphs. On a CPU (or with `cuda_graphs=False`) it is a plain call.
"""

from __future__ import annotations

import torch

from ..core.model import LiveModel


class FrameEncoderRunner:
    """`encode(pixels)` -> (embeddings (N, T, H), an event the consumer's stream waits on, or None)."""

    def __init__(self, model: LiveModel, cuda_graphs: bool | None = None):
        self.model = model
        on_cuda = model.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        self.stream = torch.cuda.Stream(device=model.device) if on_cuda else None
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.embed_frames(self.model.encode_frames(pixels))

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Normalised pixels (N, 3, R, R) on the model's device."""
        if self.stream is None:
            return self._forward(pixels), None
        consumer = torch.cuda.current_stream()
        self.stream.wait_stream(consumer)  # the pixels were written on the consumer's stream
        with torch.cuda.stream(self.stream):
            if self.cuda_graphs:
                embeds = self._replay(pixels).clone()  # a copy: the next replay overwrites the graph's output
            else:
                embeds = self._forward(pixels)
            done = torch.cuda.Event()
            done.record(self.stream)
        embeds.record_stream(consumer)
        pixels.record_stream(self.stream)
        return embeds, done

    def _replay(self, pixels: torch.Tensor) -> torch.Tensor:
        key = tuple(pixels.shape)
        if key not in self._graphs:
            buffer = pixels.clone()
            self._forward(buffer)  # warm-up on this (side) stream, as capture requires
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                output = self._forward(buffer)
            self._graphs[key] = (graph, buffer, output)
        graph, buffer, output = self._graphs[key]
        buffer.copy_(pixels)
        graph.replay()
        return output
