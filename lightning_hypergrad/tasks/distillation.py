"""Dataset distillation: learn a few synthetic training examples that a classifier trained on them generalises from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_hypergrad.hparams.distilled_data import DistilledData
from lightning_hypergrad.models.mlp import MLPClassifier
from lightning_hypergrad.tasks.classifier import ClassifierTask


class DistillationClassifier(ClassifierTask):
    """The weights train on ``per_class`` learnable examples per class only; the examples are the hyperparameters.

    ``L_T = CE(network(distilled inputs), their labels) + ½ μ ‖w‖²`` (the real training batch only counts steps)
    and ``L_V = CE(validation)``. The paper learns one image per class and trains a logistic regression on them;
    ``network`` defaults to that (``MLPClassifier(hidden=())``). The test accuracy at the end is that of a
    classifier which has seen nothing but the distilled examples.

    Args:
        network, num_classes: see :class:`ClassifierTask`.
        input_shape: shape of one input (``(64,)`` for digits).
        per_class: distilled examples per class.
        weight_decay: μ, which keeps the inner problem strongly convex for logistic regression.
        init_scale: standard deviation of the initial synthetic inputs.
        learning_rate: the default optimizer's learning rate (higher than :class:`ClassifierTask`'s: the weights
            see only a handful of examples).
        **kwargs: ``optimizer``, clipping and accumulation: see :class:`ClassifierTask`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        num_classes: int = 10,
        input_shape: Sequence[int] = (64,),
        per_class: int = 1,
        weight_decay: float = 1e-3,
        init_scale: float = 0.1,
        learning_rate: float = 1e-2,
        **kwargs: Any,
    ) -> None:
        if network is None:  # logistic regression on the flattened input
            network = MLPClassifier(in_features=math.prod(input_shape), hidden=(), num_classes=num_classes)
        super().__init__(network, num_classes, learning_rate=learning_rate, **kwargs)
        self.distilled = DistilledData(num_classes, input_shape, per_class, init_scale)
        self.weight_decay = weight_decay

    def training_loss(self, batch: Any) -> Tensor:
        """``L_T``: cross-entropy on the distilled examples plus ``½ μ ‖w‖²``; ``batch`` itself is not used."""
        inputs, labels = self.distilled()
        data_loss = nn.functional.cross_entropy(self(inputs), labels)
        return data_loss + 0.5 * self.weight_decay * sum(w.pow(2).sum() for w in self.network.parameters())

    def hyperparameters(self) -> list[nn.Parameter]:
        """The distilled inputs (``distilled.inputs``)."""
        return list(self.distilled.parameters())


def fresh_classifier_accuracy(
    images: Tensor, labels: Tensor, test_inputs: Tensor, test_targets: Tensor, weight_decay: float = 1e-3
) -> float:
    """How well a distilled set teaches: test accuracy of a new logistic regression trained on it alone.

    The regression (seeded, ridge ``½ weight_decay ‖w‖²`` as in :class:`DistillationClassifier`) is fitted to
    convergence on ``(images, labels)`` by full-batch L-BFGS, then scored on ``(test_inputs, test_targets)``.
    """
    torch.manual_seed(0)
    classifier = nn.Linear(images.shape[1], int(max(labels.max(), test_targets.max())) + 1)
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=500)  # a convex problem, solved outright

    def closure() -> Tensor:
        optimizer.zero_grad()
        penalty = 0.5 * weight_decay * sum(p.pow(2).sum() for p in classifier.parameters())
        loss = nn.functional.cross_entropy(classifier(images), labels) + penalty
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float((classifier(test_inputs).argmax(1) == test_targets).float().mean())
