"""A stranger's regression module: a small MLP on scikit-learn's bundled diabetes data, one decay per input feature.

Written as a user would write it against the public API (``BilevelLightningModule``, ``FeatureDecay``,
``HypergradientCallback``, ``HeldOutGuard``), for ``versus_optuna.py`` task (d). Inputs and target are
standardised with the training split's statistics, so a mean squared error of 1 is predicting the mean.
Splits per seed: 50% train, 20% validation (the hypersteps' data; with ``held_out=True`` its second half is kept
from them for the guard), 30% test.
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import torch
from sklearn.datasets import load_diabetes
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HeldOutGuard, HypergradientCallback
from lightning_hypergrad.hparams import FeatureDecay
from lightning_hypergrad.solvers import Neumann

EPOCHS = 150
FEATURES = 10


class DiabetesData(L.LightningDataModule):
    """The standardised diabetes splits for one seed; ``held_out`` halves the validation split for a guard."""

    def __init__(self, seed: int, held_out: bool = False) -> None:
        super().__init__()
        inputs, targets = (torch.tensor(array, dtype=torch.float32) for array in load_diabetes(return_X_y=True))
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
        train, val, test = order[:221], order[221:309], order[309:]
        mean, std = inputs[train].mean(0), inputs[train].std(0)
        target_mean, target_std = targets[train].mean(), targets[train].std()
        inputs, targets = (inputs - mean) / std, ((targets - target_mean) / target_std).unsqueeze(1)
        tuned, kept = (val[: len(val) // 2], val[len(val) // 2 :]) if held_out else (val, val[:0])
        self.sets = {
            name: TensorDataset(inputs[rows], targets[rows])
            for name, rows in (("train", train), ("val", tuned), ("held_out", kept), ("test", test))
        }
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.sets["train"], batch_size=32, shuffle=True, generator=generator)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["val"], batch_size=len(self.sets["val"]))

    def held_out_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["held_out"], batch_size=max(1, len(self.sets["held_out"])))

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.sets["test"], batch_size=len(self.sets["test"]))


class FeatureDecayRegressor(BilevelLightningModule):
    """10 → 64 → 64 → 1 tanh MLP; ``L_T = MSE + ½ Σ_j c_j ‖W₁[:, j]‖²``, ``L_V = MSE (+ κ spread(log c))``."""

    def __init__(self, initial_decay: float = 1e-2, granularity: str = "per_feature", spread_penalty: float = 0.0):
        super().__init__()
        self.network = nn.Sequential(nn.Linear(FEATURES, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
        self.feature_decay = FeatureDecay(FEATURES, granularity, initial_decay)
        self.spread_penalty = spread_penalty

    def forward(self, inputs: Tensor) -> Tensor:
        return self.network(inputs)

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self(inputs), targets) + self.feature_decay(self.network[0].weight)

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        loss = nn.functional.mse_loss(self(inputs), targets)
        return loss + self.spread_penalty * self.feature_decay.spread() if self.spread_penalty else loss

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.feature_decay.log_coefficients]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.weight_parameters(), lr=3e-3)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_mse", nn.functional.mse_loss(self(batch[0]), batch[1]))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_mse", nn.functional.mse_loss(self(batch[0]), batch[1]))


def fit(
    seed: int, tuned: bool, guard: bool = False, spread_penalty: float = 0.0, initial_decay: float = 1e-2
) -> dict[str, float]:
    """One fit; the validation and test MSE of its final weights (after the guard's restore) and the seconds."""
    L.seed_everything(seed, verbose=False)
    granularity = "per_feature" if tuned else "global"
    model = FeatureDecayRegressor(initial_decay, granularity, spread_penalty)
    callbacks: list[L.Callback] = []
    if tuned:
        hyper = torch.optim.Adam
        callbacks.append(
            HypergradientCallback(
                Neumann(20, "auto", lanczos_every=10), lambda p: hyper(p, lr=0.05), every_n_steps=5, warmup_steps=50
            )
        )
        if guard:
            callbacks.append(HeldOutGuard(every_n_hypersteps=5))
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        check_val_every_n_epoch=EPOCHS,
    )
    data = DiabetesData(seed, held_out=guard)
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    (validation,) = trainer.validate(model, DiabetesData(seed).val_dataloader(), verbose=False)
    (test,) = trainer.test(model, data.test_dataloader(), verbose=False)
    decays = model.feature_decay.coefficients().detach()
    return {
        "val": float(validation["val_mse"]),
        "test": float(test["test_mse"]),
        "seconds": seconds,
        "decay_min": float(decays.min()),
        "decay_max": float(decays.max()),
        "log_spread": math.sqrt(float(model.feature_decay.spread())),
    }
