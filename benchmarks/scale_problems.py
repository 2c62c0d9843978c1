"""Not a benchmark: the two problems at the scale users train, on data generated in code (nothing downloads),
and the quiet Trainer the scale benchmarks fit them with.

- ``resnet18``: torchvision ``resnet18(num_classes=10)`` on 32×32×3 images, one decay per weight
  (``WeightDecayClassifier(decay_granularity="per_weight")``): 11.2 M weights, 11.2 M hyperparameters.
- ``transformer``: a 6-layer ``nn.TransformerEncoder`` (d_model 320, 8 heads, feed-forward 1280, no dropout)
  classifying token sequences of length 32 from a vocabulary of 1,000, one decay per weight: 7.7 M weights.

The labels depend on the inputs (a fixed random teacher), so the losses fall during the fit.
"""

from __future__ import annotations

import lightning as L
import torch
import torchvision
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad.tasks import WeightDecayClassifier

BATCH = 32
TRAIN, VALIDATION = 2048, 512
VOCABULARY, LENGTH = 1000, 32


class TokenClassifier(nn.Module):
    """Embedding, a Transformer encoder and mean pooling into class scores."""

    def __init__(self, width: int = 320, layers: int = 6, heads: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, width)
        self.position = nn.Parameter(torch.randn(LENGTH, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        """Class scores of a batch of token sequences (batch, length)."""
        return self.head(self.encoder(self.embedding(tokens) + self.position).mean(dim=1))


def _images(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    inputs = torch.randn(count, 3, 32, 32, generator=generator)
    return inputs, _teacher_labels(inputs.flatten(1), generator)


def _tokens(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    tokens = torch.randint(0, VOCABULARY, (count, LENGTH), generator=generator)
    counts = torch.zeros(count, VOCABULARY).scatter_add_(1, tokens, torch.ones(count, LENGTH))
    return tokens, _teacher_labels(counts, generator)


def _teacher_labels(features: Tensor, generator: torch.Generator) -> Tensor:
    teacher = torch.randn(features.shape[1], 10, generator=torch.Generator().manual_seed(123))
    noise = 0.1 * torch.randn(features.shape[0], 10, generator=generator)
    scores = features @ teacher
    return (scores / scores.std() + noise).argmax(dim=1)


class GeneratedData(L.LightningDataModule):
    """Training and validation splits of generated images or token sequences, batch 32 for both."""

    def __init__(self, problem: str, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        make = _images if problem == "resnet18" else _tokens
        self.train_set = TensorDataset(*make(TRAIN, generator))
        self.validation_set = TensorDataset(*make(VALIDATION, generator))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.validation_set, batch_size=BATCH, shuffle=True)


class LastLayers(WeightDecayClassifier):
    """The classifier with the implicit term restricted to its last layers: ResNet-18's ``layer4`` and ``fc``
    (8.4 M of its 11.2 M weights, but at 1×1 spatial size on 32×32 inputs), the Transformer's last encoder layer
    and head."""

    def implicit_parameters(self) -> list[nn.Parameter]:
        """The last layers' weights (see the class docstring)."""
        network = self.network
        last = (
            [network.layer4, network.fc] if hasattr(network, "layer4") else [network.encoder.layers[-1], network.head]
        )
        return [parameter for layer in last for parameter in layer.parameters()]


def quiet_trainer(steps: int, callbacks: list[L.Callback], accelerator: str = "cpu") -> L.Trainer:
    """A Trainer for ``steps`` weight steps on one device with no validation loop, logger, checkpoint or bars."""
    return L.Trainer(
        max_steps=steps,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )


def make_module(problem: str, seed: int = 0, last_layers: bool = False) -> WeightDecayClassifier:
    """The per-weight decay classifier of ``problem`` (``"resnet18"`` or ``"transformer"``), seeded; with
    ``last_layers`` its implicit term is restricted to the last layers (:class:`LastLayers`)."""
    torch.manual_seed(seed)
    network = torchvision.models.resnet18(num_classes=10) if problem == "resnet18" else TokenClassifier()
    task = LastLayers if last_layers else WeightDecayClassifier
    return task(network=network, decay_granularity="per_weight", initial_decay=1e-3)
