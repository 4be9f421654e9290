"""Frames to frame embeddings off the LLM's critical path: the vision tower and connector on a CUDA stream of their
own, replayed as a CUDA graph per batch size, so frame i+1 is encoded while the LLM decides on frame i.

Eager, a SigLIP-L forward is ~10 ms of Python launching kernels for ~2 ms of GPU work: at 100+ frames/s the host
would be the bottleneck, hence the graphs. On a CPU (or with `cuda_graphs=False`) it is a plain call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import numpy as np
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
            embeds, done = self._encode_here(pixels)
        embeds.record_stream(consumer)
        pixels.record_stream(self.stream)
        return embeds, done

    @torch.inference_mode()
    def encode_host(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """uint8 RGB frames (N, R, R, 3) in host memory (page-locked: see `FrameStager`): the copy to the GPU and the
        normalising run on the runner's stream too, so the calling thread only launches them."""
        if self.stream is None:
            return self._forward(self.model.normalise_frames(frames)), None
        consumer = torch.cuda.current_stream()
        with torch.cuda.stream(self.stream):
            pixels = self.model.normalise_frames(frames.to(self.model.device, non_blocking=frames.is_pinned()))
            embeds, done = self._encode_here(pixels)
        embeds.record_stream(consumer)
        return embeds, done

    def _encode_here(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event]:
        """Encode on the current stream (the runner's), and an event recorded after it."""
        if self.cuda_graphs:
            embeds = self._replay(pixels).clone()  # a copy: the next replay overwrites the graph's output
        else:
            embeds = self._forward(pixels)
        done = torch.cuda.Event()
        done.record(self.stream)
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


class FrameStager:
    """A file's decoded frames stacked into a small ring of host buffers by a thread of its own, a batch ahead of the
    thread that steps the LLM. Stacking 16 frames at 384 px and copying them from pageable memory take the stepping
    thread ~4 ms a batch, time the GPU would otherwise sit idle; from page-locked buffers (`pin`, on a GPU) the copy is
    one asynchronous launch (`FrameEncoderRunner.encode_host`).

    The buffers are allocated here, on the calling thread: the staging thread makes no CUDA call at all, since one
    (an allocation, an event query) could break a CUDA graph capture under way on the stepping thread. Iterating
    gives (frames, their stacked images, the buffer holding them), the images None for frames of another shape than
    `frame_shape` (the caller encodes those itself); the caller hands each buffer back with `release` once the GPU
    has read it. An error of the source (a corrupt file) is raised by the iteration, as the source would have."""

    _END = object()

    def __init__(
        self, batches: Iterable[list], batch_size: int, frame_shape: tuple[int, ...], pin: bool, slots: int = 3
    ):
        self._free: queue.Queue = queue.Queue()
        for _ in range(slots):
            self._free.put(torch.empty((batch_size, *frame_shape), dtype=torch.uint8, pin_memory=pin))
        self._ready: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._stage, args=(iter(batches),), name="frame-stager", daemon=True)
        self._thread.start()

    def _stage(self, batches: Iterator[list]) -> None:
        try:
            for batch in batches:
                slot = self._free.get()
                if slot is None or self._closed:
                    return
                images = [frame.image for frame in batch]
                if len(images) <= slot.shape[0] and all(image.shape == tuple(slot.shape[1:]) for image in images):
                    host = slot[: len(images)]
                    np.stack(images, out=host.numpy())
                    self._ready.put((batch, host, slot))
                else:
                    self._free.put(slot)
                    self._ready.put((batch, None, None))
            self._ready.put(self._END)
        except BaseException as error:  # the source's error, raised again on the stepping thread
            self._ready.put(error)

    def __iter__(self):
        while True:
            item = self._ready.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def release(self, slot: torch.Tensor | None) -> None:
        """Hand a buffer back for the next batch, once the GPU has read it."""
        if slot is not None:
            self._free.put(slot)

    def close(self) -> None:
        """Stop staging (the thread ends at its next batch; the source is the caller's to close)."""
        if not self._closed:
            self._closed = True
            self._free.put(None)
