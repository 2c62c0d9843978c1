"""The default solver (``Neumann()``, ``alpha="auto"``) on an LSTM language model: no hyperstep may diverge.

On this LSTM the 10-step Lanczos estimate of λ_max is within
1.17× of an 80-step one, but the Hessian is indefinite early in training (λ_min/θ down to −0.62), so with
α = 1/θ the 20 Neumann terms grow by (1 + α|λ_min|)^20 along negative curvature and the first two hypersteps
diverged. ``Neumann`` now chooses α = min(1/θ_max, ln 2 / (K |θ_min|)) from the same Lanczos run, which removes
every skip here (``benchmarks/lstm_alpha_tuning.py`` prints these; ``benchmarks/lstm_alpha.py`` the larger model).
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import BilevelLightningModule, HypergradientCallback
from lightning_hypergrad.hparams import WeightDecay
from tests.lightning_helpers import make_trainer


class TinyLanguageModel(BilevelLightningModule):
    """Embedding → LSTM → decoder, one weight decay per weight (the issue's setting, in small)."""

    def __init__(self, vocabulary: int = 40, width: int = 16) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.lstm = nn.LSTM(width, width, batch_first=True)
        self.decoder = nn.Linear(width, vocabulary)
        self.decay = WeightDecay([w.shape for w in self.weight_parameters()], "per_weight", initial=1e-3)

    def weight_parameters(self) -> list[nn.Parameter]:
        return [*self.embedding.parameters(), *self.lstm.parameters(), *self.decoder.parameters()]

    def _cross_entropy(self, batch: Any) -> Tensor:
        logits = self.decoder(self.lstm(self.embedding(batch[0]))[0])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[1].reshape(-1))

    def training_loss(self, batch: Any) -> Tensor:
        return self._cross_entropy(batch) + self.decay(self.weight_parameters())

    def validation_loss(self, batch: Any) -> Tensor:
        return self._cross_entropy(batch)

    def hyperparameters(self) -> list[nn.Parameter]:
        return list(self.decay.parameters())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.weight_parameters(), lr=1e-2)


def markov_windows(count: int, vocabulary: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    successors = torch.randint(vocabulary, (vocabulary, 3), generator=generator)
    ids = torch.zeros(count, 13, dtype=torch.long)
    ids[:, 0] = torch.randint(vocabulary, (count,), generator=generator)
    for step in range(1, 13):
        choice = torch.randint(3, (count,), generator=generator)
        ids[:, step] = successors[ids[:, step - 1], choice]
    return TensorDataset(ids[:, :-1], ids[:, 1:])


def test_the_default_solver_never_diverges_on_a_tiny_lstm_language_model() -> None:
    L.seed_everything(0, verbose=False)
    model = TinyLanguageModel()
    callback = HypergradientCallback(every_n_steps=5)
    train = DataLoader(markov_windows(320, 40, seed=1), batch_size=32, shuffle=True)
    validation = DataLoader(markov_windows(96, 40, seed=2), batch_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_trainer([callback], max_epochs=3).fit(model, train, validation)
    converged = [entry["solver_converged"] for entry in callback.history]
    assert callback.taken + callback.skipped == 6
    assert callback.skipped == 0, converged
