"""A learnable loss weight for every class: the per-class counterpart of per-example weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_hypergrad.arguments import check_count


class ClassWeights(nn.Module):
    r"""Per-class loss weights ``c_k = exp(θ_k)``, θ being the hyperparameters (one per class).

    ``forward(targets, losses)`` returns the weighted average ``Σ_i c_{y_i} ℓ_i / Σ_i c_{y_i}`` over a batch, the
    reduction of ``torch.nn.functional.cross_entropy(weight=c)``: multiplying every weight by one constant changes
    nothing, so only the weights' ratios matter. Unlike :class:`ExampleWeights` the training data need no indices,
    and ten classes are ten hyperparameters however large the training set.

    Args:
        num_classes: number of classes, ``>= 2``.
        initial: every weight's starting value (a number ``> 0``), or one value per class.

    Attributes:
        log_weights: the hyperparameters θ = log c, shape ``(num_classes,)``.
    """

    def __init__(self, num_classes: int, initial: float | Sequence[float] = 1.0) -> None:
        super().__init__()
        check_count("ClassWeights", "num_classes", num_classes, minimum=2)
        values = torch.as_tensor(initial, dtype=torch.float32).flatten()
        if values.numel() == 1:
            values = values.expand(num_classes)
        if values.numel() != num_classes or not bool((values > 0).all() & values.isfinite().all()):
            raise ValueError(
                f"ClassWeights(initial={initial!r}): initial must be a finite number > 0 or {num_classes} of them."
            )
        self.log_weights = nn.Parameter(values.log().clone())

    def weights(self, targets: Tensor | None = None) -> Tensor:
        """The weights ``c`` (of the given targets' classes, or of every class)."""
        log_weights = self.log_weights if targets is None else self.log_weights[targets]
        return log_weights.exp()

    def forward(self, targets: Tensor, losses: Tensor) -> Tensor:
        """The weighted average of per-example ``losses`` (same shape as ``targets``), weighted by their classes."""
        if targets.shape != losses.shape:
            raise ValueError(f"targets {tuple(targets.shape)} and per-example losses {tuple(losses.shape)} must match.")
        weights = self.weights(targets).to(losses.dtype)
        return (weights * losses).sum() / weights.sum()


def inverse_frequency(counts: Tensor) -> Tensor:
    """Weights ``∝ 1 / n_k`` for class counts ``n_k`` (every count ``>= 1``), scaled to geometric mean 1."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or not bool((counts >= 1).all()):
        raise ValueError(f"inverse_frequency(counts={counts.tolist()}): every class needs at least one example.")
    log_weights = -counts.log()
    return (log_weights - log_weights.mean()).exp()
