"""The one contract check: hyperparameters() declared wrongly gets a clear error wherever it is first used."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback
from lightning_hypergrad.lightning.contract import check_bilevel_module, check_disjoint_from_optimizers
from lightning_hypergrad.solvers import Identity
from tests.fixtures.make_callback_checkpoint import loaders
from tests.lightning_helpers import make_trainer


class Decay(nn.Module):
    """A stranger's hyperparameter holder, registered as a child module after the network."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.log_rate = nn.Parameter(torch.full(shape, -2.0))


class StrangerModule(BilevelLightningModule):
    """Squared error with a decay whose ``hyperparameters()`` is declared in the ways users get wrong."""

    def __init__(self, declare: str = "list", freeze_first_layer: bool = False) -> None:
        super().__init__()
        self.first = nn.Linear(4, 8)
        self.second = nn.Linear(8, 2)
        self.decay = Decay(() if declare != "bare_vector" else (2,))
        if declare == "empty_parameter":
            self.empty = nn.Parameter(torch.zeros(0))
        self.declare = declare
        if freeze_first_layer:
            self.first.requires_grad_(False)

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        prediction = self.second(torch.tanh(self.first(inputs)))
        return (
            nn.functional.mse_loss(prediction, targets)
            + self.decay.log_rate.exp().sum() * self.second.weight.pow(2).sum()
        )

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self.second(torch.tanh(self.first(inputs))), targets)

    def hyperparameters(self) -> Any:
        if self.declare in ("bare_scalar", "bare_vector"):
            return self.decay.log_rate
        if self.declare == "twice":
            return [self.decay.log_rate, self.decay.log_rate]
        if self.declare == "empty_parameter":
            return [self.decay.log_rate, self.empty]
        return [self.decay.log_rate]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.weight_parameters(), lr=0.05)


BAD_DECLARATIONS = [
    ("bare_scalar", TypeError, r"hyperparameters\(\) returned a single tensor of shape \(\); return an iterable"),
    ("bare_vector", TypeError, r"hyperparameters\(\) returned a single tensor of shape \(2,\); return an iterable"),
    ("twice", ValueError, r"hyperparameters\(\)\[1\] \('decay.log_rate'\) is returned twice"),
    ("empty_parameter", ValueError, r"hyperparameters\(\)\[1\] has no elements \(shape \(0,\)\)"),
]


@pytest.mark.parametrize(("declare", "error", "message"), BAD_DECLARATIONS)
def test_bad_declarations_are_named_by_the_module_the_callback_and_the_cli_check(declare, error, message) -> None:
    module = StrangerModule(declare)
    with pytest.raises(error, match=message):
        module.named_hyperparameters()
    with pytest.raises(error, match=message):
        module.weight_parameters()  # what configure_optimizers calls first
    with pytest.raises(error, match=message):
        check_bilevel_module(module)  # what the callback and the CLI call


@pytest.mark.parametrize(("declare", "error", "message"), BAD_DECLARATIONS)
def test_bad_declarations_stop_a_fit_with_the_same_message(declare, error, message) -> None:
    trainer = make_trainer([HypergradientCallback(Identity(0.1), every_n_steps=2)], max_epochs=1)
    with pytest.raises(error, match=message):
        trainer.fit(StrangerModule(declare), *loaders())


def test_hyperparameters_in_child_modules_get_their_registered_names() -> None:
    module = StrangerModule()
    assert [name for name, _ in module.named_hyperparameters()] == ["decay.log_rate"]
    assert id(module.decay.log_rate) not in {id(p) for p in module.weight_parameters()}


def test_frozen_weights_are_left_out_and_the_fit_tunes_the_rest() -> None:
    module = StrangerModule(freeze_first_layer=True)
    frozen = module.first.weight.detach().clone()
    assert {id(p) for p in module.weight_parameters()} == {id(p) for p in module.second.parameters()}
    callback = HypergradientCallback(Identity(0.1), every_n_steps=2)
    make_trainer([callback], max_epochs=1).fit(module, *loaders())
    assert callback.taken == 2 and torch.equal(module.first.weight, frozen)
    assert module.decay.log_rate.item() != -2.0


def test_hyperparameters_shared_with_the_weights_optimizer_are_refused() -> None:
    module = StrangerModule()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"Hyperparameters \['decay.log_rate'\] are also in the weights' optimizer 0"):
        check_disjoint_from_optimizers(module.named_hyperparameters(), [optimizer])
