"""The shared part of the classification tasks: network, optimizer, validation and test metrics."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_hypergrad.lightning.module import BilevelLightningModule
from lightning_hypergrad.models.mlp import MLPClassifier


class ClassifierTask(BilevelLightningModule):
    """Cross-entropy classification; subclasses define ``training_loss`` and ``hyperparameters``.

    ``validation_loss`` is the cross-entropy on a validation batch; validation and test log loss and accuracy.
    For reports, :meth:`~lightning_hypergrad.BilevelLightningModule.hyperparameter_values` gives the hyperparameters in their meaningful units (subclasses
    override it: decay coefficients, dropout rates, example weights) and :meth:`~lightning_hypergrad.BilevelLightningModule.report_metrics` any extra
    task-specific numbers.

    Args:
        network: the classifier; ``None`` builds ``MLPClassifier()`` (64 → 128 → 10, for digits).
        num_classes: classes, for the accuracy metrics.
        optimizer: the weights' optimizer as a callable ``params -> Optimizer``; ``None`` means
            ``Adam(lr=learning_rate)``.
        learning_rate: the default optimizer's learning rate.
        **kwargs: ``gradient_clip_val``, ``gradient_clip_algorithm``, ``accumulate_grad_batches``: see
            :class:`~lightning_hypergrad.BilevelLightningModule`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        num_classes: int = 10,
        optimizer: OptimizerCallable | None = None,
        learning_rate: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.network = MLPClassifier(num_classes=num_classes) if network is None else network
        self.optimizer_factory = optimizer
        self.learning_rate = learning_rate
        self.validation_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, inputs: Tensor) -> Tensor:
        """Class scores of ``network`` for a batch of inputs."""
        return self.network(inputs)

    def validation_loss(self, batch: Any) -> Tensor:
        """``L_V``: mean cross-entropy of an ``(inputs, targets)`` batch; no hyperparameter enters it directly."""
        inputs, targets = batch
        return nn.functional.cross_entropy(self(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is not None:
            return self.optimizer_factory(self.weight_parameters())
        return torch.optim.Adam(self.weight_parameters(), lr=self.learning_rate)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "validation", self.validation_accuracy)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test", self.test_accuracy)

    def _evaluate(self, batch: Any, split: str, accuracy: MulticlassAccuracy) -> Tensor:
        inputs, targets = batch
        logits = self(inputs)
        loss = nn.functional.cross_entropy(logits, targets)
        accuracy(logits, targets)
        self.log(f"{split}_loss", loss, prog_bar=split == "validation", sync_dist=True)
        self.log(f"{split}_accuracy", accuracy, prog_bar=split == "validation")
        return loss
