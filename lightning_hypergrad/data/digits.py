"""scikit-learn's bundled handwritten digits (1,797 8×8 images): the embedded default data, no download."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.datasets import load_digits
from torch import Tensor


@dataclass(frozen=True)
class DigitsSplit:
    """Disjoint train / validation / test tensors: inputs are flattened 64-pixel images scaled to [0, 1]."""

    train_inputs: Tensor
    train_targets: Tensor
    val_inputs: Tensor
    val_targets: Tensor
    test_inputs: Tensor
    test_targets: Tensor


def split_digits(val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """Shuffle the digits with ``seed`` and cut them into train / validation / test by the given fractions."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"{name}={value!r}: must lie strictly between 0 and 1.")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction!r} leaves no training data; keep it below 1."
        )
    images, labels = load_digits(return_X_y=True)
    inputs = torch.as_tensor(images, dtype=torch.float32) / 16.0
    targets = torch.as_tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
    inputs, targets = inputs[order], targets[order]
    val_size, test_size = round(val_fraction * len(inputs)), round(test_fraction * len(inputs))
    train_end = len(inputs) - val_size - test_size
    val_end = train_end + val_size
    return DigitsSplit(
        inputs[:train_end],
        targets[:train_end],
        inputs[train_end:val_end],
        targets[train_end:val_end],
        inputs[val_end:],
        targets[val_end:],
    )
