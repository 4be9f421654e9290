"""Sharing work between processes: the rank and world size torchrun (or SLURM through it) sets, one rank's share of
a list, the shares gathered back in order, and the local CUDA device of a rank."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def distributed_rank() -> tuple[int, int]:
    """This process's rank and the world size, as torchrun (or SLURM through it) sets them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def local_cuda_device() -> str:
    """This process's GPU on its machine: `cuda:LOCAL_RANK`."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Items of one rank: every world_size-th, so ranks get equal shares and each item exactly one rank."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return list(items[rank::world_size])


def gather(items: list[Any], world_size: int) -> list[Any]:
    """Every rank's `shard(...)` of a list, back in the list's order on every rank (all_gather_object)."""
    if world_size == 1:
        return items
    import torch.distributed as dist

    parts: list[list[Any]] = [[] for _ in range(world_size)]
    dist.all_gather_object(parts, items)
    out = []
    for i in range(max(len(part) for part in parts)):
        out += [part[i] for part in parts if i < len(part)]
    return out
