"""The collective operations a hyperstep needs across processes (torch.distributed, any backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from lightning_hypergrad import vectors
from lightning_hypergrad.vectors import Vector


def world_size() -> int:
    """Processes in the default group; 1 when torch.distributed is not in use."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_mean(vector: Sequence[Tensor]) -> Vector:
    """The mean over processes of a vector of tensors, in one all-reduce of one flat buffer."""
    parts = tuple(vector)
    if world_size() == 1 or not parts:
        return parts
    dtype = vectors.working_dtype(parts[0].dtype)
    for part in parts[1:]:
        dtype = torch.promote_types(dtype, part.dtype)
    flat = torch.cat([part.reshape(-1).to(dtype) for part in parts])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    return tuple(piece.to(part.dtype) for piece, part in zip(vectors.unflatten(flat, parts), parts))


def broadcast_(tensors: Sequence[Tensor], source: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``source``'s values."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=source)


def identical_across_processes(tensors: Sequence[Tensor]) -> bool:
    """Whether every process holds the same values: compares a float64 fingerprint with one all-reduce."""
    if world_size() == 1:
        return True
    weights = [torch.arange(1, t.numel() + 1, device=t.device, dtype=torch.float64) for t in tensors]
    fingerprint = sum((t.detach().reshape(-1).double() * w).sum() for t, w in zip(tensors, weights))
    extremes = torch.stack([fingerprint, -fingerprint])  # max and −min in one reduction
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    return bool(extremes[0] == -extremes[1])


def shard_loader(loader: Any, num_replicas: int, rank: int) -> Any:
    """The same DataLoader with a DistributedSampler, so each process draws its own share of every pass.

    The per-pass order keeps the original's character: shuffled (seeded by the original sampler's ``seed``,
    reshuffled by ``set_epoch``) unless the original was sequential. Padding gives every process the same
    number of batches, so means of per-process means equal the global mean for full batches.
    """
    if num_replicas == 1 or not isinstance(loader, DataLoader):
        return loader
    if loader.batch_size is None:
        raise ValueError(
            "The hyperstep's dataloader uses a custom batch_sampler, which cannot be sharded across processes "
            "automatically; give it batch_size and sampler instead, or shard it yourself in hyper_dataloader()."
        )
    shuffle = not isinstance(loader.sampler, SequentialSampler)
    sampler = DistributedSampler(
        loader.dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=getattr(loader.sampler, "seed", 0)
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
    )
