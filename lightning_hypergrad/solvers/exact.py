"""Dense Hessian solve: the exact oracle for small problems."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_hypergrad.arguments import check_count
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.solvers.base import HVP, IHVPSolver, SolveResult, SolveStatus
from lightning_hypergrad.solvers.plumbing import apply_hvp, check_initial, finish, receive


class Exact(IHVPSolver):
    r"""Form the dense P×P Hessian from P Hessian-vector products and solve ``H x = b`` directly.

    ``x = H⁺ b``, the minimum-norm least-squares solution (equal to ``H⁻¹ b`` when H is nonsingular), from an
    eigendecomposition of the symmetrised Hessian in float64; eigenvalues below ``P · eps · max|λ|`` are
    treated as zero. It costs P products and O(P²) memory, so it is meant as the reference in tests and
    benchmarks; problems with more than ``max_size`` weights are refused. ``initial`` is checked for shape,
    then unused.
    ``residual_norm`` is the exact ``‖b − H x‖`` (nonzero only when b leaves H's range). NaN or inf in a
    product or in b gives ``status=NON_FINITE`` and a zero solution, never an exception.

    Args:
        max_size: the largest P (total number of weights) accepted, ``>= 1``.
    """

    def __init__(self, max_size: int = 4096) -> None:
        self.max_size = check_count("Exact", "max_size", max_size, minimum=1)

    def check_size(self, num_weights: int) -> None:
        """Raise a ``ValueError`` naming the sizes when ``num_weights`` exceeds ``max_size``."""
        if num_weights > self.max_size:
            raise ValueError(
                f"Exact(max_size={self.max_size}) refuses a system with P={num_weights} weights: it would form a "
                f"dense {num_weights}x{num_weights} Hessian from {num_weights} products. Use ConjugateGradient or "
                "Neumann, or raise max_size."
            )

    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        """Approximate ``H⁻¹ b`` as the class docstring describes; arguments as in :meth:`~lightning_hypergrad.solvers.IHVPSolver.solve`."""
        check_initial(b, initial)
        target, dtypes = receive(b)
        size = sum(part.numel() for part in target)
        self.check_size(size)
        flat_target = vectors.flatten(target)
        columns = []
        for index in range(size):
            unit = torch.zeros_like(flat_target)
            unit[index] = 1
            columns.append(vectors.flatten(apply_hvp(hvp, vectors.unflatten(unit, target))))
        dense_dtype = torch.float64
        hessian = (
            torch.stack(columns, dim=1).to(dense_dtype) if columns else flat_target.new_zeros((0, 0), dtype=dense_dtype)
        )
        hessian = (hessian + hessian.T) / 2
        rhs = flat_target.to(dense_dtype)
        if not bool(torch.isfinite(hessian).all() & torch.isfinite(rhs).all()):  # pinv would raise on NaN
            return finish(
                vectors.zeros_like(target),
                dtypes,
                status=SolveStatus.NON_FINITE,
                iterations=0,
                residual_norm=torch.full((), float("nan"), dtype=dense_dtype),
                hvp_count=size,
            )
        solution = torch.linalg.pinv(hessian, hermitian=True) @ rhs
        residual_norm = torch.linalg.vector_norm(rhs - hessian @ solution)
        finite = bool(torch.isfinite(solution).all())
        return finish(
            vectors.unflatten(solution, target),
            dtypes,
            status=SolveStatus.TOLERANCE_REACHED if finite else SolveStatus.NON_FINITE,
            iterations=0,
            residual_norm=residual_norm,
            hvp_count=size,
        )
