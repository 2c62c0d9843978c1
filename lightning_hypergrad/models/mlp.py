"""A multilayer perceptron for flat inputs (digits, flattened MNIST)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLPClassifier(nn.Sequential):
    """Linear → [BatchNorm] → ReLU → [Dropout] blocks, then a linear classifier head.

    Args:
        in_features: input size (64 for scikit-learn's 8×8 digits).
        hidden: widths of the hidden layers.
        num_classes: output size.
        batch_norm: add ``BatchNorm1d`` after each hidden linear layer.
        dropout: dropout probability after each hidden layer (0 disables it).
    """

    def __init__(
        self,
        in_features: int = 64,
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        if not 0 <= dropout < 1:
            raise ValueError(f"MLPClassifier(dropout={dropout!r}): dropout must lie in [0, 1).")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        """Class scores ``(batch, num_classes)`` for inputs of any shape ``(batch, ...)``, flattened first."""
        return super().forward(inputs.flatten(1))
