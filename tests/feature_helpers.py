"""A stranger's bilevel module around any network, and data made in code, for the Lightning-feature tests."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from lightning_hypergrad import BilevelLightningModule


class DecayedRegression(BilevelLightningModule):
    """Mean squared error of ``network(inputs)`` plus a tuned global weight decay ``exp(log_decay)``.

    The losses go through ``self(inputs)`` (the module's ``forward``), as most projects write them, so that
    compiling the whole module compiles them too.
    """

    def __init__(self, network: nn.Module, learning_rate: float = 0.05, **options: Any) -> None:
        super().__init__(**options)
        self.network = network
        self.log_decay = nn.Parameter(torch.tensor(-2.0))
        self.learning_rate = learning_rate

    def forward(self, inputs: Tensor) -> Tensor:
        return self.network(inputs).reshape(-1)

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        penalty = sum(weight.pow(2).sum() for weight in self.weight_parameters())
        return nn.functional.mse_loss(self(inputs), targets) + 0.5 * self.log_decay.exp() * penalty

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(self(inputs), targets)

    def hyperparameters(self) -> list[nn.Parameter]:
        return [self.log_decay]

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.weight_parameters(), lr=self.learning_rate)


class AttentionNet(nn.Module):
    """A one-layer transformer encoder (attention dropout 0), mean-pooled to one output per sequence."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, 1)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.head(self.encoder(inputs).mean(dim=1))


class RecurrentNet(nn.Module):
    """An LSTM read out from its last hidden state."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.head = nn.Linear(width, 1)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.head(self.lstm(inputs)[0][:, -1])


def sequences(count: int, seed: int, width: int = 8, length: int = 5) -> TensorDataset:
    """Random sequences whose target is a fixed linear function of their mean, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, length, width, generator=generator)
    direction = torch.linspace(-1.0, 1.0, width)
    targets = inputs.mean(dim=1) @ direction + 0.1 * torch.randn(count, generator=generator)
    return TensorDataset(inputs, targets)


def vectors(count: int, seed: int, width: int = 8) -> TensorDataset:
    """Random vectors with a noisy linear target (for networks without a sequence axis)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, width, generator=generator)
    targets = inputs @ torch.linspace(-1.0, 1.0, width) + 0.1 * torch.randn(count, generator=generator)
    return TensorDataset(inputs, targets)


def loader(dataset: TensorDataset, batch_size: int = 16) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size)


class StreamOfBatches(IterableDataset):
    """An iterable dataset of unknown length: ``batches`` ready-made batches per pass."""

    def __init__(self, dataset: TensorDataset, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __iter__(self):
        inputs, targets = self.dataset.tensors
        for start in range(0, len(inputs), self.batch_size):
            yield inputs[start : start + self.batch_size], targets[start : start + self.batch_size]
