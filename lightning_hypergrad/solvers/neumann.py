"""Truncated Neumann series for ``H⁻¹ b`` (Lorraine et al. 2020, Algorithm 3)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lightning_hypergrad import vectors
from lightning_hypergrad.checks import check_count, check_positive
from lightning_hypergrad.solvers.base import (
    HVP,
    IHVPSolver,
    SolveResult,
    SolveStatus,
    apply_hvp,
    finish,
    starting_point,
)
from lightning_hypergrad.solvers.lanczos import extreme_eigenvalues


class Neumann(IHVPSolver):
    r"""Approximate ``H⁻¹ b`` by the first ``K + 1`` terms of the Neumann series.

    .. math::

        x_K = \alpha \sum_{j=0}^{K} (I - \alpha H)^j\, b \;=\; H^{-1}\big(I - (I - \alpha H)^{K+1}\big)\, b

    with ``K = iterations`` and ``α = alpha``: K Hessian-vector products, no matrix ever formed, memory O(P).
    The series converges to ``H⁻¹ b`` iff every eigenvalue of ``αH`` along ``b`` lies in ``(0, 2)``, i.e.
    H is positive definite there and ``0 < α < 2/λ_max(H)``. Truncated, it equals differentiating through K + 1
    steps of gradient descent with learning rate α started at a stationary point (Lorraine et al., Theorem 1).

    ``alpha="auto"`` picks ``α = 1/θ`` where θ is the largest Ritz value after ``lanczos_steps`` Lanczos steps
    started from ``b`` (see :func:`extreme_eigenvalues`; those products are counted in ``hvp_count``). Lanczos
    is power iteration with the Rayleigh–Ritz refinement over all the vectors it has seen, at the same cost of
    one product per step and O(P) memory; θ never exceeds λ_max and approaches it far faster than a power
    iterate does, keeping ``αλ_max`` in ``[1, 2)``. Starting from ``b`` is deliberate: only the directions
    present in ``b`` enter the series. Should θ still fall below ``λ_max/2``, the overshoot test below reports it.

    Divergence is detected after the loop, without a host sync per term. The solve reports
    ``status=DIVERGED``, ``converged=False`` and a zero solution when

    - any value is non-finite;
    - the series overshoots: the last term is larger than the one before and points against it, the signature
      of an eigenvalue with ``αλ > 2`` (``α ≥ 2/λ_max``), whose component flips sign and grows every term; or
    - the terms grew by more than ``max_growth``: ``‖(I − αH)^K b‖ > max_growth · ‖b‖``.

    Slower, same-signed growth comes from negative curvature along ``b`` (a saddle region, common early in
    training). Up to ``max_growth`` it is kept: the truncated series is then still exactly the hypergradient of
    K + 1 unrolled gradient-descent steps of size α, a finite and meaningful answer even where the implicit
    function theorem's local-minimum assumption fails.

    ``residual_norm`` is ``‖(I − αH)^K b‖``: the exact residual ``‖b − H x_{K−1}‖`` of the previous partial sum,
    and an upper bound on the returned ``x_K``'s residual whenever the series converges.

    Args:
        iterations: K, the number of Hessian-vector products (series terms after the first), ``>= 1``.
        alpha: the step α ``> 0``, or ``"auto"`` to estimate ``1/λ_max`` by Lanczos on every solve.
        lanczos_steps: products spent estimating ``λ_max`` when ``alpha="auto"``, ``>= 1``.
        max_growth: the largest tolerated ratio ``‖(I − αH)^K b‖ / ‖b‖``, ``> 0``.

    Example:
        >>> import torch
        >>> from lightning_hypergrad.solvers import Neumann
        >>> H = torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> b = (torch.ones(2, dtype=torch.float64),)
        >>> result = Neumann(iterations=60, alpha=0.5).solve(lambda v: (H @ v[0],), b)
        >>> result.solution[0]
        tensor([1.0000, 0.5000], dtype=torch.float64)

    References:
        Lorraine, Vicol, Duvenaud. Optimizing Millions of Hyperparameters by Implicit Differentiation.
        AISTATS 2020. (arXiv v1 Algorithm 3 has sign errors; this follows the corrected recurrence.)
    """

    def __init__(
        self,
        iterations: int = 20,
        alpha: float | Literal["auto"] = "auto",
        lanczos_steps: int = 10,
        max_growth: float = 10.0,
    ) -> None:
        self.iterations = check_count("Neumann", "iterations", iterations, minimum=1)
        if alpha == "auto":
            self.alpha: float | Literal["auto"] = "auto"
        elif isinstance(alpha, str):
            raise ValueError(f"Neumann(alpha={alpha!r}): alpha must be a finite number > 0 or the string 'auto'.")
        else:
            self.alpha = check_positive("Neumann", "alpha", alpha)
        self.lanczos_steps = check_count("Neumann", "lanczos_steps", lanczos_steps, minimum=1)
        self.max_growth = check_positive("Neumann", "max_growth", max_growth)

    def with_alpha(self, alpha: float) -> Neumann:
        """A copy of this solver with step size ``alpha`` (validated as in the constructor)."""
        solver = copy.copy(self)
        solver.alpha = check_positive("Neumann", "alpha", alpha)
        return solver

    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        target = vectors.to_working(b)
        start, residual, hvp_count = starting_point(hvp, target, initial)
        initial_residual_norm = vectors.norm(residual)

        degenerate = torch.zeros((), dtype=torch.bool, device=initial_residual_norm.device)
        if self.alpha == "auto":
            largest = extreme_eigenvalues(hvp, residual, self.lanczos_steps)[1]
            hvp_count += self.lanczos_steps
            tiny = torch.finfo(largest.dtype).tiny
            # H vanishes along a nonzero b: the system is singular there and no step size makes the series converge.
            degenerate = (largest <= tiny) & (initial_residual_norm > 0)
            alpha: Tensor | float = 1.0 / largest.clamp_min(tiny)
        else:
            alpha = self.alpha

        # term_j = (I − αH)^j r0 and x = x0 + α Σ_j term_j, accumulated in working precision.
        term = residual
        solution = vectors.add_scaled(start, alpha, term)
        for _ in range(self.iterations):
            previous = term
            term = vectors.add_scaled(term, -alpha, apply_hvp(hvp, term))
            solution = vectors.add_scaled(solution, alpha, term)
        hvp_count += self.iterations

        residual_norm = vectors.norm(term)
        finite = vectors.all_finite(solution) & torch.isfinite(residual_norm)
        previous_norm = vectors.norm(previous)
        # Overshoot: growing and sign-flipping, above the rounding floor where noise could mimic it.
        significant = residual_norm > initial_residual_norm * torch.finfo(residual_norm.dtype).eps ** 0.5
        overshoot = (residual_norm > previous_norm) & (vectors.dot(term, previous) < 0) & significant
        grew_too_much = residual_norm > self.max_growth * initial_residual_norm
        diverged = bool(~finite | overshoot | grew_too_much | degenerate)  # host syncs happen only here
        return finish(
            solution,
            b,
            status=SolveStatus.DIVERGED if diverged else SolveStatus.ITERATIONS_EXHAUSTED,
            iterations=self.iterations,
            residual_norm=residual_norm,
            hvp_count=hvp_count,
            alpha=float(alpha),
        )
