"""Conjugate gradient for ``H x = b`` with a symmetric positive definite H."""

from __future__ import annotations

from collections.abc import Sequence

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

ACCELERATOR_CHECK_EVERY = 5  # iterations between host checks when a check means waiting for the device


class ConjugateGradient(IHVPSolver):
    r"""Solve ``H x = b`` by conjugate gradient, one Hessian-vector product per iteration.

    Each iteration minimises ``½ xᵀHx − bᵀx`` over a growing Krylov subspace; in exact arithmetic it solves an
    n×n symmetric positive definite system in at most n iterations. It stops early once
    ``‖b − H x‖ ≤ rtol · ‖b‖`` (``status=TOLERANCE_REACHED``), else after ``iterations`` steps
    (``ITERATIONS_EXHAUSTED``; the iterate is still the best in its Krylov space and counts as converged).

    CG needs H positive definite along its search directions. If it meets ``pᵀHp ≤ 0`` (a saddle point or a
    non-convex region, common in neural networks) it stops there and keeps the iterate built so far, as
    truncated (Steihaug) CG does: ``status=NEGATIVE_CURVATURE``, converged if at least one step was taken. If
    the very first direction already has non-positive curvature, or values turn non-finite (``DIVERGED``), the
    solve fails: ``converged=False`` and a zero solution. Passing ``damping`` to the hypergradient (solving with
    ``H + μI``) keeps CG clear of small negative eigenvalues. ``residual_norm`` is the recurrence's residual
    ``‖r_k‖ = ‖b − H x_k‖`` (exact up to rounding).

    The iteration runs on the device without waiting for the host: finished or failed runs freeze their
    iterate by masking, and the host checks whether all work is done every ``check_every`` iterations (by
    default after every iteration on the CPU, where checking is free, and every 5 on accelerators).

    Args:
        iterations: the most Hessian-vector products to spend, ``>= 1``.
        rtol: the relative residual tolerance ``> 0`` for stopping early.
        check_every: iterations between host-side checks for early stopping, ``>= 1``; ``None`` checks every
            iteration on the CPU (where a check costs nothing) and every 5 on accelerators.

    Example:
        >>> import torch
        >>> from lightning_hypergrad.solvers import ConjugateGradient
        >>> H = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = (torch.ones(2, dtype=torch.float64),)
        >>> result = ConjugateGradient(iterations=2, rtol=1e-12).solve(lambda v: (H @ v[0],), b)
        >>> result.solution[0], result.iterations
        (tensor([0.1818, 0.2727], dtype=torch.float64), 2)
    """

    def __init__(self, iterations: int = 20, rtol: float = 1e-6, check_every: int | None = None) -> None:
        self.iterations = check_count("ConjugateGradient", "iterations", iterations, minimum=1)
        self.rtol = check_positive("ConjugateGradient", "rtol", rtol)
        self.check_every = (
            None if check_every is None else check_count("ConjugateGradient", "check_every", check_every, 1)
        )

    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        target = vectors.to_working(b)
        solution, residual, hvp_count = starting_point(hvp, target, initial)
        tolerance_squared = (self.rtol * vectors.norm(target)) ** 2
        residual_squared = vectors.dot(residual, residual)
        device = residual_squared.device
        check_every = self.check_every or (1 if device.type == "cpu" else ACCELERATOR_CHECK_EVERY)

        direction = residual
        active = residual_squared > tolerance_squared
        negative_curvature = torch.zeros((), dtype=torch.bool, device=device)
        non_finite = ~torch.isfinite(residual_squared)
        steps_taken = torch.zeros((), dtype=torch.int64, device=device)
        for iteration in range(self.iterations):
            product = apply_hvp(hvp, direction)
            hvp_count += 1
            curvature = vectors.dot(direction, product)  # pᵀHp
            negative_curvature |= active & (curvature <= 0)
            non_finite |= active & ~torch.isfinite(curvature)
            stepping = active & (curvature > 0)
            # x += a p, r −= a Hp with a = rᵀr / pᵀHp; masked to zero once this run has stopped.
            step = torch.where(stepping, residual_squared / curvature, torch.zeros_like(curvature))
            solution = vectors.add_scaled(solution, step, direction)
            residual = vectors.add_scaled(residual, -step, product)
            new_residual_squared = vectors.dot(residual, residual)
            non_finite |= stepping & ~torch.isfinite(new_residual_squared)
            beta = torch.where(stepping, new_residual_squared / residual_squared, torch.zeros_like(curvature))
            direction = vectors.add_scaled(residual, beta, direction)
            residual_squared = torch.where(stepping, new_residual_squared, residual_squared)
            steps_taken += stepping.to(torch.int64)
            active = stepping & (residual_squared > tolerance_squared) & torch.isfinite(residual_squared)
            if (iteration + 1) % check_every == 0 and not bool(active):
                break

        if bool(non_finite):
            status = SolveStatus.DIVERGED
        elif bool(negative_curvature):
            status = SolveStatus.NEGATIVE_CURVATURE
        elif bool(residual_squared <= tolerance_squared):
            status = SolveStatus.TOLERANCE_REACHED
        else:
            status = SolveStatus.ITERATIONS_EXHAUSTED
        return finish(
            solution,
            b,
            status=status,
            iterations=int(steps_taken),
            residual_norm=residual_squared.sqrt(),
            hvp_count=hvp_count,
        )
