"""A dataset wrapper that also yields each example's index (for per-example hyperparameters)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset


class IndexedDataset(Dataset):
    """Yields ``(index, *example)`` for each example of ``dataset`` (``example`` a tuple, e.g. ``(x, y)``).

    Args:
        dataset: any map-style dataset; a non-tuple example is yielded as ``(index, example)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        example = self.dataset[index]
        return (index, *example) if isinstance(example, tuple) else (index, example)
