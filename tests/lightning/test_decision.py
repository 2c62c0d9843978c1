"""The skip decision's inputs and outputs, end to end: what a skipped hyperstep says and records."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback, HypergradientWarning
from lightning_hypergrad.lightning import decision
from lightning_hypergrad.solvers import ConjugateGradient, Neumann, SolveStatus
from tests.lightning.test_reliability import fit_faulty


def test_a_hyperstep_without_a_solve_is_not_run_rather_than_diverged() -> None:
    named = [("log_decay", nn.Parameter(torch.tensor(-1.0)))]
    result = decision.unsolved_result([torch.ones(3)], named, math.nan, "the training loss is nan")
    assert result.solve.status is SolveStatus.NOT_RUN and SolveStatus.NOT_RUN.value == "not_run"
    assert not result.solve.converged and result.solve.hvp_count == 0 and result.solve.iterations == 0


def test_a_nan_loss_hyperstep_is_recorded_and_logged_as_no_solve() -> None:
    _, callback, (_, logger, _) = fit_faulty("validation_loss", ConjugateGradient(iterations=5))
    statuses = [entry["solver_status"] for entry in callback.history]
    assert statuses[1] == "not_run"  # the second hyperstep's validation loss was NaN
    assert all(status in ("tolerance_reached", "iterations_exhausted") for i, status in enumerate(statuses) if i != 1)
    hyperstep_logs = [entry for entry in logger.metrics if "hyper/taken" in entry]
    assert [entry["hyper/skipped"] for entry in hyperstep_logs] == [0.0, 1.0, 1.0, 1.0]
    # A solve that never ran measured nothing: no residual, iterations or convergence are logged for it.
    assert not any(key.startswith("hyper/solver_") or key == "hyper/hvp_count" for key in hyperstep_logs[1])
    assert all("hyper/solver_residual" in entry for index, entry in enumerate(hyperstep_logs) if index != 1)


class Quadratic(BilevelLightningModule):
    """L_T = ½ Σ a_i w_i² + ½ e^λ ‖w‖² with a = (0.25, 0.5, 1, 1), so H = diag(a + e^λ) and λ_max ≈ 1.05;
    L_V = ½ ‖w − 1‖². Trained by SGD at ``learning_rate``; the batches are placeholders."""

    def __init__(self, learning_rate: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((4,), 2.0))
        self.log_decay = nn.Parameter(torch.tensor(-3.0))
        self.register_buffer("curvature", torch.tensor([0.25, 0.5, 1.0, 1.0]))
        self.learning_rate = learning_rate

    def training_loss(self, batch: Any) -> Tensor:
        return 0.5 * (self.curvature * self.w**2).sum() + 0.5 * self.log_decay.exp() * self.w.pow(2).sum()

    def validation_loss(self, batch: Any) -> Tensor:
        return 0.5 * (self.w - 1).pow(2).sum()

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.log_decay]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.weight_parameters(), lr=self.learning_rate)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=1)


def test_a_series_diverging_at_the_learning_rate_alpha_says_to_lower_the_learning_rate() -> None:
    # alpha_from_learning_rate=True: the series runs with α = 3, the weights' SGD rate, above 2/λ_max ≈ 1.9, and
    # diverges (|1 − αλ_max| ≈ 2.15 per term). The remedy must be about that α, not about Lanczos, which never ran.
    L.seed_everything(0, verbose=False)
    callback = HypergradientCallback(Neumann(iterations=10), every_n_steps=2, alpha_from_learning_rate=True)
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    with pytest.warns(HypergradientWarning, match="Skipped the hyperstep at step 2") as caught:
        trainer.fit(Quadratic(learning_rate=3.0))
    (message,) = [str(warning.message) for warning in caught if "Skipped the hyperstep" in str(warning.message)]
    assert "lanczos_steps" not in message and "Lanczos" not in message  # 9c45d48 said "raise lanczos_steps"
    assert "diverged" in message and "alpha=3" in message
    assert "alpha_from_learning_rate=True" in message and "lower the weights' learning rate" in message
    assert callback.skipped == 1 and callback.history[0]["alpha"] == 3.0
