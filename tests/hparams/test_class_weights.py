"""Per-class loss weights: torch's weighted cross-entropy exactly, blind to the weights' scale, validated input."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_hypergrad.hparams import ClassWeights
from lightning_hypergrad.hparams.class_weights import inverse_frequency


def test_the_weighted_average_is_torch_s_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(7, 3, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 2, 2, 0])
    class_weights = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    weights = ClassWeights(3, initial=[0.5, 2.0, 4.0]).double()
    with torch.no_grad():
        weights.log_weights.copy_(class_weights.log())  # the float64 values, not float32's rounding of them
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    expected = torch.nn.functional.cross_entropy(logits, targets, weight=class_weights)
    assert float(weights(targets, losses).detach()) == pytest.approx(float(expected), rel=1e-14)
    with torch.no_grad():
        weights.log_weights.add_(5.0)  # every weight × e⁵: the average does not move
    assert float(weights(targets, losses).detach()) == pytest.approx(float(expected), rel=1e-14)


def test_the_gradient_reaches_only_the_classes_in_the_batch() -> None:
    weights = ClassWeights(4).double()
    losses = torch.tensor([1.0, 3.0], dtype=torch.float64)
    weights(torch.tensor([0, 2]), losses).backward()
    gradient = weights.log_weights.grad
    # d/dθ_k of Σ c_y ℓ / Σ c_y at c = 1: (ℓ_k − mean ℓ) / n for the batch's classes.
    assert torch.allclose(gradient, torch.tensor([-0.5, 0.0, 0.5, 0.0], dtype=torch.float64), atol=1e-15)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_classes": 1}, r"num_classes must be an integer >= 2"),
        ({"num_classes": 3, "initial": 0.0}, r"initial must be a finite number > 0 or 3 of them"),
        ({"num_classes": 3, "initial": [1.0, 2.0]}, r"initial must be a finite number > 0 or 3 of them"),
        ({"num_classes": 2, "initial": [1.0, math.inf]}, r"initial must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_refused_with_the_value(arguments, message) -> None:
    with pytest.raises(ValueError, match=message):
        ClassWeights(**arguments)


def test_inverse_frequency_weights_have_geometric_mean_one() -> None:
    weights = inverse_frequency(torch.tensor([100, 25, 4]))
    expected = torch.tensor([1 / 100, 1 / 25, 1 / 4], dtype=torch.float64)
    expected = expected / expected.log().mean().exp()
    assert torch.allclose(weights, expected, rtol=1e-14)
    assert float(weights.log().mean()) == pytest.approx(0.0, abs=1e-14)
    with pytest.raises(ValueError, match="every class needs at least one example"):
        inverse_frequency(torch.tensor([3, 0]))


def test_initial_weights_are_stored_as_their_logarithms() -> None:
    weights = ClassWeights(3, initial=[0.5, 2.0, 4.0])
    assert torch.allclose(weights.weights(), torch.tensor([0.5, 2.0, 4.0]), rtol=1e-6)
    assert torch.allclose(weights.weights(torch.tensor([2, 2, 0])), torch.tensor([4.0, 4.0, 0.5]), rtol=1e-6)
