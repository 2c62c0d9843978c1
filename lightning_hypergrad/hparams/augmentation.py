"""A learned data augmentation: a network whose weights are hyperparameters."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_hypergrad.arguments import check_count


class LearnedAugmentation(nn.Module):
    """Transforms training inputs with ``network``; its parameters are the hyperparameters.

    In training mode the output is ``x + network(x ⊕ noise)`` (``residual=True``) or ``network(x ⊕ noise)``,
    where ``noise`` is ``noise_channels`` standard-normal channels concatenated along dimension 1, so one input
    can be augmented many ways (the paper's augmentation U-net takes data and noise). In eval mode it is the
    identity: augmentation applies to training data only. Zero-initialise the network's last layer to start
    from no augmentation.

    Args:
        network: maps ``(batch, channels + noise_channels, ...)`` to ``(batch, channels, ...)``.
        noise_channels: noise channels appended to the input, ``>= 0``.
        residual: add the network's output to the input instead of replacing it.
    """

    def __init__(self, network: nn.Module, noise_channels: int = 1, residual: bool = True) -> None:
        super().__init__()
        self.network = network
        self.noise_channels = check_count("LearnedAugmentation", "noise_channels", noise_channels, minimum=0)
        self.residual = residual

    def forward(self, inputs: Tensor) -> Tensor:
        """Augmented ``inputs`` (same shape) in training mode; ``inputs`` unchanged in eval mode."""
        if not self.training:
            return inputs
        if self.noise_channels:
            noise_shape = (inputs.shape[0], self.noise_channels, *inputs.shape[2:])
            augmented = self.network(
                torch.cat([inputs, torch.randn(noise_shape, dtype=inputs.dtype, device=inputs.device)], 1)
            )
        else:
            augmented = self.network(inputs)
        if augmented.shape != inputs.shape:
            raise ValueError(
                f"The augmentation network returned {tuple(augmented.shape)} for inputs {tuple(inputs.shape)}."
            )
        return inputs + augmented if self.residual else augmented
