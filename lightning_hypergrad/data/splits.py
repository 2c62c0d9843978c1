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


def split_off(
    inputs: Tensor, targets: Tensor, fraction: float, owner: str
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Cut the last ``round(fraction · n)`` examples (at least one, leaving at least one) off ``(inputs, targets)``.

    The held-out part of a validation split: data the hypersteps never see (see
    :class:`~lightning_hypergrad.lightning.held_out.HeldOutGuard`). ``fraction`` must lie in ``(0, 1)``.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(
            f"{owner}(held_out_fraction={fraction!r}): held_out_fraction must lie strictly between 0 and 1."
        )
    if len(inputs) < 2:
        raise ValueError(
            f"{owner}(held_out_fraction={fraction!r}): the validation split has {len(inputs)} example(s); two are needed."
        )
    size = min(max(1, round(fraction * len(inputs))), len(inputs) - 1)
    cut = len(inputs) - size
    return (inputs[:cut], targets[:cut]), (inputs[cut:], targets[cut:])
