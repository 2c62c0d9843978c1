"""The end-of-fit report for users of the Python API: RunReport added to their own Trainer."""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback
from lightning_hypergrad.report import RunReport
from lightning_hypergrad.solvers import Neumann
from tests.lightning_helpers import make_trainer


class LogDecayRegression(BilevelLightningModule):
    """A stranger's module: linear regression with one log-parametrised decay, reported as its coefficient."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.log_decay = nn.Parameter(torch.tensor(-2.0))

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        penalty = self.log_decay.exp() * self.linear.weight.pow(2).sum()
        return nn.functional.mse_loss(self.linear(inputs), targets) + penalty

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self.linear(inputs), targets)

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.log_decay]

    def hyperparameter_values(self) -> dict[str, Tensor]:
        return {"decay_coefficient": self.log_decay.detach().exp()}

    def report_metrics(self) -> dict[str, float]:
        return {"weight_norm": float(self.linear.weight.detach().norm())}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.weight_parameters(), lr=0.05)


def regression_loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, 4, generator=generator)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.1 * torch.randn(64, 1, generator=generator)
    return DataLoader(TensorDataset(inputs, targets), batch_size=16)


def test_a_python_api_fit_writes_the_report_in_meaningful_units(tmp_path) -> None:
    model = LogDecayRegression()
    callbacks = [HypergradientCallback(Neumann(iterations=5), every_n_steps=2), RunReport()]
    trainer = make_trainer(callbacks, max_epochs=3, logger=CSVLogger(tmp_path, name="run"))
    trainer.fit(model, regression_loader(0), regression_loader(1))

    directory = tmp_path / "run" / "version_0"
    summary = json.loads((directory / "summary.json").read_text())
    assert (directory / "validation_loss.png").is_file() and (directory / "hyperparameters.png").is_file()
    assert math.isclose(summary["validation_loss"], float(trainer.callback_metrics["validation_loss"]), rel_tol=1e-6)
    assert summary["hypersteps_taken"] == callbacks[0].taken > 0
    coefficient = summary["hyperparameter_values"]["decay_coefficient"]["value"]
    assert math.isclose(coefficient, math.exp(float(model.log_decay.detach())), rel_tol=1e-6)
    assert summary["hyperparameter_summary"]["log_decay"]["value"] == float(model.log_decay.detach())
    assert math.isclose(
        summary["report_metrics"]["weight_norm"], float(model.linear.weight.detach().norm()), rel_tol=1e-6
    )


def test_the_default_values_are_the_raw_hyperparameters_and_a_disabled_report_writes_nothing(tmp_path) -> None:
    class Raw(LogDecayRegression):
        hyperparameter_values = BilevelLightningModule.hyperparameter_values
        report_metrics = BilevelLightningModule.report_metrics

    model = Raw()
    assert set(model.hyperparameter_values()) == {"log_decay"} and model.report_metrics() == {}
    trainer = make_trainer([RunReport(enabled=False)], max_epochs=1, logger=CSVLogger(tmp_path, name="run"))
    trainer.fit(model, regression_loader(0), regression_loader(1))
    assert not list(tmp_path.rglob("summary.json"))
