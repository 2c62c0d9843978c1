"""Classification with a learned data augmentation: a small network, tuned on the validation loss, perturbs inputs."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_hypergrad.hparams.augmentation import LearnedAugmentation
from lightning_hypergrad.tasks.classifier import ClassifierTask


class AugmentationClassifier(ClassifierTask):
    """``L_T = CE(network(augment(x)))`` on training batches; the augmentation network's weights are hyperparameters.

    ``augment(x) = x + a(x ⊕ noise)`` with ``a`` a one-hidden-layer MLP on flat inputs, its output layer
    zero-initialised so training starts unaugmented. ``L_V = CE(validation)`` sees clean inputs (eval mode turns
    the augmentation off), so the augmentation is shaped only by how it changes the trained weights.

    Args:
        network, num_classes: see :class:`ClassifierTask`.
        in_features: size of a flat input (64 for digits).
        augmentation_hidden: width of the augmentation network's hidden layer.
        noise_channels: noise features appended to each input, so one input is augmented many ways.
        **kwargs: ``optimizer``, ``learning_rate``, clipping and accumulation: see :class:`ClassifierTask`.
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        num_classes: int = 10,
        in_features: int = 64,
        augmentation_hidden: int = 64,
        noise_channels: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, num_classes, **kwargs)
        output = nn.Linear(augmentation_hidden, in_features)
        nn.init.zeros_(output.weight)
        nn.init.zeros_(output.bias)
        generator = nn.Sequential(nn.Linear(in_features + noise_channels, augmentation_hidden), nn.Tanh(), output)
        self.augmentation = LearnedAugmentation(generator, noise_channels=noise_channels)

    def training_loss(self, batch: Any) -> Tensor:
        """``L_T``: mean cross-entropy of the network on the augmented (flattened) inputs of a training batch."""
        inputs, targets = batch
        return nn.functional.cross_entropy(self(self.augmentation(inputs.flatten(1))), targets)

    def hyperparameters(self) -> list[nn.Parameter]:
        """All weights of the augmentation network."""
        return list(self.augmentation.parameters())
