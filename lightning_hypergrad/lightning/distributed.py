"""The collective operations a hyperstep needs across processes (torch.distributed, any backend)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.lightning import sharding


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


def any_process(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """For each flag, whether it is True on any process (one all-reduce); the flags themselves with one process."""
    if world_size() == 1:
        return list(flags)
    reduced = torch.tensor([float(flag) for flag in flags], device=device)
    dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
    return [bool(value > 0) for value in reduced.tolist()]


def broadcast_(tensors: Sequence[Tensor], source: int = 0) -> None:
    """Overwrite ``tensors`` in place with rank ``source``'s values; sharded ``DTensor`` s (each process holds its
    own shard) are left alone."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for tensor in tensors:
            if isinstance(tensor, DTensor):
                continue
            dist.broadcast(tensor.data, src=source)


def identical_across_processes(tensors: Sequence[Tensor]) -> bool:
    """Whether every process holds the same values: compares a float64 fingerprint with one all-reduce."""
    if world_size() == 1:
        return True
    tensors = [sharding.full(tensor) for tensor in tensors]
    weights = [torch.arange(1, t.numel() + 1, device=t.device, dtype=torch.float64) for t in tensors]
    fingerprint = sum((t.detach().reshape(-1).double() * w).sum() for t, w in zip(tensors, weights))
    extremes = torch.stack([fingerprint, -fingerprint])  # max and −min in one reduction
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    return bool(extremes[0] == -extremes[1])


def check_strategy(strategy: object) -> None:
    """Refuse strategies a hyperstep cannot run under (:func:`~lightning_hypergrad.lightning.sharding.refuse_unsupported_strategy`)."""
    sharding.refuse_unsupported_strategy(strategy)


def product_averaging(sync: str) -> Callable[[Sequence[Tensor]], Sequence[Tensor]] | None:
    """The ``average`` argument of :func:`~lightning_hypergrad.hypergradient` for a callback ``sync`` mode.

    ``"hvp"`` with several processes averages the validation gradient and every product (:func:`all_reduce_mean`);
    otherwise nothing is averaged inside the solve.
    """
    return all_reduce_mean if world_size() > 1 and sync == "hvp" else None


def agree_on_hypergradients(hypergradients: Sequence[Tensor], failed: bool, sync: str) -> tuple[Vector, bool]:
    """The hypergradient every process applies, and whether any process failed (then all skip together).

    Under ``sync="hypergradient"`` with several processes: the mean of the local hypergradients and the
    failure flags, in one all-reduce. Otherwise (one process, or ``"hvp"`` where every process solved the same
    averaged system) the local values.
    """
    parts = tuple(hypergradients)
    if world_size() == 1 or sync != "hypergradient":
        return parts, failed
    flag = torch.full((1,), float(failed), device=parts[0].device)
    *averaged, failures = all_reduce_mean([*parts, flag])
    return tuple(averaged), bool(failures.item() > 0)


def check_identical(tensors: Sequence[Tensor], when: str) -> None:
    """Raise if the processes hold different values of ``tensors`` (:func:`identical_across_processes`)."""
    if not identical_across_processes(tensors):
        raise RuntimeError(
            f"Hyperparameters differ across processes {when}; something outside the callback changed them on "
            "some processes only."
        )


def shard_loader(loader: Any, num_replicas: int, rank: int) -> Any:
    """The same DataLoader with a DistributedSampler, so each process draws its own share of every pass.

    Replaces only the sampler. The per-pass order keeps the original's character: shuffled (seeded by the
    original sampler's ``seed``, else 0, and reshuffled by ``set_epoch``) unless the original was sequential;
    a custom sampler's own order (weights, a generator) is not kept. Everything else is kept: dataset,
    batch size, ``drop_last``, ``collate_fn``, workers and their ``worker_init_fn``, ``generator`` (worker
    seeds), ``persistent_workers``, ``prefetch_factor``, ``pin_memory`` (and device), ``timeout`` and
    ``multiprocessing_context``. Padding gives every process the same number of batches, so means of
    per-process means equal the global mean for full batches. Not a DataLoader, or one process: unchanged.
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
    workers = {}
    if loader.num_workers > 0:
        workers = {
            "prefetch_factor": loader.prefetch_factor,
            "persistent_workers": loader.persistent_workers,
            "multiprocessing_context": loader.multiprocessing_context,
        }
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        pin_memory_device=loader.pin_memory_device,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        **workers,
    )
