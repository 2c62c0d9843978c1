"""Learnable L2 decay on the input features of a linear model: one coefficient overall or one per feature."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_hypergrad.arguments import check_choice, check_count, check_positive
from lightning_hypergrad.hparams.weight_decay import log_spread

FeatureGranularity = Literal["global", "per_feature"]


class FeatureDecay(nn.Module):
    r"""The penalty ``½ Σ_j c_j ‖W_{:, j}‖²`` on a weight matrix ``W`` (outputs × features), ``c = exp(θ)``.

    Column ``j`` of ``W`` holds every output's weight on feature ``j``, so ``c_j`` says how strongly feature
    ``j`` is shrunk: a large ``c_j`` switches the feature off, ``c_j → 0`` leaves it free. This is the
    automatic-relevance-determination prior of a linear model; with one coefficient (``"global"``) it is
    ordinary L2 regularisation. The hyperparameters are the log-coefficients θ.

    Args:
        num_features: columns of ``W``, ``>= 1``.
        granularity: ``"global"`` (one θ) or ``"per_feature"`` (one per column).
        initial: every coefficient's starting value ``> 0``.

    Attributes:
        log_coefficients: the hyperparameters θ, shape ``(num_features,)``, or ``()`` (a scalar) for ``"global"``.
    """

    def __init__(self, num_features: int, granularity: FeatureGranularity = "per_feature", initial: float = 1e-2):
        super().__init__()
        self.num_features = check_count("FeatureDecay", "num_features", num_features, minimum=1)
        self.granularity = check_choice("FeatureDecay", "granularity", granularity, ("global", "per_feature"))
        initial = check_positive("FeatureDecay", "initial", initial)
        shape = () if granularity == "global" else (num_features,)
        self.log_coefficients = nn.Parameter(torch.full(shape, math.log(initial)))

    def coefficients(self) -> Tensor:
        """The coefficients ``c``: a scalar, or one per feature."""
        return self.log_coefficients.exp()

    def spread(self) -> Tensor:
        """The variance of ``log c`` over the features (0 for ``"global"``): :func:`~lightning_hypergrad.hparams.weight_decay.log_spread`."""
        return log_spread(self.log_coefficients.reshape(-1))

    def forward(self, weight: Tensor) -> Tensor:
        """The penalty ``½ Σ_j c_j Σ_k W_kj²`` for ``weight`` of shape ``(outputs, num_features)``."""
        if weight.dim() != 2 or weight.shape[1] != self.num_features:
            raise ValueError(
                f"FeatureDecay was built for weight matrices with {self.num_features} columns (features); got "
                f"shape {tuple(weight.shape)}."
            )
        return 0.5 * (self.coefficients() * weight.pow(2).sum(0)).sum()
