"""Tune hyperparameters by gradient descent with implicit differentiation, inside PyTorch Lightning."""

from lightning_hypergrad import hparams, solvers
from lightning_hypergrad.callback import HypergradientCallback
from lightning_hypergrad.hypergradient import (
    HypergradientResult,
    HypergradientWarning,
    hypergradient,
    hypergradient_with_solve,
)
from lightning_hypergrad.module import BilevelLightningModule

__all__ = [
    "BilevelLightningModule",
    "HypergradientCallback",
    "HypergradientResult",
    "HypergradientWarning",
    "hparams",
    "hypergradient",
    "hypergradient_with_solve",
    "solvers",
]
