"""Learnable L2 weight decay: one coefficient overall, per weight tensor, or per weight."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_hypergrad.arguments import check_choice, check_positive

Granularity = Literal["global", "per_tensor", "per_weight"]
Parametrization = Literal["log", "softplus"]


class WeightDecay(nn.Module):
    r"""The penalty ``½ Σ_i c_i w_i²`` with coefficients ``c = f(θ)`` learned as hyperparameters θ.

    ``f`` is ``exp`` (``parametrization="log"``) or ``softplus``; either keeps every coefficient positive while
    θ moves freely. ``½ c ‖w‖²`` adds ``c w`` to the gradient, the same meaning as ``weight_decay=c`` in
    ``torch.optim.SGD``.

    Args:
        shapes: the shapes of the weight tensors to penalise, in the order :meth:`forward` receives them.
        granularity: ``"global"`` (one θ), ``"per_tensor"`` (one per weight tensor) or ``"per_weight"`` (one per
            weight: as many hyperparameters as weights).
        parametrization: ``"log"`` or ``"softplus"``.
        initial: the starting coefficient ``c > 0`` of every weight.

    Attributes:
        raw: the hyperparameters θ, an ``nn.ParameterList``: one scalar (``"global"``), one scalar per weight
            tensor (``"per_tensor"``) or one tensor shaped like each weight tensor (``"per_weight"``).
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[int]],
        granularity: Granularity = "global",
        parametrization: Parametrization = "log",
        initial: float = 1e-4,
    ) -> None:
        super().__init__()
        check_choice("WeightDecay", "granularity", granularity, ("global", "per_tensor", "per_weight"))
        check_choice("WeightDecay", "parametrization", parametrization, ("log", "softplus"))
        if not shapes:
            raise ValueError("WeightDecay(shapes=[]): pass the shape of at least one weight tensor.")
        initial = check_positive("WeightDecay", "initial", initial)
        self.granularity = granularity
        self.parametrization = parametrization
        raw = math.log(initial) if parametrization == "log" else math.log(math.expm1(initial))
        if granularity == "global":
            raw_shapes: list[Sequence[int]] = [()]
        elif granularity == "per_tensor":
            raw_shapes = [()] * len(shapes)
        else:
            raw_shapes = list(shapes)
        self.raw = nn.ParameterList(nn.Parameter(torch.full(tuple(shape), raw)) for shape in raw_shapes)
        self.tensor_count = len(shapes)

    def coefficients(self) -> list[Tensor]:
        """The coefficients ``c``, one tensor per raw hyperparameter (broadcastable to the weights)."""
        transform = torch.exp if self.parametrization == "log" else nn.functional.softplus
        return [transform(raw) for raw in self.raw]

    def log_coefficients(self) -> Tensor:
        """``log c`` of every hyperparameter entry, flattened into one vector (one entry for ``"global"``)."""
        if self.parametrization == "log":
            return torch.cat([raw.reshape(-1) for raw in self.raw])
        return torch.cat([nn.functional.softplus(raw).log().reshape(-1) for raw in self.raw])

    def spread(self) -> Tensor:
        """The variance of ``log c`` over the entries (0 for one coefficient): :func:`~lightning_hypergrad.hparams.weight_decay.log_spread`."""
        return log_spread(self.log_coefficients())

    def forward(self, weights: Sequence[Tensor]) -> Tensor:
        """The penalty ``½ Σ c w²`` over ``weights`` (same order and shapes as given at construction)."""
        if len(weights) != self.tensor_count:
            raise ValueError(f"WeightDecay was built for {self.tensor_count} weight tensors, got {len(weights)}.")
        coefficients = self.coefficients()
        if self.granularity == "global":
            coefficients = coefficients * self.tensor_count
        return 0.5 * sum((c * w.pow(2)).sum() for c, w in zip(coefficients, weights))


def log_spread(log_coefficients: Tensor) -> Tensor:
    r"""``mean_i (log c_i − mean_j log c_j)²``, the spread of coefficients around their geometric mean.

    Added to the validation objective, ``κ`` times this is a Gaussian prior on ``log c`` centred on the shared
    mean: it pulls many decays (per feature, per weight) towards one value without fixing that value, so the
    hyperparameters fit less of the validation split's noise. It depends on λ only: a direct term of the
    hypergradient, ``2κ (log c_i − mean log c) / n`` per entry (times ``d log c_i / dθ_i``).
    """
    return (log_coefficients - log_coefficients.mean()).pow(2).mean()


def check_spread_penalty(owner: str, value: float) -> float:
    """``value`` as a float when it is a finite number ``>= 0``; else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}(decay_spread_penalty={value!r}): decay_spread_penalty must be a finite number >= 0.")
    return float(value)
