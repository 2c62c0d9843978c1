"""Concrete dropout, per-example weights, distilled data and learned augmentation: behaviour and exact hypergradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_hypergrad import hypergradient
from lightning_hypergrad.data import IndexedDataset
from lightning_hypergrad.hparams import (
    ConcreteDropout,
    DistilledData,
    ExampleWeights,
    FeatureDecay,
    LearnedAugmentation,
)
from lightning_hypergrad.solvers import Exact
from tests.helpers import relative_error

# --- ConcreteDropout ---------------------------------------------------------------------------------------------


def test_concrete_dropout_drops_at_its_rate_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    dropout = ConcreteDropout(initial_rate=0.3, temperature=0.01)
    inputs = torch.ones(200_000)
    with torch.no_grad():
        outputs = dropout(inputs)
    kept = outputs > 0.5 / 0.7
    assert abs(1 - float(kept.float().mean()) - 0.3) < 0.01
    assert abs(float(outputs.mean()) - 1.0) < 0.01  # inverted dropout keeps the expectation
    assert float(dropout.rate().detach()) == pytest.approx(0.3)


def test_concrete_dropout_is_the_identity_in_eval_mode_and_differentiable_in_training() -> None:
    dropout = ConcreteDropout(initial_rate=0.2, shape=(5,))
    inputs = torch.randn(4, 5)
    assert torch.equal(dropout.eval()(inputs), inputs)
    dropout.train()
    (gradient,) = torch.autograd.grad(dropout(inputs).pow(2).sum(), dropout.logit)
    assert gradient.shape == (5,) and bool((gradient != 0).all())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"initial_rate": 1.0}, r"ConcreteDropout\(initial_rate=1.0\): initial_rate must lie in \(0, 1\)"),
        ({"temperature": 0.0}, r"ConcreteDropout\(temperature=0.0\): temperature must be a finite number > 0"),
    ],
)
def test_concrete_dropout_rejects_bad_values(arguments, message) -> None:
    with pytest.raises(ValueError, match=message):
        ConcreteDropout(**arguments)


# --- ExampleWeights ----------------------------------------------------------------------------------------------


def weighted_ridge_problem():
    """Linear regression where training example 3 has a corrupted target."""
    generator = torch.Generator().manual_seed(0)
    options = {"dtype": torch.float64, "generator": generator}
    true_weights = torch.randn(3, **options)
    inputs, val_inputs = torch.randn(12, 3, **options), torch.randn(20, 3, **options)
    targets, val_targets = inputs @ true_weights, val_inputs @ true_weights
    targets[3] += 10.0
    return inputs, targets, val_inputs, val_targets


def test_example_weights_hypergradient_matches_the_closed_form_and_blames_the_corrupted_example() -> None:
    inputs, targets, val_inputs, val_targets = weighted_ridge_problem()
    weights_module = ExampleWeights(12).double()
    indices = torch.arange(12)

    def minimiser(coefficients: torch.Tensor) -> torch.Tensor:
        # argmin_w (1/n) Σ c_i (x_iᵀw − y_i)² + 0.01‖w‖²
        scaled = inputs * coefficients[:, None]
        return torch.linalg.solve(
            inputs.T @ scaled / 12 + 0.01 * torch.eye(3, dtype=torch.float64), scaled.T @ targets / 12
        )

    def val_loss(w: torch.Tensor) -> torch.Tensor:
        return (val_inputs @ w - val_targets).pow(2).mean()

    raw = weights_module.raw
    (expected,) = torch.autograd.grad(val_loss(minimiser(weights_module.weights())), raw)
    w = minimiser(weights_module.weights()).detach().requires_grad_(True)
    train_loss = weights_module(indices, (inputs @ w - targets).pow(2)) + 0.01 * w.pow(2).sum()
    (result,) = hypergradient(train_loss, val_loss(w), [w], [raw], Exact())
    assert relative_error(result, expected) <= 1e-8
    assert int(result.argmax()) == 3 and float(result[3]) > 0  # raising the corrupted example's weight hurts


def test_example_weights_start_at_one_and_refuse_bad_input() -> None:
    module = ExampleWeights(4, parametrization="log")
    losses = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(module(torch.tensor([0, 2, 3]), losses), losses.mean())
    with pytest.raises(ValueError, match=r"indices \(2,\) and per-example losses \(3,\) must match"):
        module(torch.tensor([0, 1]), losses)
    with pytest.raises(ValueError, match=r"ExampleWeights\(num_examples=0\): num_examples must be an integer >= 1"):
        ExampleWeights(0)


def test_indexed_dataset_yields_the_index_first() -> None:
    dataset = IndexedDataset(torch.utils.data.TensorDataset(torch.arange(5.0), torch.arange(5) * 10))
    assert len(dataset) == 5
    index, x, y = dataset[3]
    assert (index, float(x), int(y)) == (3, 3.0, 30)


# --- DistilledData -----------------------------------------------------------------------------------------------


def test_distilled_inputs_get_the_exact_hypergradient() -> None:
    torch.manual_seed(0)
    distilled = DistilledData(num_classes=3, input_shape=(4,), per_class=2, init_scale=1.0).double()
    inputs, labels = distilled()
    assert inputs.shape == (6, 4) and labels.tolist() == [0, 0, 1, 1, 2, 2]
    one_hot = nn.functional.one_hot(labels, 3).double()
    val_inputs = torch.randn(30, 4, dtype=torch.float64)
    val_targets = nn.functional.one_hot(torch.randint(3, (30,)), 3).double()

    def minimiser(x: torch.Tensor) -> torch.Tensor:  # ridge regression on the distilled set, one-hot targets
        return torch.linalg.solve(x.T @ x / 6 + 0.1 * torch.eye(4, dtype=torch.float64), x.T @ one_hot / 6)

    def val_loss(w: torch.Tensor) -> torch.Tensor:
        return (val_inputs @ w - val_targets).pow(2).mean()

    (expected,) = torch.autograd.grad(val_loss(minimiser(distilled.inputs)), distilled.inputs)
    w = minimiser(distilled.inputs).detach().requires_grad_(True)
    # its stationarity condition is the normal equation solved above
    train_loss = (distilled.inputs @ w - one_hot).pow(2).sum() / 12 + 0.05 * w.pow(2).sum()
    (result,) = hypergradient(train_loss, val_loss(w), [w], [distilled.inputs], Exact())
    assert result.shape == (6, 4)
    assert relative_error(result, expected) <= 1e-8


# --- LearnedAugmentation -----------------------------------------------------------------------------------------


def test_augmentation_starts_as_identity_sees_noise_and_is_trainable() -> None:
    network = nn.Conv2d(3 + 2, 3, kernel_size=1)
    nn.init.zeros_(network.weight)
    nn.init.zeros_(network.bias)
    augmentation = LearnedAugmentation(network, noise_channels=2)
    images = torch.randn(4, 3, 5, 5)
    assert torch.equal(augmentation(images), images)  # zero-initialised residual: no augmentation yet
    nn.init.normal_(network.weight)
    changed = augmentation(images)
    assert not torch.equal(changed, images) and not torch.equal(changed, augmentation(images))  # fresh noise
    gradients = torch.autograd.grad(augmentation(images).pow(2).sum(), list(augmentation.parameters()))
    assert all(bool((g != 0).any()) for g in gradients)
    assert torch.equal(augmentation.eval()(images), images)


def test_augmentation_must_keep_the_input_shape() -> None:
    augmentation = LearnedAugmentation(nn.Linear(4, 3), noise_channels=0)
    with pytest.raises(ValueError, match=r"The augmentation network returned \(2, 3\) for inputs \(2, 4\)"):
        augmentation(torch.ones(2, 4))


def test_feature_decay_holds_a_scalar_or_one_log_coefficient_per_feature() -> None:
    assert FeatureDecay(3, "global").log_coefficients.shape == ()
    assert FeatureDecay(3, "per_feature").log_coefficients.shape == (3,)
