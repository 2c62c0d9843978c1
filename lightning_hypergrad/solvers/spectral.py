"""A spectral (deflation) preconditioner for conjugate gradient, built from Lanczos Ritz pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.solvers.base import HVP
from lightning_hypergrad.solvers.plumbing import apply_hvp


@dataclass(frozen=True)
class SpectralPreconditioner:
    r"""``M⁻¹ = (I − UUᵀ) + U diag(σ/θ) Uᵀ``: H's top Ritz directions rescaled to the edge of the rest.

    ``U`` holds the ``rank`` Ritz vectors of H's largest Ritz values ``θ`` (orthonormal), ``σ`` is the next
    Ritz value below them (the top of the spectrum left). Where ``U`` spans eigenvectors of H exactly, ``M⁻¹H``
    has eigenvalue σ along them and H's own elsewhere, so the largest eigenvalues no longer set conjugate
    gradient's pace; the scale of ``M⁻¹`` does not matter to CG. It is symmetric positive definite whenever
    σ and every kept θ are positive.

    Attributes:
        values: the kept Ritz values θ, a 1-D tensor (largest last).
        basis: the Ritz vectors, one stacked tensor per part of the vector, leading dimension ``rank``.
        edge: σ, a 0-dim tensor.
    """

    values: Tensor
    basis: Vector
    edge: Tensor

    def apply(self, residual: Sequence[Tensor]) -> Vector:
        """``M⁻¹ r`` (a fresh vector)."""
        coefficients = sum(
            (
                basis.to(part.device).reshape(basis.shape[0], -1) @ part.reshape(-1)
                for basis, part in zip(self.basis, residual)
            ),
            start=torch.zeros_like(self.values, device=residual[0].device),
        )
        values = self.values.to(coefficients.device)
        shifted = coefficients * (self.edge.to(values) / values - 1)  # remove U Uᵀ r, add back U diag(σ/θ) Uᵀ r
        return tuple(
            part + torch.tensordot(shifted.to(part.dtype), basis.to(part.device), dims=1)
            for basis, part in zip(self.basis, residual)
        )

    @classmethod
    def build(
        cls, hvp: HVP, start: Sequence[Tensor], steps: int, rank: int
    ) -> tuple[SpectralPreconditioner | None, bool]:
        """Run ``steps`` Lanczos steps with full reorthogonalisation from ``start``; keep the top ``rank`` pairs.

        Costs ``min(steps, P)`` products and as many weight-sized vectors while it runs, ``rank`` afterwards.
        Returns the preconditioner (``None`` when no Ritz value is positive, or the products were not finite)
        and whether every product was finite.
        """
        steps = min(steps, sum(part.numel() for part in start))
        basis = [vectors.scale(start, 1.0 / vectors.norm(start).clamp_min(torch.finfo(torch.float32).tiny))]
        diagonal, off_diagonal = [], []
        for _ in range(steps):
            product = apply_hvp(hvp, basis[-1])
            diagonal.append(vectors.dot(product, basis[-1]))
            for _twice in range(2):  # classical Gram–Schmidt, repeated, keeps the basis orthonormal
                for vector in basis:
                    product = vectors.add_scaled(product, -vectors.dot(product, vector), vector)
            off_diagonal.append(vectors.norm(product))
            basis.append(vectors.scale(product, 1.0 / off_diagonal[-1].clamp_min(torch.finfo(torch.float32).tiny)))
        basis = basis[:steps]
        couplings = torch.stack(off_diagonal[:-1]) if steps > 1 else torch.zeros(0)
        tridiagonal = torch.diag(torch.stack(diagonal)) + torch.diag(couplings, 1) + torch.diag(couplings, -1)
        if not bool(torch.isfinite(tridiagonal).all()):
            return None, False
        values, rotations = torch.linalg.eigh(tridiagonal.double())
        # Keep clearly positive values only (a breakdown leaves zero vectors with zero Ritz values).
        positive = int((values > 1e-6 * values[-1].clamp_min(0)).sum())
        kept = min(rank, positive - 1)  # one positive value below the kept ones marks the edge σ
        if kept < 1:
            return None, True
        edge = values[-kept - 1]
        values, rotations = values[-kept:], rotations[:, -kept:]
        stacked = tuple(torch.stack([vector[index] for vector in basis]) for index in range(len(start)))
        ritz_vectors = tuple(torch.tensordot(rotations.T.to(part.dtype), part, dims=1) for part in stacked)
        return cls(values.to(stacked[0].dtype), ritz_vectors, edge.to(stacked[0].dtype)), True
