"""Classification with a learned loss weight per class, for class-imbalanced training data."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_hypergrad.arguments import check_choice
from lightning_hypergrad.hparams.class_weights import ClassWeights, inverse_frequency
from lightning_hypergrad.tasks.classifier import ClassifierTask


class ClassWeightedClassifier(ClassifierTask):
    r"""``L_T = Σ_i c_{y_i} ℓ_i / Σ_i c_{y_i}``: cross-entropy weighted by a learned weight ``c_k`` per class.

    On long-tailed training data the rare classes' examples get larger weights when the (balanced) validation loss
    asks for them. ``L_V`` is the plain validation cross-entropy. After every hyperstep the log-weights are
    recentred to mean 0 (the weights' geometric mean stays 1; the loss ignores their scale anyway) and clamped to
    ``[1/max_weight, max_weight]``. Validation and test also log ``*_balanced_accuracy``, the mean of the
    per-class recalls, the number that matters when the test classes are balanced and the training ones are not.

    Args:
        network, num_classes: see :class:`ClassifierTask`.
        initial: ``"uniform"`` (every weight 1) or ``"inverse_frequency"`` (``c_k ∝ 1/n_k`` from the datamodule's
            ``train_class_counts``, the usual fixed remedy; without the callback it stays there).
        max_weight: the largest weight (and the reciprocal of the smallest), ``> 1``.
        **kwargs: ``optimizer``, ``learning_rate``, clipping and accumulation: see :class:`ClassifierTask`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        num_classes: int = 10,
        initial: Literal["uniform", "inverse_frequency"] = "uniform",
        max_weight: float = 100.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, num_classes, **kwargs)
        self.initial = check_choice(type(self).__name__, "initial", initial, ("uniform", "inverse_frequency"))
        if isinstance(max_weight, bool) or not isinstance(max_weight, (int, float)) or not 1 < max_weight < math.inf:
            raise ValueError(
                f"{type(self).__name__}(max_weight={max_weight!r}): max_weight must be a finite number > 1."
            )
        self.max_log_weight = math.log(max_weight)
        self.class_weights = ClassWeights(num_classes)
        self.validation_balanced_accuracy = MulticlassAccuracy(num_classes=num_classes, average="macro")
        self.test_balanced_accuracy = MulticlassAccuracy(num_classes=num_classes, average="macro")

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.initial != "inverse_frequency":
            return
        counts = getattr(getattr(self.trainer, "datamodule", None), "train_class_counts", None)
        if counts is None:
            raise ValueError(
                f"{type(self).__name__}(initial='inverse_frequency') needs a datamodule with train_class_counts "
                "(examples per class in the training split), as DigitsDataModule has; set initial='uniform' or add it."
            )
        with torch.no_grad():
            self.class_weights.log_weights.copy_(
                inverse_frequency(counts).log().clamp(-self.max_log_weight, self.max_log_weight)
            )

    def training_loss(self, batch: Any) -> Tensor:
        """The class-weighted average of the batch's per-example cross-entropies."""
        inputs, targets = batch
        losses = nn.functional.cross_entropy(self(inputs), targets, reduction="none")
        return self.class_weights(targets, losses)

    def hyperparameters(self) -> list[nn.Parameter]:
        """The log class weights (one per class)."""
        return [self.class_weights.log_weights]

    def project_hyperparameters(self) -> None:
        """Recentre the log-weights to mean 0 (geometric mean 1) and clamp them to ±log(max_weight)."""
        log_weights = self.class_weights.log_weights
        log_weights.sub_(log_weights.mean()).clamp_(-self.max_log_weight, self.max_log_weight)

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """The class weights ``c`` (geometric mean 1), one per class."""
        return {"class_weights": self.class_weights.weights().detach().clone()}

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        self._balanced(batch, "validation", self.validation_balanced_accuracy)
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        self._balanced(batch, "test", self.test_balanced_accuracy)
        return super().test_step(batch, batch_idx)

    def _balanced(self, batch: Any, split: str, accuracy: MulticlassAccuracy) -> None:
        inputs, targets = batch
        accuracy(self(inputs), targets)
        self.log(f"{split}_balanced_accuracy", accuracy)
