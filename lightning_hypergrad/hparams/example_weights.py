"""A learnable weight for every training example's loss."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_hypergrad.arguments import check_choice, check_count, check_positive


class ExampleWeights(nn.Module):
    r"""Per-example loss weights ``c_i = softplus(θ_i)`` (or ``exp(θ_i)``), θ being the hyperparameters.

    ``forward(indices, losses)`` returns the weighted mean ``(1/n) Σ_i c_{idx_i} ℓ_i`` over a batch, so a weight
    below 1 quiets an example (a mislabelled one, say) and above 1 amplifies it. The training data must yield
    each example's index (see :class:`lightning_hypergrad.data.IndexedDataset`).

    Args:
        num_examples: size of the training set, ``>= 1``.
        initial: every weight's starting value ``> 0``.
        parametrization: ``"softplus"`` or ``"log"`` (exp).

    Attributes:
        raw: the hyperparameters θ, one per training example, shape ``(num_examples,)``.
    """

    def __init__(
        self, num_examples: int, initial: float = 1.0, parametrization: Literal["softplus", "log"] = "softplus"
    ) -> None:
        super().__init__()
        check_count("ExampleWeights", "num_examples", num_examples, minimum=1)
        initial = check_positive("ExampleWeights", "initial", initial)
        check_choice("ExampleWeights", "parametrization", parametrization, ("softplus", "log"))
        self.parametrization = parametrization
        raw = math.log(initial) if parametrization == "log" else math.log(math.expm1(initial))
        self.raw = nn.Parameter(torch.full((num_examples,), raw))

    def weights(self, indices: Tensor | None = None) -> Tensor:
        """The weights ``c`` (of the given examples, or all)."""
        raw = self.raw if indices is None else self.raw[indices]
        return raw.exp() if self.parametrization == "log" else nn.functional.softplus(raw)

    def forward(self, indices: Tensor, losses: Tensor) -> Tensor:
        """The weighted mean ``(1/n) Σ_i c_{idx_i} ℓ_i`` of per-example ``losses`` (same shape as ``indices``)."""
        if indices.shape != losses.shape:
            raise ValueError(f"indices {tuple(indices.shape)} and per-example losses {tuple(losses.shape)} must match.")
        return (self.weights(indices) * losses).mean()
