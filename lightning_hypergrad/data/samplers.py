"""A shuffling sampler whose order is a function of (seed, epoch), so resumed runs replay the same batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Yields a permutation of ``range(size)`` drawn from ``seed + epoch``.

    Lightning calls ``set_epoch`` at the start of every epoch; unlike a sampler drawing from the global RNG or
    a stateful generator, the order of epoch k does not depend on what ran before, so a run resumed from a
    checkpoint sees exactly the batches an uninterrupted run would.

    Args:
        size: number of examples in the dataset.
        seed: base seed; epoch k draws its permutation from ``seed + k``.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of pass ``epoch`` (Lightning and the hyperstep's iterators call this)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size
