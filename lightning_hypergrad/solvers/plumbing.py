"""What every solver of this package does at its start and end: receive ``b``, call products, choose the start,
build the result. The contract itself (what a solver is and returns) is in :mod:`lightning_hypergrad.solvers.base`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.solvers.base import HVP, Donated, SolveResult, SolveStatus


def receive(b: Sequence[Tensor]) -> tuple[Vector, tuple[torch.dtype, ...]]:
    """``b`` in working precision (parts already there are not copied) and its parts' dtypes, for the result.

    A :class:`~lightning_hypergrad.solvers.base.Donated` ``b`` is emptied, so that the returned vector is the only reference the solve holds.
    """
    parts = tuple(b)
    if isinstance(b, Donated):
        b.clear()
    return vectors.to_working(parts, copy=False), tuple(part.dtype for part in parts)


def apply_hvp(hvp: HVP, vector: Vector) -> Vector:
    """Call ``hvp`` and check that it returned one tensor per part, shaped alike, promoted to the part's dtype.

    Every part of the result belongs to the caller, who may write over it: a part that is ``vector``'s own
    memory (a product passed straight through) or otherwise shared is copied (:func:`~lightning_hypergrad.engine.vectors.owned`).
    """
    product = tuple(hvp(vector))
    if len(product) != len(vector):
        raise ValueError(
            f"hvp returned {len(product)} tensors for a vector of {len(vector)} parts; it must return one per part."
        )
    for index, (out, part) in enumerate(zip(product, vector)):
        if out.shape != part.shape:
            raise ValueError(f"hvp returned shape {tuple(out.shape)} for part {index} of shape {tuple(part.shape)}.")
    return vectors.owned(tuple(out.detach().to(part.dtype) for out, part in zip(product, vector)), avoid=vector)


@dataclass
class Start:
    """Where a solve starts: ``point`` x0 and its ``residual`` b − H x0.

    Attributes:
        point: x0. From a warm start a fresh tensor per part (the solver may update it in place); without one,
            read-only broadcast views of zero that take no memory (:attr:`cold`).
        residual: ``b − H x0``; may be ``b`` itself, so never update it in place.
        hvp_count: products spent choosing the start (0 or 1).
        warm: a 0-dim bool tensor, true when ``point`` is the caller's warm start rather than zero.
        finite: a 0-dim bool tensor, false when the warm start's product held NaN or inf.
        cold: no warm start was passed (known on the host, unlike ``warm``).
    """

    point: Vector
    residual: Vector
    hvp_count: int
    warm: Tensor
    finite: Tensor
    cold: bool = False

    def hand_over(self) -> tuple[Vector, Vector]:
        """``(point, residual)``, no longer held here: once the solver drops them, their memory is freed."""
        point, residual = self.point, self.residual
        self.point = self.residual = ()
        return point, residual


def starting_point(hvp: HVP, b: Vector, initial: Sequence[Tensor] | None) -> Start:
    """The start of a solve of ``H x = b`` (``b`` in working precision), from ``initial`` or from zero.

    ``x0`` is ``initial`` when its residual is smaller than ``‖b‖`` (the residual of starting from zero), else
    zero: a stale warm start, say from before the weights moved into a region of different curvature, is
    dropped when its residual shows it. The residual cannot show error along H's small eigenvalues
    (``‖H e‖ ≪ ‖e‖`` there), so an accepted start can still end farther from ``H⁻¹ b`` than a cold solve of the
    same length would (``tests/solvers/test_contract.py`` has one). The choice is made on the device, without a
    host sync, in the buffers of the copy of ``initial`` and of its product (``initial`` and ``b`` are left as
    they are).
    """
    no = torch.zeros((), dtype=torch.bool, device=b[0].device if b else None)
    if initial is None:
        zeros = tuple(torch.zeros((), dtype=part.dtype, device=part.device).expand(part.shape) for part in b)
        return Start(zeros, b, 0, warm=no, finite=~no, cold=True)
    check_initial(b, initial)
    guess = tuple(x.detach().to(dtype=part.dtype, device=part.device, copy=True) for x, part in zip(initial, b))
    guess_residual = vectors.subtract_scaled_into(b, 1.0, apply_hvp(hvp, guess))  # b − H x0
    guess_norm = vectors.norm(guess_residual)
    better = guess_norm < vectors.norm(b)
    for point, residual, part in zip(guess, guess_residual, b):
        point.masked_fill_(~better, 0)  # not where(): a NaN in a rejected guess must become zero too
        torch.where(better, residual, part, out=residual)
    return Start(guess, guess_residual, 1, warm=better, finite=torch.isfinite(guess_norm))


def check_initial(b: Sequence[Tensor], initial: Sequence[Tensor] | None) -> None:
    """Raise unless ``initial`` is None or has one tensor per part of ``b``, shaped alike."""
    if initial is None:
        return
    initial = tuple(initial)
    if len(initial) != len(b) or any(x.shape != part.shape for x, part in zip(initial, b)):
        raise ValueError(
            "initial must be shaped like b: got shapes "
            f"{[tuple(x.shape) for x in initial]} for b of shapes {[tuple(part.shape) for part in b]}."
        )


def finish(
    solution: Vector,
    dtypes: Sequence[torch.dtype],
    *,
    status: SolveStatus,
    iterations: int,
    residual_norm: Tensor,
    hvp_count: int,
    alpha: float | None = None,
    kept_start: bool = False,
) -> SolveResult:
    """Build the result, each part cast back to its dtype in ``dtypes`` (b's); a failed solve gets a zero solution.

    A solve fails when it diverged or met non-finite values, or when it stopped at negative curvature before
    taking a single step from a zero start (``kept_start`` says a warm start was used: it is then kept).
    """
    converged = status not in (SolveStatus.DIVERGED, SolveStatus.NON_FINITE) and not (
        status is SolveStatus.NEGATIVE_CURVATURE and iterations == 0 and not kept_start
    )
    if not converged:
        solution = vectors.zeros_like(solution)
    return SolveResult(
        solution=tuple(part.to(dtype) for part, dtype in zip(solution, dtypes, strict=True)),
        iterations=iterations,
        residual_norm=residual_norm.detach(),
        converged=converged,
        status=status,
        hvp_count=hvp_count,
        alpha=alpha,
    )
