"""Tune hyperparameters by gradient descent with implicit differentiation, inside PyTorch Lightning."""

from lightning_hypergrad import _moved, hparams, solvers
from lightning_hypergrad.engine.hypergradient import (
    HypergradientResult,
    HypergradientWarning,
    hypergradient,
    hypergradient_with_solve,
)
from lightning_hypergrad.lightning import BilevelLightningModule, HeldOutGuard, HypergradientCallback

_moved.install()

__all__ = [
    "BilevelLightningModule",
    "HeldOutGuard",
    "HypergradientCallback",
    "HypergradientResult",
    "HypergradientWarning",
    "hparams",
    "hypergradient",
    "hypergradient_with_solve",
    "solvers",
]
