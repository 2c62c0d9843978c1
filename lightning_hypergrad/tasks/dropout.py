"""Classification with learnable dropout rates (one per hidden unit), tuned through the concrete relaxation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lightning_hypergrad.hparams.dropout import ConcreteDropout
from lightning_hypergrad.tasks.classifier import ClassifierTask


class DropoutClassifier(ClassifierTask):
    """An MLP with a :class:`~lightning_hypergrad.hparams.ConcreteDropout` after every hidden layer; the dropout logits are the hyperparameters.

    ``L_T = CE(train)`` with dropout active (rates enter only here) and ``L_V = CE(validation)`` in eval mode,
    so the rates move through the implicit term alone. One rate per hidden unit.

    Args:
        in_features, hidden, num_classes: the MLP's sizes.
        initial_rate: every unit's starting drop probability.
        temperature: the concrete relaxation's temperature.

        **kwargs: ``optimizer``, ``learning_rate``, clipping and accumulation: see :class:`ClassifierTask`.
    """

    def __init__(
        self,
        in_features: int = 64,
        hidden: Sequence[int] = (256, 256),
        num_classes: int = 10,
        initial_rate: float = 0.1,
        temperature: float = 0.1,
        **kwargs: Any,
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), ConcreteDropout(initial_rate, temperature, shape=(size,))]
            width = size
        layers.append(nn.Linear(width, num_classes))
        super().__init__(nn.Sequential(*layers), num_classes, **kwargs)

    def dropouts(self) -> list[ConcreteDropout]:
        """The network's ConcreteDropout layers, one after each hidden layer, in order."""
        return [module for module in self.network.modules() if isinstance(module, ConcreteDropout)]

    def training_loss(self, batch: Any) -> Tensor:
        """``L_T``: mean cross-entropy of an ``(inputs, targets)`` batch, with the learnable dropout active."""
        inputs, targets = batch
        return nn.functional.cross_entropy(self(inputs), targets)

    def hyperparameters(self) -> list[nn.Parameter]:
        """Every dropout layer's ``logit`` (the logit of its per-unit rates)."""
        return [dropout.logit for dropout in self.dropouts()]

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """The drop probabilities, ``dropout_rate/<layer>``, one per hidden unit."""
        names = {module: name for name, module in self.network.named_modules()}
        return {f"dropout_rate/{names[dropout]}": dropout.rate().detach().clone() for dropout in self.dropouts()}
