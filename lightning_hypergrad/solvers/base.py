"""The contract every inverse-Hessian-vector-product solver follows.

A solver approximates ``x = H⁻¹ b`` for a symmetric ``H`` that it can only touch through products
``hvp(v) = H v``. Vectors are tuples of tensors of any shapes (one part per weight tensor).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector

HVP = Callable[[Vector], Sequence[Tensor]]
"""A Hessian-vector product: takes a vector (tuple of tensors shaped like ``b``), returns ``H v`` alike.

It should return fresh tensors (as ``torch.autograd.grad`` does): solvers write over them to save memory. A
returned tensor that shares memory with the input vector or with another part, or that is an expanded view, is
detected and copied first (:func:`~lightning_hypergrad.engine.vectors.writable`)."""


class SolveStatus(str, enum.Enum):
    """How a solve ended."""

    TOLERANCE_REACHED = "tolerance_reached"
    """The residual met the requested tolerance (or the system was solved directly)."""
    ITERATIONS_EXHAUSTED = "iterations_exhausted"
    """All requested iterations ran; the result is the solver's truncated approximation, as designed."""
    DIVERGED = "diverged"
    """A residual that grew (a Neumann series overshooting or blowing up); the solution was replaced by zeros."""
    NON_FINITE = "non_finite"
    """A Hessian-vector product or the solution held NaN or inf; the solution was replaced by zeros."""
    NEGATIVE_CURVATURE = "negative_curvature"
    """Conjugate gradient met ``pᵀHp ≤ 0`` (H is not positive definite there) and kept the iterate built before it."""


@dataclass(frozen=True)
class SolveResult:
    """What a solver returns: the approximate solution and how it got there.

    Attributes:
        solution: the approximation of ``H⁻¹ b``, one tensor per part of ``b`` with the same shape and dtype.
            Always finite: when the solve fails it is all zeros. A solve never raises for numerical reasons;
            NaN or inf anywhere gives ``status=NON_FINITE`` and ``converged=False``.
        iterations: the solver's own iterations taken (Neumann terms, CG steps); 0 for Identity and Exact.
        residual_norm: a 0-dim tensor; each solver's docstring says exactly which residual it reports.
        converged: True when ``solution`` is a usable approximation; False when the solve failed (diverged,
            non-finite, or met negative curvature before its first step from a zero start). A run stopped after its configured number of
            iterations counts as converged: truncation is how Neumann and capped CG approximate ``H⁻¹ b``.
            :attr:`status` tells whether a tolerance was met.
        status: how the solve ended (:class:`SolveStatus`).
        hvp_count: Hessian-vector products evaluated in total, including any spent choosing a step size.
        alpha: the Neumann/Identity step size that was used (chosen automatically or given), else ``None``.
    """

    solution: Vector
    iterations: int
    residual_norm: Tensor
    converged: bool
    status: SolveStatus
    hvp_count: int
    alpha: float | None = None


class IHVPSolver(abc.ABC):
    """Base class of inverse-Hessian-vector-product solvers.

    Subclasses take explicit, typed constructor arguments with defaults (so LightningCLI can build them from
    YAML ``class_path``/``init_args``) and validate them there.
    """

    @abc.abstractmethod
    def solve(self, hvp: HVP, b: Sequence[Tensor], initial: Sequence[Tensor] | None = None) -> SolveResult:
        """Approximate ``H⁻¹ b``.

        Args:
            hvp: the product ``v ↦ H v``. It is called with vectors in working precision (each part of ``b``
                promoted to at least float32) and may return any floating dtype.
            b: the right-hand side, a sequence of tensors of any shapes and floating dtypes.
            initial: optional starting guess shaped like ``b`` (warm start), used when its residual
                ``‖b − H x0‖`` is below ``‖b‖``; ``None`` (or a worse guess) starts from zero.
        """

    def check_size(self, num_weights: int) -> None:
        """Raise a ``ValueError`` if this solver refuses systems with ``num_weights`` unknowns; most accept any.

        Lets a caller refuse a configuration at set-up instead of at the first solve.
        """
        del num_weights

    def failure_advice(self, result: SolveResult) -> str:
        """A remedy for a failed ``result`` of this solver, fitting its cause; ``""`` when it converged."""
        if result.converged:
            return ""
        if result.status is SolveStatus.NON_FINITE:
            return (
                "A Hessian-vector product was NaN or inf: check the losses for NaN, use a wider precision "
                "(32-true or bf16-mixed instead of 16-mixed) or a smaller loss scale."
            )
        if result.status is SolveStatus.NEGATIVE_CURVATURE:
            return "The Hessian has negative curvature along the validation gradient: pass damping > 0 (e.g. 0.01)."
        return f"The solve {result.status.value}; consider damping > 0 or another solver."

    def with_alpha(self, alpha: float) -> IHVPSolver:
        """A copy of this solver using step size ``alpha``; only solvers with an ``alpha`` argument have one."""
        raise TypeError(
            f"{type(self).__name__} has no step size alpha to set; alpha_from_learning_rate needs Neumann or Identity."
        )

    def state_dict(self) -> dict[str, Any]:
        """State carried between solves (saved in checkpoints by the callback); stateless solvers return ``{}``."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        del state  # stateless by default

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({arguments})"


class Donated(list):
    """A right-hand side handed to :meth:`~lightning_hypergrad.solvers.IHVPSolver.solve` by a caller that keeps no other reference to it.

    The library's solvers empty it (:func:`receive`) and drop each part as soon as they no longer need it, so
    that ``b`` is freed during the solve instead of living until it returns; its tensors are never written
    over. Any other sequence of tensors is the caller's and stays untouched. A solver that does not know this
    class sees an ordinary list of tensors.
    """


def receive(b: Sequence[Tensor]) -> tuple[Vector, tuple[torch.dtype, ...]]:
    """``b`` in working precision (parts already there are not copied) and its parts' dtypes, for the result.

    A :class:`Donated` ``b`` is emptied, so that the returned vector is the only reference the solve holds.
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
    zero: a stale warm start, say from before the weights moved into a region of different curvature, must
    never make a solve worse than a cold one. The choice is made on the device, without a host sync, in the
    buffers of the copy of ``initial`` and of its product (``initial`` and ``b`` are left as they are).
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
