"""Truncated Neumann series for ``H⁻¹ b`` (Lorraine et al. 2020, Algorithm 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lightning_hypergrad.checks import check_count, check_positive
from lightning_hypergrad.solvers import vectors
from lightning_hypergrad.solvers.base import (
    HVP,
    IHVPSolver,
    SolveResult,
    SolveStatus,
    apply_hvp,
    finish,
    starting_point,
)


class Neumann(IHVPSolver):
    r"""Approximate ``H⁻¹ b`` by the first ``K + 1`` terms of the Neumann series.

    .. math::

        x_K = \alpha \sum_{j=0}^{K} (I - \alpha H)^j\, b \;=\; H^{-1}\big(I - (I - \alpha H)^{K+1}\big)\, b

    with ``K = iterations`` and ``α = alpha``: K Hessian-vector products, no matrix ever formed, memory O(P).
    The series converges to ``H⁻¹ b`` iff every eigenvalue of ``αH`` along ``b`` lies in ``(0, 2)``, i.e.
    H is positive definite there and ``0 < α < 2/λ_max(H)``. Truncated early it is the implicit counterpart of
    differentiating through K steps of gradient descent with learning rate α.

    ``alpha="auto"`` picks ``α = 1/λ̂`` where ``λ̂ = ‖H v‖`` after ``power_iterations`` steps of power
    iteration started from ``b`` (those products are counted in ``hvp_count``). ``λ̂`` never exceeds the
    largest |eigenvalue| excited by ``b``, and within a few steps exceeds half of it, which keeps ``αλ_max < 2``.
    Starting from ``b`` is deliberate: only the directions present in ``b`` enter the series.

    Divergence is detected after the loop, without a host sync per term. The solve reports
    ``status=DIVERGED``, ``converged=False`` and a zero solution when

    - any value is non-finite;
    - the series overshoots: the last term is larger than the one before and points against it, the signature
      of an eigenvalue with ``αλ > 2`` (``α ≥ 2/λ_max``), whose component flips sign and grows every term; or
    - the terms grew by more than ``max_growth``: ``‖(I − αH)^K b‖ > max_growth · ‖b‖``.

    Slower, same-signed growth comes from negative curvature along ``b`` (a saddle region, common early in
    training). Up to ``max_growth`` it is kept: the truncated series is then still exactly the hypergradient of
    K unrolled gradient-descent steps of size α, a finite and meaningful answer even where the implicit
    function theorem's local-minimum assumption fails.

    ``residual_norm`` is ``‖(I − αH)^K b‖``: the exact residual ``‖b − H x_{K−1}‖`` of the previous partial sum,
    and an upper bound on the returned ``x_K``'s residual whenever the series converges.

    Args:
        iterations: K, the number of Hessian-vector products (series terms after the first), ``>= 1``.
        alpha: the step α ``> 0``, or ``"auto"`` to estimate it by power iteration on every solve.
        power_iterations: products spent estimating ``λ_max`` when ``alpha="auto"``, ``>= 1``.
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
        power_iterations: int = 10,
        max_growth: float = 10.0,
    ) -> None:
        self.iterations = check_count("Neumann", "iterations", iterations, minimum=1)
        if alpha == "auto":
            self.alpha: float | Literal["auto"] = "auto"
        elif isinstance(alpha, str):
            raise ValueError(f"Neumann(alpha={alpha!r}): alpha must be a finite number > 0 or the string 'auto'.")
        else:
            self.alpha = check_positive("Neumann", "alpha", alpha)
        self.power_iterations = check_count("Neumann", "power_iterations", power_iterations, minimum=1)
        self.max_growth = check_positive("Neumann", "max_growth", max_growth)

    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        target = vectors.to_working(b)
        start, residual, hvp_count = starting_point(hvp, target, initial)
        initial_residual_norm = vectors.norm(residual)

        degenerate = torch.zeros((), dtype=torch.bool, device=initial_residual_norm.device)
        if self.alpha == "auto":
            largest = largest_eigenvalue_magnitude(hvp, residual, self.power_iterations)
            hvp_count += self.power_iterations
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


def largest_eigenvalue_magnitude(hvp: HVP, start: Sequence[Tensor], iterations: int) -> Tensor:
    """Power iteration from ``start``: returns ``‖H v‖`` for the last unit iterate v, a 0-dim tensor.

    For any unit v, ``‖H v‖`` is at most the largest |eigenvalue| of H (restricted to the directions
    present in ``start``) and approaches it as the iterate aligns with the top eigenvector.
    """
    direction = tuple(start)
    estimate = vectors.norm(direction)
    for _ in range(iterations):
        tiny = torch.finfo(estimate.dtype).tiny
        direction = vectors.scale(direction, 1.0 / estimate.clamp_min(tiny))
        product = apply_hvp(hvp, direction)
        estimate = vectors.norm(product)
        direction = product
    return estimate
