"""WeightDecay: the penalty's value, its gradient's meaning, and the count of hyperparameters."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_hypergrad.hparams import WeightDecay

SHAPES = [(3, 4), (4,), (2, 3)]


@pytest.mark.parametrize(("granularity", "count"), [("global", 1), ("per_tensor", 3), ("per_weight", 12 + 4 + 6)])
@pytest.mark.parametrize("parametrization", ["log", "softplus"])
def test_penalty_is_half_sum_of_coefficient_times_squared_weight(granularity, count, parametrization) -> None:
    decay = WeightDecay(SHAPES, granularity, parametrization, initial=0.03).double()
    assert sum(p.numel() for p in decay.parameters()) == count
    for coefficient in decay.coefficients():
        torch.testing.assert_close(coefficient, torch.full_like(coefficient, 0.03))
    with torch.no_grad():  # give every hyperparameter its own value
        for index, raw in enumerate(decay.raw):
            raw.add_(torch.linspace(-1, 1, raw.numel(), dtype=torch.float64).reshape(raw.shape) + index)
    weights = [torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in SHAPES]
    coefficients = decay.coefficients() * (3 if granularity == "global" else 1)
    expected = 0.5 * sum((c * w**2).sum() for c, w in zip(coefficients, weights))
    torch.testing.assert_close(decay(weights), expected, rtol=1e-14, atol=0)
    # Same meaning as SGD's weight_decay=c: the penalty adds c·w to the gradient.
    gradients = torch.autograd.grad(decay(weights), weights)
    for gradient, c, w in zip(gradients, coefficients, weights):
        torch.testing.assert_close(gradient, (c * w).detach().expand_as(w), rtol=1e-14, atol=0)


def test_softplus_parametrisation_starts_at_the_given_coefficient() -> None:
    decay = WeightDecay([(2,)], "global", "softplus", initial=1e-3)
    assert float(decay.raw[0].detach()) == pytest.approx(math.log(math.expm1(1e-3)))
    assert float(decay.coefficients()[0].detach()) == pytest.approx(1e-3, rel=1e-6)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"granularity": "per_layer"},
            r"WeightDecay\(granularity='per_layer'\): allowed values are 'global', 'per_tensor' and 'per_weight'",
        ),
        (
            {"parametrization": "sigmoid"},
            r"WeightDecay\(parametrization='sigmoid'\): allowed values are 'log' and 'softplus'",
        ),
        ({"initial": 0.0}, r"WeightDecay\(initial=0.0\): initial must be a finite number > 0"),
        ({"shapes": []}, r"WeightDecay\(shapes=\[\]\): pass the shape of at least one weight tensor"),
    ],
)
def test_bad_arguments_are_refused(arguments, message) -> None:
    options = {"shapes": SHAPES, **arguments}
    with pytest.raises(ValueError, match=message):
        WeightDecay(**options)


def test_the_number_of_weight_tensors_must_match() -> None:
    with pytest.raises(ValueError, match="WeightDecay was built for 3 weight tensors, got 2"):
        WeightDecay(SHAPES)([torch.ones(3, 4), torch.ones(4)])
