"""An amortized (single-loop) solve: the estimate of ``H⁻¹ b`` is carried from one solve to the next and refined."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_hypergrad.arguments import check_count, check_positive
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.solvers.base import HVP, IHVPSolver, SolveResult, SolveStatus
from lightning_hypergrad.solvers.plumbing import apply_hvp, check_initial, finish, receive


@dataclass
class _Carried:
    """What an :class:`Amortized` solver and its ``with_alpha`` copies share: the estimate and its age."""

    estimate: Vector | None = None
    solves: int = 0  # solves refined into the estimate since it last started from zero
    last_start: str = "cold: no estimate yet"


class Amortized(IHVPSolver):
    r"""Carry the estimate ``x ≈ H⁻¹ b`` across solves and refine it with a few products each time.

    The single-loop idea of SOBA (Dagréou et al. 2022) and AmIGO (Arbel & Mairal 2022): between hypersteps the
    weights, hence H and b, move little, so the previous solution is a good start and a few steps per hyperstep
    keep tracking ``H⁻¹ b`` instead of solving from scratch. Each solve spends exactly ``iterations = K``
    products:

    .. math::

        x_0 = s\,\hat x,\quad s = \max\Big(0, \frac{b^\top H\hat x}{\lVert H\hat x\rVert^2}\Big),\quad
        r_0 = b - H x_0; \qquad
        x_{k+1} = x_k + \alpha_k r_k,\quad r_{k+1} = r_k - \alpha_k H r_k

    ``x̂`` is the carried estimate (or ``initial`` when given). Its product gives the residual, and the scale s
    that minimises ``‖b − s H x̂‖`` (clamped at 0, where the estimate points the wrong way): a start that is never
    worse than zero, and that follows a right-hand side which only changed its length (a larger validation
    gradient). Without an estimate ``x_0 = 0``, ``r_0 = b`` for free. Every further product is one step of the
    minimal-residual iteration, ``α_k = r_kᵀ H r_k / ‖H r_k‖²`` (``alpha=None``), which minimises ``‖r_{k+1}‖``:
    the residual never grows, for any symmetric H, with no estimate of λ_max and no host sync. With a fixed
    ``alpha`` the steps are Richardson's (SOBA's ``x ← x − α(Hx − b)``, unrolled gradient descent on the
    quadratic), which converge iff ``0 < αλ < 2`` along b. With a constant H and b the carried iterate is that
    iteration run for all the products spent so far, so it converges to ``H⁻¹ b`` across solves; while H moves it
    lags the moving solution by the distance it moved since the products last caught up (``docs/solvers.md``
    shows how far on a real trajectory).

    Cost: K products per solve and one carried weight-sized vector (float32 or wider) between solves, kept in
    :meth:`state_dict`. ``residual_norm`` is ``‖b − H x‖`` of the returned solution (from the recurrence, no extra
    product). ``iterations`` counts the steps taken (K − 1 from an estimate, K from zero).

    Failure resets: a non-finite product or iterate (``NON_FINITE``), or with a fixed α a residual that grew beyond
    ``max_growth · ‖b‖`` (``DIVERGED``), drops the estimate, and the next solve starts from zero. An estimate whose
    parts no longer match b's shapes (the weights changed) is dropped with a warning. :attr:`last_start` says how
    the latest solve started.

    Args:
        iterations: K, the Hessian-vector products per solve, ``>= 1``. With an estimate, the first product
            gives the residual and the rest refine; K = 1 only rescales the estimate, so use K ≥ 2.
        alpha: ``None`` for minimal-residual steps (no step size to choose), or a fixed Richardson step
            ``> 0`` (needed by ``alpha_from_learning_rate``).
        max_growth: with a fixed ``alpha``, the largest tolerated ``‖r_K‖ / ‖b‖``, ``> 0``.

    Example:
        >>> import torch
        >>> from lightning_hypergrad.solvers import Amortized
        >>> H = torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))
        >>> solver, b = Amortized(iterations=2), (torch.ones(2, dtype=torch.float64),)
        >>> for _ in range(30):
        ...     result = solver.solve(lambda v: (H @ v[0],), b)
        >>> result.solution[0]
        tensor([1.0000, 0.3333], dtype=torch.float64)

    References:
        Dagréou, Ablin, Vaiter, Moreau. A framework for bilevel optimization that enables stochastic and global
        variance reduction algorithms (SOBA). NeurIPS 2022. Arbel, Mairal. Amortized implicit differentiation for
        stochastic bilevel optimization (AmIGO). ICLR 2022.
    """

    def __init__(self, iterations: int = 2, alpha: float | None = None, max_growth: float = 10.0) -> None:
        self.iterations = check_count("Amortized", "iterations", iterations, minimum=1)
        self.alpha = None if alpha is None else check_positive("Amortized", "alpha", alpha)
        self.max_growth = check_positive("Amortized", "max_growth", max_growth)
        self._carried = _Carried()

    @property
    def last_start(self) -> str:
        """The way the latest solve started, one of ``"carried"``, ``"initial"`` or ``"cold: <why>"``."""
        return self._carried.last_start

    @property
    def estimate(self) -> Vector | None:
        """The carried estimate of ``H⁻¹ b`` (float32 or wider), or ``None`` before the first solve or after a reset."""
        return self._carried.estimate

    def reset(self) -> None:
        """Drop the carried estimate: the next solve starts from zero."""
        self._carried.estimate, self._carried.solves = None, 0

    def reset_state(self) -> None:
        """The trainable weights changed (the callback's ``SolverMemory`` says so): drop the estimate, :meth:`reset`."""
        self.reset()

    def with_alpha(self, alpha: float) -> Amortized:
        """A copy with the fixed step ``alpha`` that shares this solver's carried estimate."""
        solver = copy.copy(self)  # shallow: the copy refines the same _Carried
        solver.alpha = check_positive("Amortized", "alpha", alpha)
        return solver

    def state_dict(self) -> dict[str, Any]:
        """The carried estimate (a list of tensors, or None) and how many solves it has absorbed."""
        estimate = self._carried.estimate
        return {"estimate": None if estimate is None else list(estimate), "solves": self._carried.solves}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (missing keys: start from zero)."""
        estimate = state.get("estimate")
        self._carried.estimate = None if estimate is None else tuple(part.detach().clone() for part in estimate)
        self._carried.solves = int(state.get("solves", 0))

    def failure_advice(self, result: SolveResult) -> str:
        """A remedy for a failed solve; the estimate has already been dropped."""
        if result.converged:
            return ""
        reset = " The carried estimate was dropped; the next solve starts from zero."
        if result.status is SolveStatus.DIVERGED:
            return (
                f"Richardson steps with alpha={self.alpha:g} grew the residual beyond max_growth={self.max_growth:g}: "
                "lower alpha (it must stay below 2/λ_max) or pass alpha=None for minimal-residual steps." + reset
            )
        return super().failure_advice(result) + reset

    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        """Refine the carried estimate (or ``initial``) with ``iterations`` products; see the class docstring."""
        target, dtypes = receive(b)
        check_initial(target, initial)
        start = self._start_from(target, initial)
        b_norm = vectors.norm(target)
        steps = self.iterations
        if start is None:
            point, residual = None, target  # x_0 = 0 is never materialised; r_0 = b is not written over
        else:
            product = apply_hvp(hvp, start)
            scale = _least_squares_scale(target, product)
            residual = vectors.subtract_scaled_into(target, scale, product)  # b − s H x̂, in the product's buffer
            point = vectors.scale_(start, scale)
            steps -= 1
        del target, start
        for _ in range(steps):
            product = apply_hvp(hvp, residual)
            step = self._step(residual, product)
            point = vectors.scale(residual, step) if point is None else vectors.add_scaled_(point, step, residual)
            residual = vectors.subtract_scaled_into(residual, step, product)
            del product
        # A cold start always takes K ≥ 1 steps, so point is set here.
        return self._finish(point, vectors.norm(residual), b_norm, dtypes, steps)

    def _start_from(self, target: Vector, initial: Sequence[Tensor] | None) -> Vector | None:
        """A fresh working copy of the start (``initial``, else the estimate), or None for a cold start."""
        carried = self._carried
        if initial is not None:
            source, carried.last_start = tuple(initial), "initial"
        elif carried.estimate is None:
            carried.last_start = "cold: no estimate yet" if carried.solves == 0 else "cold: estimate dropped"
            return None
        else:
            source, carried.last_start = carried.estimate, "carried"
        if len(source) != len(target) or any(x.shape != part.shape for x, part in zip(source, target)):
            _warn_mismatch(source, target)
            self.reset()
            carried.last_start = "cold: the estimate's shapes no longer match b's"
            return None
        return tuple(x.detach().to(dtype=part.dtype, device=part.device, copy=True) for x, part in zip(source, target))

    def _step(self, residual: Vector, product: Vector) -> Tensor | float:
        if self.alpha is not None:
            return self.alpha
        squared = vectors.dot(product, product)
        curvature = vectors.dot(residual, product)
        return torch.where(squared > 0, curvature / squared.clamp_min(torch.finfo(squared.dtype).tiny), 0)

    def _finish(
        self, point: Vector, residual_norm: Tensor, b_norm: Tensor, dtypes: Sequence[torch.dtype], steps: int
    ) -> SolveResult:
        finite = torch.isfinite(residual_norm) & torch.isfinite(vectors.norm(point))
        grew = residual_norm > self.max_growth * b_norm if self.alpha is not None else torch.zeros_like(finite)
        finite, diverged = torch.stack([finite, grew & finite]).tolist()  # one host sync
        status = SolveStatus.ITERATIONS_EXHAUSTED
        if diverged:
            status = SolveStatus.DIVERGED
        elif not finite:
            status = SolveStatus.NON_FINITE
        if status is SolveStatus.ITERATIONS_EXHAUSTED:
            self._carried.estimate = tuple(part.detach().clone() for part in point)
            self._carried.solves += 1
        else:
            self._carried.estimate = None
        return finish(
            point,
            dtypes,
            status=status,
            iterations=steps,
            residual_norm=residual_norm,
            hvp_count=self.iterations,
            alpha=self.alpha,
        )


def _least_squares_scale(target: Vector, product: Vector) -> Tensor:
    """``max(0, bᵀp / ‖p‖²)``: the multiple of the estimate whose residual ``‖b − s p‖`` is smallest (0 if p = 0)."""
    squared = vectors.dot(product, product)
    scale = vectors.dot(target, product) / squared.clamp_min(torch.finfo(squared.dtype).tiny)
    return torch.where(squared > 0, scale, 0).clamp_min(0)


def _warn_mismatch(source: Sequence[Tensor], target: Sequence[Tensor]) -> None:
    from lightning_hypergrad.engine.hypergradient import HypergradientWarning  # the engine imports the solvers

    warnings.warn(
        f"Amortized: the carried estimate has shapes {[tuple(x.shape) for x in source]} but b has "
        f"{[tuple(part.shape) for part in target]} (the weights changed); starting this solve from zero.",
        HypergradientWarning,
        stacklevel=3,
    )
