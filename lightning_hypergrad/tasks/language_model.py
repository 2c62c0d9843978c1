"""An LSTM language model whose dropout rates are hyperparameters (the paper's PTB experiment, in small)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics.text import Perplexity

from lightning_hypergrad.hparams.dropout import ConcreteDropout
from lightning_hypergrad.lightning.module import BilevelLightningModule


class LSTMLanguageModel(BilevelLightningModule):
    """Embedding → concrete dropout → LSTM → concrete dropout → linear, predicting the next word.

    The two dropouts have one learnable rate per unit (embedding and hidden units); their logits are the
    hyperparameters, reached only through the training loss (validation runs in eval mode, without dropout).
    Validation and test log ``*_loss`` (mean cross-entropy per word) and ``*_perplexity``.

    Args:
        vocabulary_size: number of words (10,000 for the Penn Treebank).
        embedding_size, hidden_size, layers: the network's sizes.
        initial_rate, temperature: the dropouts' starting rate and relaxation temperature.
        optimizer: callable ``params -> Optimizer`` for the weights; ``None`` means ``Adam(lr=learning_rate)``.
        learning_rate: the default optimizer's learning rate.
        gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches: see :class:`~lightning_hypergrad.BilevelLightningModule`.
    """

    def __init__(
        self,
        vocabulary_size: int = 10_000,
        embedding_size: int = 200,
        hidden_size: int = 200,
        layers: int = 1,
        initial_rate: float = 0.2,
        temperature: float = 0.1,
        optimizer: OptimizerCallable | None = None,
        learning_rate: float = 2e-3,
        gradient_clip_val: float | None = 0.25,
        gradient_clip_algorithm: Literal["norm", "value"] = "norm",
        accumulate_grad_batches: int = 1,
    ) -> None:
        super().__init__(gradient_clip_val, gradient_clip_algorithm, accumulate_grad_batches)
        self.embedding = nn.Embedding(vocabulary_size, embedding_size)
        self.input_dropout = ConcreteDropout(initial_rate, temperature, shape=(embedding_size,))
        self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers=layers, batch_first=True)
        self.output_dropout = ConcreteDropout(initial_rate, temperature, shape=(hidden_size,))
        self.decoder = nn.Linear(hidden_size, vocabulary_size)
        self.optimizer_factory = optimizer
        self.learning_rate = learning_rate
        self.perplexity = nn.ModuleDict({"validation": Perplexity(), "test": Perplexity()})

    def forward(self, ids: Tensor) -> Tensor:
        """Next-token logits ``(batch, time, vocabulary)`` for token ids ``(batch, time)``."""
        hidden, _ = self.lstm(self.input_dropout(self.embedding(ids)))
        return self.decoder(self.output_dropout(hidden))

    def _loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        logits = self(inputs)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def training_loss(self, batch: Any) -> Tensor:
        """``L_T``: mean next-token cross-entropy of an ``(ids, targets)`` batch, learnable dropout active."""
        return self._loss(batch)

    def validation_loss(self, batch: Any) -> Tensor:
        """``L_V``: the same cross-entropy; the hyperstep evaluates it in eval mode, so without dropout."""
        return self._loss(batch)

    def hyperparameters(self) -> list[nn.Parameter]:
        """The input and output dropout logits."""
        return [self.input_dropout.logit, self.output_dropout.logit]

    def hyperparameter_values(self) -> dict[str, Tensor]:
        """The drop probabilities per unit: ``dropout_rate/input`` (embedding) and ``dropout_rate/output``."""
        return {
            "dropout_rate/input": self.input_dropout.rate().detach().clone(),
            "dropout_rate/output": self.output_dropout.rate().detach().clone(),
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is not None:
            return self.optimizer_factory(self.weight_parameters())
        return torch.optim.Adam(self.weight_parameters(), lr=self.learning_rate)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "validation")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test")

    def _evaluate(self, batch: Any, split: str) -> Tensor:
        inputs, targets = batch
        logits = self(inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.perplexity[split](logits, targets)  # exp of the mean loss over all words, not a mean of exps
        self.log(f"{split}_loss", loss, prog_bar=split == "validation", sync_dist=True)
        self.log(f"{split}_perplexity", self.perplexity[split], prog_bar=split == "validation")
        return loss
