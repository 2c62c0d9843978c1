"""Tune hyperparameters by gradient descent with implicit differentiation, inside PyTorch Lightning."""

from lightning_hypergrad import solvers
from lightning_hypergrad.hypergradient import (
    HypergradientResult,
    HypergradientWarning,
    hypergradient,
    hypergradient_with_solve,
)

__all__ = ["HypergradientResult", "HypergradientWarning", "hypergradient", "hypergradient_with_solve", "solvers"]
