"""Problems with exact answers, shared by the tests (float64, seeded)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class RidgeProblem:
    """Ridge regression with one log-L2 hyperparameter per feature.

    L_T(λ, w) = ‖X w − y‖²/n + Σ_i exp(λ_i) w_i²,   L_V(w) = ‖X_v w − y_v‖²/m.

    The Hessian is H = 2XᵀX/n + 2 diag(e^λ), the minimiser w* = H⁻¹ 2Xᵀy/n, and differentiating the
    stationarity condition H w* = 2Xᵀy/n in λ gives dw*/dλ = −H⁻¹ diag(2 e^λ ∘ w*), so
    dL_V/dλ = −2 e^λ ∘ w* ∘ H⁻¹ ∂L_V/∂w.
    """

    train_inputs: Tensor
    train_targets: Tensor
    val_inputs: Tensor
    val_targets: Tensor
    log_decay: Tensor

    @classmethod
    def make(cls, features: int = 5, train_size: int = 40, val_size: int = 30, seed: int = 0) -> RidgeProblem:
        generator = torch.Generator().manual_seed(seed)
        options = {"dtype": torch.float64, "generator": generator}
        true_weights = torch.randn(features, **options)
        train_inputs = torch.randn(train_size, features, **options)
        val_inputs = torch.randn(val_size, features, **options)
        train_targets = train_inputs @ true_weights + 0.5 * torch.randn(train_size, **options)
        val_targets = val_inputs @ true_weights + 0.5 * torch.randn(val_size, **options)
        log_decay = torch.randn(features, **options) - 1.0
        return cls(train_inputs, train_targets, val_inputs, val_targets, log_decay)

    @property
    def features(self) -> int:
        return self.train_inputs.shape[1]

    def hessian(self) -> Tensor:
        n = self.train_inputs.shape[0]
        return 2 * self.train_inputs.T @ self.train_inputs / n + 2 * torch.diag(self.log_decay.exp())

    def minimizer(self) -> Tensor:
        n = self.train_inputs.shape[0]
        return torch.linalg.solve(self.hessian(), 2 * self.train_inputs.T @ self.train_targets / n)

    def train_loss(self, weights: Tensor, log_decay: Tensor) -> Tensor:
        residual = self.train_inputs @ weights - self.train_targets
        return residual.pow(2).mean() + (log_decay.exp() * weights.pow(2)).sum()

    def val_loss(self, weights: Tensor) -> Tensor:
        return (self.val_inputs @ weights - self.val_targets).pow(2).mean()

    def val_gradient(self, weights: Tensor) -> Tensor:
        m = self.val_inputs.shape[0]
        return 2 * self.val_inputs.T @ (self.val_inputs @ weights - self.val_targets) / m

    def hypergradient_from_solution(self, solution: Tensor) -> Tensor:
        """−(∂²L_T/∂w∂λ)ᵀ x for a given x ≈ H⁻¹ ∂L_V/∂w, at w = w*."""
        return -2 * self.log_decay.exp() * self.minimizer() * solution

    def exact_hypergradient(self) -> Tensor:
        weights = self.minimizer()
        return self.hypergradient_from_solution(torch.linalg.solve(self.hessian(), self.val_gradient(weights)))

    def truncated_neumann_hypergradient(self, iterations: int, alpha: float) -> Tensor:
        """The hypergradient with x_K = H⁻¹ (I − (I − αH)^{K+1}) v, the closed form of K-term Neumann."""
        hessian = self.hessian()
        identity = torch.eye(self.features, dtype=torch.float64)
        remainder = torch.linalg.matrix_power(identity - alpha * hessian, iterations + 1)
        v = self.val_gradient(self.minimizer())
        return self.hypergradient_from_solution(torch.linalg.solve(hessian, (identity - remainder) @ v))

    def losses_at_minimizer(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(train_loss, val_loss, weights, log_decay) as graph-attached tensors at w = w*."""
        weights = self.minimizer().clone().requires_grad_(True)
        log_decay = self.log_decay.clone().requires_grad_(True)
        return self.train_loss(weights, log_decay), self.val_loss(weights), weights, log_decay


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return float(torch.linalg.vector_norm(actual - expected) / torch.linalg.vector_norm(expected))


def symmetric_matrix(size: int, eigenvalues: Tensor, seed: int = 0) -> Tensor:
    """A symmetric matrix with the given eigenvalues and a random orthonormal eigenbasis (float64)."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(size, size, dtype=torch.float64, generator=generator))
    return basis @ torch.diag(eigenvalues.to(torch.float64)) @ basis.T
