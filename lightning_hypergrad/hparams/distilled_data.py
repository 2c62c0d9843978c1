"""A small learnable training set: dataset distillation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_hypergrad.arguments import check_count


class DistilledData(nn.Module):
    """``per_class`` learnable inputs for each of ``num_classes`` classes; the inputs are the hyperparameters.

    Training on ``forward()``'s (inputs, labels) instead of real data and tuning the inputs on the validation
    loss distils the dataset into a few synthetic examples (Lorraine et al. 2020 learn one image per class).

    Args:
        num_classes: classes, ``>= 1``.
        input_shape: shape of one input, e.g. ``(64,)`` for flattened digits or ``(1, 28, 28)``.
        per_class: synthetic examples per class, ``>= 1``.
        init_scale: standard deviation of the random initial inputs (seeded by the global RNG).

    Attributes:
        inputs: the hyperparameters, ``(num_classes * per_class, *input_shape)``; the fixed ``labels`` buffer
            gives each row's class (``per_class`` rows per class, in class order).
    """

    def __init__(
        self, num_classes: int, input_shape: Sequence[int], per_class: int = 1, init_scale: float = 0.1
    ) -> None:
        super().__init__()
        check_count("DistilledData", "num_classes", num_classes, minimum=1)
        check_count("DistilledData", "per_class", per_class, minimum=1)
        self.inputs = nn.Parameter(init_scale * torch.randn(num_classes * per_class, *input_shape))
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(per_class))

    def forward(self) -> tuple[Tensor, Tensor]:
        """The distilled batch: ``(inputs, labels)``."""
        return self.inputs, self.labels
