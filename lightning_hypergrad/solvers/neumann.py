"""Truncated Neumann series for ``H⁻¹ b`` (Lorraine et al. 2020, Algorithm 3)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from lightning_hypergrad.arguments import check_count, check_positive
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.solvers.base import HVP, IHVPSolver, SolveResult, SolveStatus
from lightning_hypergrad.solvers.lanczos import extreme_eigenvalues
from lightning_hypergrad.solvers.overshoot import RITZ_MARGIN, smallest_ritz_value
from lightning_hypergrad.solvers.plumbing import Start, apply_hvp, finish, receive, starting_point


class Neumann(IHVPSolver):
    r"""Approximate ``H⁻¹ b`` by the first ``K + 1`` terms of the Neumann series.

    .. math::

        x_K = \alpha \sum_{j=0}^{K} (I - \alpha H)^j\, b \;=\; H^{-1}\big(I - (I - \alpha H)^{K+1}\big)\, b

    with ``K = iterations`` and ``α = alpha``: K Hessian-vector products, no matrix ever formed, memory O(P).
    The series converges to ``H⁻¹ b`` iff every eigenvalue of ``αH`` along ``b`` lies in ``(0, 2)``, i.e.
    H is positive definite there and ``0 < α < 2/λ_max(H)``. Truncated, it equals differentiating through K + 1
    steps of gradient descent with learning rate α started at a stationary point (Lorraine et al., Theorem 1).

    ``alpha="auto"`` picks ``α = 1/θ`` where θ is the largest Ritz value after ``lanczos_steps`` Lanczos steps
    started from ``b`` (see :func:`~lightning_hypergrad.solvers.lanczos.extreme_eigenvalues`; those products are
    counted in ``hvp_count``). When the smallest Ritz value θ_min of the same run is negative (an indefinite
    Hessian, e.g. an LSTM early in training), α is capped at ``ln 2 / (K |θ_min|)`` so that the component along
    negative curvature grows by at most about 2× over the K terms instead of diverging. With
    ``lanczos_every = n > 1`` the estimate is reused for n solves (it is part of :meth:`state_dict`, so it
    survives a resume): when such a reused α overshoots (detected as below, e.g. after the weights moved into
    sharper curvature) the solve estimates θ again and reruns the series, and a Rayleigh quotient of the terms
    above θ replaces it for the next solve. Lanczos
    is power iteration with the Rayleigh–Ritz refinement over all the vectors it has seen, at the same cost of
    one product per step and O(P) memory; θ never exceeds λ_max and approaches it far faster than a power
    iterate does, keeping ``αλ_max`` in ``[1, 2)``. Starting from ``b`` is deliberate: only the directions
    present in ``b`` enter the series. Should θ still fall below ``λ_max/2``, the overshoot test below reports it.

    Failure is detected after the loop, without a host sync per term, and reported with ``converged=False``
    and a zero solution: ``status=NON_FINITE`` when any product or the sum holds NaN or inf, and
    ``status=DIVERGED`` when

    - the series overshoots, shown by either sign of an eigenvalue with ``αλ > 2``, whose component flips sign
      and grows by ``|1 − αλ|`` every term: (a) the last term is larger than the one before and points against
      it, or (b) a Ritz value of ``I − αH`` on the span of the last two terms before the final product (from
      inner products the loop already has, no extra product) lies below ``−1.01``. (b) is proof, not a
      heuristic: Ritz values lie inside the spectrum along b. What is not detected is an overshooting component
      too small to move either test yet: its share of the last terms is then still below rounding-level
      influence on (b), and its error in the sum is at most ``α Σ_j |1 − αλ|^j`` times that small share;
    - the terms grew by more than ``max_growth``: ``‖(I − αH)^K b‖ > max_growth · ‖b‖``, or at one of the terms
      1, 2, 4, 8, … (so a series that overflows to inf later is still reported as diverged); or
    - ``alpha="auto"`` finds no curvature along a nonzero b (θ ≤ 0: no step size makes the series converge).

    Slower, same-signed growth comes from negative curvature along ``b`` (a saddle region, common early in
    training). Up to ``max_growth`` it is kept: the truncated series is then still exactly the hypergradient of
    K + 1 unrolled gradient-descent steps of size α, a finite and meaningful answer even where the implicit
    function theorem's local-minimum assumption fails.

    ``residual_norm`` is ``‖(I − αH)^K b‖``: the exact residual ``‖b − H x_{K−1}‖`` of the previous partial sum,
    and an upper bound on the returned ``x_K``'s residual whenever the series converges.

    Args:
        iterations: K, the number of Hessian-vector products (series terms after the first), ``>= 1``.
        alpha: the step α ``> 0``, or ``"auto"`` to estimate ``1/λ_max`` by Lanczos.
        lanczos_steps: products spent estimating ``λ_max`` when ``alpha="auto"``, ``>= 1``.
        max_growth: the largest tolerated ratio ``‖(I − αH)^K b‖ / ‖b‖``, ``> 0``.
        lanczos_every: with ``alpha="auto"``, estimate ``λ_max`` afresh every this many solves and reuse it in
            between, ``>= 1`` (1: every solve).

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
        lanczos_every: int = 1,
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
        self.lanczos_every = check_count("Neumann", "lanczos_every", lanczos_every, minimum=1)
        self._largest_eigenvalue: float | None = None  # the cached estimate of λ_max along b
        self._smallest_eigenvalue = 0.0  # and of λ_min, when negative: it caps α (see _step_size)
        self._solves_since_estimate = 0

    def with_alpha(self, alpha: float) -> Neumann:
        """A copy of this solver with step size ``alpha`` (validated as in the constructor)."""
        solver = copy.copy(self)
        solver.alpha = check_positive("Neumann", "alpha", alpha)
        return solver

    def state_dict(self) -> dict[str, Any]:
        """The cached ``λ_max`` estimate and the solves since it was made (for ``lanczos_every > 1``)."""
        return {
            "largest_eigenvalue": self._largest_eigenvalue,
            "smallest_eigenvalue": self._smallest_eigenvalue,
            "solves_since_estimate": self._solves_since_estimate,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (missing keys: estimate afresh at the next solve)."""
        self._largest_eigenvalue = state.get("largest_eigenvalue")
        self._smallest_eigenvalue = float(state.get("smallest_eigenvalue", 0.0))
        self._solves_since_estimate = int(state.get("solves_since_estimate", 0))

    def reset_state(self) -> None:
        """Forget the cached eigenvalue estimates: the next solve with ``alpha="auto"`` estimates them afresh."""
        self.load_state_dict({})

    def failure_advice(self, result: SolveResult) -> str:
        """A remedy for a failed solve that fits this configuration and the cause."""
        if result.converged:
            return ""
        if self.alpha == "auto":
            chosen = "" if result.alpha is None else f"alpha={result.alpha:.3g} "
            step = f"alpha='auto' ({chosen}from {self.lanczos_steps} Lanczos steps): raise lanczos_steps for a closer λ_max"
        else:
            step = f"alpha={self.alpha:g}, which must stay below 2/λ_max: lower alpha or use alpha='auto'"
        if result.status is SolveStatus.NON_FINITE:
            return (
                f"NaN or inf appeared: if the losses are finite, the series overflowed with {step}. "
                + super().failure_advice(result)
            )
        return f"The Neumann series diverged with {step}; where the Hessian has strong negative curvature pass damping > 0."

    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        """Approximate ``H⁻¹ b`` as the class docstring describes; arguments as in :meth:`~lightning_hypergrad.solvers.IHVPSolver.solve`."""
        target, dtypes = receive(b)
        start = starting_point(hvp, target, initial)
        del target  # the start holds it now; the series lets go of it unless a rerun may need it
        if self.alpha != "auto":
            series = _series(hvp, start, self.alpha, self.iterations, self.max_growth, keep_start=False)
            return _result(series, dtypes, start, self.iterations, start.hvp_count + self.iterations, self.alpha)

        hvp_count = start.hvp_count + self.iterations
        reused = self._largest_eigenvalue is not None and self._solves_since_estimate < self.lanczos_every
        largest = self._largest_eigenvalue if reused else self._estimate(hvp, start.residual)
        hvp_count += 0 if reused else self.lanczos_steps
        # A reused estimate may overshoot; the rerun then starts afresh from the same start, so it is kept.
        series = _series(hvp, start, self._step_size(largest), self.iterations, self.max_growth, keep_start=reused)
        if reused and bool(series.overshoot & series.finite):
            # The weights moved into sharper curvature since the estimate: estimate again and redo the series.
            del series  # its sum is not needed: free it before the rerun builds another
            largest = self._estimate(hvp, start.residual)
            series = _series(hvp, start, self._step_size(largest), self.iterations, self.max_growth, keep_start=False)
            hvp_count += self.lanczos_steps + self.iterations
        self._solves_since_estimate += 1
        if math.isnan(largest):
            series = series._replace(finite=torch.zeros_like(series.finite))
        elif largest <= 0 and bool(series.initial_norm > 0):
            series = series._replace(overshoot=torch.ones_like(series.overshoot))  # no curvature along b
        elif self._largest_eigenvalue is not None and float(series.curvature) > self._largest_eigenvalue:
            self._largest_eigenvalue = float(series.curvature)  # the terms saw sharper curvature: use it next time
        return _result(series, dtypes, start, self.iterations, hvp_count, self._step_size(largest))

    def _estimate(self, hvp: HVP, residual: Vector) -> float:
        """``λ_max`` (returned) and ``λ_min`` along ``residual`` by Lanczos; cached while finite and positive."""
        smallest, largest = (float(value) for value in extreme_eigenvalues(hvp, residual, self.lanczos_steps))
        self._largest_eigenvalue = largest if math.isfinite(largest) and largest > 0 else None
        self._smallest_eigenvalue = smallest if math.isfinite(smallest) else 0.0
        self._solves_since_estimate = 0
        return largest

    def _step_size(self, largest: float) -> float:
        """α = 1/θ_max, capped at ln 2 / (K |θ_min|) when θ_min < 0; NaN stays NaN, no curvature gives 1.

        The cap bounds the growth ``(1 + α|λ_min|)^K`` of a component along negative curvature to about 2
        over the K terms (an indefinite Hessian early in training, measured on LSTMs), so the series does not
        diverge where it would otherwise grow past ``max_growth``.
        """
        if math.isnan(largest):
            return largest
        alpha = 1.0 / largest if largest > 0 else 1.0
        if self._smallest_eigenvalue < 0:
            alpha = min(alpha, math.log(2) / (self.iterations * -self._smallest_eigenvalue))
        return alpha


class _Series(NamedTuple):
    solution: Vector
    residual_norm: Tensor
    initial_norm: Tensor  # ‖r0‖ = ‖b − H x0‖
    finite: Tensor
    overshoot: Tensor  # overshoot or growth beyond max_growth: the series diverged
    curvature: Tensor  # the largest Rayleigh quotient of H among the terms checked


def _series(hvp: HVP, start: Start, alpha: float, iterations: int, max_growth: float, keep_start: bool) -> _Series:
    """``x = x0 + α Σ_{j≤K} (I − αH)^j r0`` in working precision.

    Above the product in flight it holds the current term and the running sum: each term is written over the
    product it came from, so the previous term (at first r0, which may be b) is freed as soon as no one else
    holds it. With ``keep_start`` the start keeps x0 and r0 for a rerun (one or two more vectors).
    """
    point, term = (start.point, start.residual) if keep_start else start.hand_over()
    initial_norm = vectors.norm(term)
    if start.cold:  # x0 is a read-only view of zero: the sum starts as α r0
        solution = vectors.scale(term, alpha)
    elif keep_start:
        solution = vectors.add_scaled(point, alpha, term)
    else:  # x0 is the start's own buffer (the warm start, or zeros where it was rejected)
        solution = vectors.add_scaled_(point, alpha, term)
    del point
    moments = []  # (‖t_j‖², t_jᵀ H t_j) for the last two products: the inputs of the overshoot tests
    # Growth seen at terms 1, 2, 4, 8, …: a series that overflows later still reports that it diverged.
    grew_early = torch.zeros((), dtype=torch.bool, device=initial_norm.device)
    for step in range(iterations):
        product = apply_hvp(hvp, term)
        if step >= iterations - 2:
            moments.append((vectors.dot(term, term), vectors.dot(term, product)))
        term = vectors.subtract_scaled_into(term, alpha, product)  # t_{j+1} = t_j − α H t_j, in the product's buffer
        del product
        vectors.add_scaled_(solution, alpha, term)
        if step & (step + 1) == 0 or step == iterations - 1:  # the last one is the residual: one pass for both
            residual_norm = vectors.norm(term)
            grew_early |= torch.isfinite(residual_norm) & (residual_norm > max_growth * initial_norm)

    # NaN or inf in any term stays in every later one (t_{j+1} = t_j − α H t_j), so the last term's norm tells;
    # the sum's norm (one pass, not four as an elementwise check) catches an overflow of α Σ t_j itself.
    finite = torch.isfinite(residual_norm) & torch.isfinite(vectors.norm(solution))
    previous_squared, previous_curvature = moments[-1]
    # (a) growing and sign-flipping, above the rounding floor where noise could mimic it.
    significant = residual_norm > initial_norm * torch.finfo(residual_norm.dtype).eps ** 0.5
    flips = (previous_squared - alpha * previous_curvature) < 0  # t_Kᵀ t_{K−1} = ‖t_{K−1}‖² − α t_{K−1}ᵀ H t_{K−1}
    grows = residual_norm.to(previous_squared.dtype) ** 2 > previous_squared
    overshoot = (grows & flips & significant) | (smallest_ritz_value(moments, alpha) < -(1 + RITZ_MARGIN))
    grew_too_much = residual_norm > max_growth * initial_norm
    quotients = [torch.where(squared > 0, curvature / squared, 0) for squared, curvature in moments]
    diverged = ((overshoot | grew_too_much) & finite) | grew_early  # finite growth, not NaN's comparisons
    return _Series(solution, residual_norm, initial_norm, finite, diverged, torch.stack(quotients).max())


def _result(
    series: _Series, dtypes: Sequence[torch.dtype], start: Start, iterations: int, hvp_count: int, alpha: float
):
    finite, overshoot = torch.stack([series.finite & start.finite, series.overshoot]).tolist()  # one host sync
    status = SolveStatus.ITERATIONS_EXHAUSTED
    if overshoot:  # before non-finite: an overflow that follows growth is divergence, not a NaN product
        status = SolveStatus.DIVERGED
    elif not finite:
        status = SolveStatus.NON_FINITE
    return finish(
        series.solution,
        dtypes,
        status=status,
        iterations=iterations,
        residual_norm=series.residual_norm,
        hvp_count=hvp_count,
        alpha=alpha,
    )
