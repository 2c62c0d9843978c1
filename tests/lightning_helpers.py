"""Small modules and trainers for the Lightning tests (CPU, seconds each)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.tasks import WeightDecayClassifier


def make_trainer(callbacks: list[L.Callback] | None = None, **overrides: Any) -> L.Trainer:
    options: dict[str, Any] = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "deterministic": True,
    }
    options.update(overrides)
    return L.Trainer(callbacks=callbacks or [], **options)


def small_classifier(**overrides: Any) -> WeightDecayClassifier:
    options: dict[str, Any] = {
        "network": MLPClassifier(hidden=(32,)),
        "decay_granularity": "global",
        "initial_decay": 1e-2,
    }
    options.update(overrides)
    return WeightDecayClassifier(**options)


def digits(**overrides: Any) -> DigitsDataModule:
    return DigitsDataModule(**overrides)


class RecordingCallback(HypergradientCallback):
    """Keeps every hyperstep's batches and result, for assertions after fit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[dict[str, Any]] = []

    def compute_hypergradient(self, trainer, module, train_batch, validation_batch, **reused):
        state = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
        result = super().compute_hypergradient(trainer, module, train_batch, validation_batch, **reused)
        self.records.append(
            {"train_batch": train_batch, "validation_batch": validation_batch, "state": state, "result": result}
        )
        return result


class TinyBilevel(BilevelLightningModule):
    """Linear regression with a learnable log weight decay; knobs to break it in the ways users do."""

    def __init__(self, break_with: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.linear = nn.Linear(64, 10)
        self.log_decay = nn.Parameter(torch.tensor(-3.0))
        self.unused = nn.Parameter(torch.zeros(2))
        self.break_with = break_with
        if break_with == "automatic":
            self.automatic_optimization = True

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        loss = nn.functional.cross_entropy(self.linear(inputs), targets)
        return loss + 0.5 * self.log_decay.exp() * self.linear.weight.pow(2).sum()

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self.linear(inputs), targets)

    def hyperparameters(self) -> list[Any]:
        if self.break_with == "empty":
            return []
        if self.break_with == "not_leaf":
            return [self.log_decay * 2]
        if self.break_with == "no_grad":
            return [nn.Parameter(torch.tensor(1.0), requires_grad=False)]
        if self.break_with == "unregistered":
            return [nn.Parameter(torch.tensor(1.0))]
        if self.break_with == "idle":
            return [self.log_decay, self.unused]
        return [self.log_decay]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        parameters = list(self.parameters()) if self.break_with == "shared_optimizer" else self.weight_parameters()
        return torch.optim.SGD(parameters, lr=0.1)


class SavingCallback(HypergradientCallback):
    """Writes each process's first hyperstep and final state to ``directory`` (for multi-process tests)."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = directory

    def compute_hypergradient(self, trainer, module, train_batch, validation_batch):
        state = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
        result = super().compute_hypergradient(trainer, module, train_batch, validation_batch)
        if self.taken + self.skipped == 0:
            self._first = {
                "state": state,
                "train_batch": train_batch,
                "validation_batch": validation_batch,
                "hypergradients": result.hypergradients,
            }
        return result

    def hyperstep(self, trainer, module, batch):
        first = self.taken + self.skipped == 0
        applied = super().hyperstep(trainer, module, batch)
        if first:
            self._first["applied"] = self.last_applied_hypergradients
            torch.save(self._first, f"{self.directory}/first_rank{trainer.global_rank}.pt")
        return applied

    def on_train_end(self, trainer, pl_module):
        final = {"state": pl_module.state_dict(), "taken": self.taken, "skipped": self.skipped}
        torch.save(final, f"{self.directory}/final_rank{trainer.global_rank}.pt")
