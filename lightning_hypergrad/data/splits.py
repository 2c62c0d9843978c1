"""Fixed, seeded train / validation / test cuts of an in-memory dataset, shared by the bundled datamodules."""

from __future__ import annotations

import torch
from torch import Tensor


def shuffle_and_cut(
    inputs: Tensor, targets: Tensor, val_fraction: float, test_fraction: float, seed: int, owner: str = ""
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Shuffle ``(inputs, targets)`` with ``seed`` and cut them into train, validation and test pairs.

    The validation and test splits get ``round(fraction · n)`` examples each; training gets the rest. Errors name
    ``owner`` (the calling function) with the offending fraction.
    """
    prefix = f"{owner}: " if owner else ""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            where = f"{owner}({name}={value!r})" if owner else f"{name}={value!r}"
            raise ValueError(f"{where}: must lie strictly between 0 and 1.")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"{prefix}val_fraction + test_fraction = {val_fraction + test_fraction!r} leaves no training data; "
            "keep it below 1."
        )
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
    inputs, targets = inputs[order], targets[order]
    val_size, test_size = round(val_fraction * len(inputs)), round(test_fraction * len(inputs))
    train_end = len(inputs) - val_size - test_size
    val_end = train_end + val_size
    return (
        (inputs[:train_end], targets[:train_end]),
        (inputs[train_end:val_end], targets[train_end:val_end]),
        (inputs[val_end:], targets[val_end:]),
    )
