"""Dropout with a learnable rate, made differentiable by the concrete (relaxed Bernoulli) distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_hypergrad.arguments import check_positive


class ConcreteDropout(nn.Module):
    r"""Inverted dropout whose drop probability p is a hyperparameter.

    In training mode each unit gets a relaxed Bernoulli(p) sample

    .. math::

        z = \sigma\big((\operatorname{logit} p + \log u - \log(1-u)) / \tau\big), \qquad u \sim U(0, 1),

    which is 1 (dropped) with probability p as the temperature τ → 0 and is differentiable in p for τ > 0; the
    output is ``x · (1 − z) / (1 − p)``. The hyperparameter is ``logit p`` (unconstrained). In eval mode the
    module is the identity. Because the training loss's graph is built once per hypergradient, every
    Hessian-vector product sees the same noise u.

    Args:
        initial_rate: starting p, in ``(0, 1)``.
        temperature: τ ``> 0``; smaller is closer to hard dropout and noisier in its gradient (0.1 is common).
        shape: shape of the rate tensor, broadcast against the input: ``()`` for one rate, ``(features,)`` for
            one per unit.

    Attributes:
        logit: the hyperparameter ``logit p``, shaped ``shape``.

    References:
        Maddison, Mnih, Teh. The Concrete Distribution. ICLR 2017. Gal, Hron, Kendall. Concrete Dropout. NeurIPS 2017.
    """

    def __init__(self, initial_rate: float = 0.1, temperature: float = 0.1, shape: Sequence[int] = ()) -> None:
        super().__init__()
        if isinstance(initial_rate, bool) or not isinstance(initial_rate, (int, float)) or not 0 < initial_rate < 1:
            raise ValueError(f"ConcreteDropout(initial_rate={initial_rate!r}): initial_rate must lie in (0, 1).")
        self.temperature = check_positive("ConcreteDropout", "temperature", temperature)
        self.logit = nn.Parameter(torch.full(tuple(shape), math.log(initial_rate / (1 - initial_rate))))

    def rate(self) -> Tensor:
        """The drop probability p = σ(logit)."""
        return torch.sigmoid(self.logit)

    def forward(self, inputs: Tensor) -> Tensor:
        """Drop and rescale ``inputs`` with relaxed Bernoulli noise in training mode; the identity in eval mode."""
        if not self.training:
            return inputs
        eps = torch.finfo(inputs.dtype).eps
        uniform = torch.rand_like(inputs).clamp(eps, 1 - eps)
        drop = torch.sigmoid((self.logit + uniform.log() - (-uniform).log1p()) / self.temperature)
        return inputs * (1 - drop) / (1 - self.rate())
