"""The zeroth-order approximation ``H⁻¹ ≈ αI``."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import Tensor

from lightning_hypergrad.arguments import check_positive
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.solvers.base import HVP, IHVPSolver, SolveResult, SolveStatus
from lightning_hypergrad.solvers.plumbing import finish, receive, starting_point


class Identity(IHVPSolver):
    r"""Approximate ``H⁻¹ b`` by ``α b``: the Neumann series cut to its first term, with no Hessian products.

    .. math::

        x = x_0 + \alpha\,(b - H x_0)

    With ``x_0 = 0`` (the default) this costs nothing beyond the gradients. At a stationary point of the
    training loss (``∂L_T/∂w = 0``) the hypergradient it gives is that of differentiating through a single
    gradient step of size α (the "greedy", one-step lookahead hypergradient); elsewhere the two differ, since
    that step moves the weights the validation loss is then evaluated at. ``residual_norm`` is ``‖b − H x_0‖``, the residual before the step; ``status`` is
    ``ITERATIONS_EXHAUSTED`` unless ``b`` or the warm start's product holds NaN or inf (``NON_FINITE``).

    Args:
        alpha: the scale α ``> 0``; the inverse Hessian's stand-in is ``αI``.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = check_positive("Identity", "alpha", alpha)

    def with_alpha(self, alpha: float) -> Identity:
        """A copy of this solver with step size ``alpha`` (validated as in the constructor)."""
        solver = copy.copy(self)
        solver.alpha = check_positive("Identity", "alpha", alpha)
        return solver

    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        """Approximate ``H⁻¹ b`` as the class docstring describes; arguments as in :meth:`~lightning_hypergrad.solvers.IHVPSolver.solve`."""
        target, dtypes = receive(b)
        start = starting_point(hvp, target, initial)
        del target  # the start holds it now: handed over below, so that a donated b is freed after its last use
        point, residual = start.hand_over()
        solution = vectors.add_scaled(point, self.alpha, residual)
        finite = vectors.all_finite(solution) and bool(start.finite)
        return finish(
            solution,
            dtypes,
            status=SolveStatus.ITERATIONS_EXHAUSTED if finite else SolveStatus.NON_FINITE,
            iterations=0,
            residual_norm=vectors.norm(residual),
            hvp_count=start.hvp_count,
            alpha=self.alpha,
        )
