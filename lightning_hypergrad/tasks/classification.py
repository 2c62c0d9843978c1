"""Classification with learnable weight decay: the task behind the digits configs."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_hypergrad.hparams.weight_decay import Granularity, Parametrization, WeightDecay
from lightning_hypergrad.models.mlp import MLPClassifier
from lightning_hypergrad.module import BilevelLightningModule


class WeightDecayClassifier(BilevelLightningModule):
    """Cross-entropy classification with ``½ Σ c w²`` weight decay whose coefficients are hyperparameters.

    ``L_T = CE(train) + ½ Σ_i c_i w_i²`` and ``L_V = CE(validation)``: the validation loss does not see the
    decay, so it moves only through the weights (the implicit term).

    Args:
        network: the classifier; ``None`` builds ``MLPClassifier()`` (64 → 128 → 10, for digits).
        num_classes: classes, for the accuracy metrics.
        decay_granularity: ``"global"``, ``"per_tensor"`` or ``"per_weight"`` (see :class:`WeightDecay`).
        decay_parametrization: ``"log"`` or ``"softplus"``.
        initial_decay: every coefficient's starting value.
        optimizer: the weights' optimizer as a callable ``params -> Optimizer``; ``None`` means
            ``Adam(lr=learning_rate)``.
        learning_rate: the default optimizer's learning rate.
        gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches: see :class:`BilevelLightningModule`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        num_classes: int = 10,
        decay_granularity: Granularity = "per_weight",
        decay_parametrization: Parametrization = "log",
        initial_decay: float = 1e-3,
        optimizer: OptimizerCallable | None = None,
        learning_rate: float = 1e-3,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__(gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches)
        self.network = MLPClassifier(num_classes=num_classes) if network is None else network
        self.weight_decay = WeightDecay(
            [weight.shape for weight in self.network.parameters()],
            decay_granularity,
            decay_parametrization,
            initial_decay,
        )
        self.optimizer_factory = optimizer
        self.learning_rate = learning_rate
        self.validation_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, inputs: Tensor) -> Tensor:
        return self.network(inputs)

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        data_loss = nn.functional.cross_entropy(self(inputs), targets)
        return data_loss + self.weight_decay(list(self.network.parameters()))

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self(inputs), targets)

    def hyperparameters(self) -> list[nn.Parameter]:
        return list(self.weight_decay.parameters())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is not None:
            return self.optimizer_factory(self.weight_parameters())
        return torch.optim.Adam(self.weight_parameters(), lr=self.learning_rate)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, targets = batch
        logits = self(inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        self.validation_accuracy(logits, targets)
        self.log("validation_loss", loss, prog_bar=True, sync_dist=True)
        self.log("validation_accuracy", self.validation_accuracy, prog_bar=True)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, targets = batch
        logits = self(inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        self.test_accuracy(logits, targets)
        self.log("test_loss", loss, sync_dist=True)
        self.log("test_accuracy", self.test_accuracy)
        return loss
