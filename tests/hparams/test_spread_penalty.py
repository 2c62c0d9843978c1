"""The spread penalty: a prior pulling many decay coefficients towards their geometric mean (float64, exact)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_hypergrad import hypergradient
from lightning_hypergrad.hparams import FeatureDecay, WeightDecay
from lightning_hypergrad.hparams.weight_decay import log_spread
from lightning_hypergrad.solvers import Exact
from lightning_hypergrad.tasks import FeatureDecayLogisticRegression, WeightDecayClassifier
from tests.lightning_helpers import small_classifier

KAPPA = 0.7


def regression_data(generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    inputs = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    targets = inputs @ torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0], dtype=torch.float64) + 0.3 * torch.randn(
        40, generator=generator, dtype=torch.float64
    )
    return inputs[:25], targets[:25], inputs[25:], targets[25:]


def outer_objective(decay: FeatureDecay, data: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge regression solved exactly, w*(θ) = (2XᵀX/n + diag c)⁻¹ 2Xᵀy/n, and ``L_V(w*) + κ spread(θ)``."""
    train_x, train_y, val_x, val_y = data
    n = len(train_y)
    system = 2 * train_x.T @ train_x / n + torch.diag(decay.coefficients())
    optimum = torch.linalg.solve(system, 2 * train_x.T @ train_y / n)
    return optimum, ((val_x @ optimum - val_y) ** 2).mean() + KAPPA * decay.spread()


def test_the_penalised_hypergradient_equals_the_exact_derivative_of_the_penalised_objective() -> None:
    generator = torch.Generator().manual_seed(0)
    data = regression_data(generator)
    decay = FeatureDecay(5).double()
    with torch.no_grad():
        decay.log_coefficients.copy_(torch.tensor([-2.0, 0.5, 1.0, -1.0, 0.0], dtype=torch.float64))
    optimum, objective = outer_objective(decay, data)
    (exact,) = torch.autograd.grad(objective, decay.log_coefficients)  # through the exact solve: dF/dθ

    weights = optimum.detach().clone().requires_grad_(True)
    train_x, train_y, val_x, val_y = data
    train_loss = ((train_x @ weights - train_y) ** 2).mean() + decay(weights.unsqueeze(0))
    val_loss = ((val_x @ weights - val_y) ** 2).mean() + KAPPA * decay.spread()
    (implicit,) = hypergradient(train_loss, val_loss, [weights], [decay.log_coefficients], Exact())
    torch.testing.assert_close(implicit, exact, rtol=1e-10, atol=1e-12)

    theta = decay.log_coefficients.detach()
    direct = 2 * KAPPA * (theta - theta.mean()) / theta.numel()  # the prior's own gradient, by hand
    without = ((val_x @ weights - val_y) ** 2).mean()
    train_loss = ((train_x @ weights - train_y) ** 2).mean() + decay(weights.unsqueeze(0))
    (unpenalised,) = hypergradient(train_loss, without, [weights], [decay.log_coefficients], Exact())
    torch.testing.assert_close(implicit - unpenalised, direct, rtol=1e-10, atol=1e-13)


def test_the_spread_is_the_variance_of_the_log_coefficients_in_either_parametrisation() -> None:
    values = torch.tensor([-3.0, 0.0, 1.5], dtype=torch.float64)
    assert float(log_spread(values)) == pytest.approx(float(values.var(unbiased=False)), rel=1e-14)
    for parametrization in ("log", "softplus"):
        decay = WeightDecay([(2, 3), (3,)], "per_weight", parametrization, initial=0.01).double()
        with torch.no_grad():
            for raw in decay.raw:
                raw.normal_()
        logs = torch.cat([c.reshape(-1).log() for c in decay.coefficients()])
        torch.testing.assert_close(decay.spread(), logs.var(unbiased=False), rtol=1e-12, atol=0)
    assert float(WeightDecay([(2, 3)], "global").spread()) == 0.0
    assert float(FeatureDecay(4, "global").spread()) == 0.0


def test_the_tasks_add_kappa_times_the_spread_to_the_validation_loss_only() -> None:
    torch.manual_seed(0)
    batch = (torch.randn(8, 64), torch.randint(0, 10, (8,)))
    plain, penalised = (
        small_classifier(decay_granularity="per_weight"),
        small_classifier(decay_granularity="per_weight"),
    )
    penalised.decay_spread_penalty = KAPPA
    penalised.load_state_dict(plain.state_dict())
    with torch.no_grad():
        for raw in plain.weight_decay.raw:
            raw.normal_()
    penalised.load_state_dict(plain.state_dict())
    spread = plain.weight_decay.spread()
    assert float(spread) > 0
    assert torch.equal(penalised.training_loss(batch), plain.training_loss(batch))
    torch.testing.assert_close(penalised.validation_loss(batch), plain.validation_loss(batch) + KAPPA * spread)
    unpenalised = small_classifier(decay_granularity="per_weight", decay_spread_penalty=0.0)
    unpenalised.load_state_dict(plain.state_dict())
    expected = torch.nn.functional.cross_entropy(plain(batch[0]), batch[1])
    assert torch.equal(unpenalised.validation_loss(batch), expected)  # κ = 0: the plain cross-entropy, bit for bit
    logistic = FeatureDecayLogisticRegression(in_features=64, num_classes=10, decay_spread_penalty=KAPPA)
    with torch.no_grad():
        logistic.feature_decay.log_coefficients.normal_()
    expected = torch.nn.functional.cross_entropy(logistic(batch[0]), batch[1]) + KAPPA * logistic.feature_decay.spread()
    torch.testing.assert_close(logistic.validation_loss(batch), expected)


@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf, True, "0.1"])
@pytest.mark.parametrize("task", [WeightDecayClassifier, FeatureDecayLogisticRegression])
def test_a_bad_spread_penalty_is_refused_with_its_value(task, value) -> None:
    with pytest.raises(ValueError, match=r"decay_spread_penalty=.*must be a finite number >= 0"):
        task(decay_spread_penalty=value)
