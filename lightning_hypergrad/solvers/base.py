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

from torch import Tensor

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
    NOT_RUN = "not_run"
    """Nothing was solved, because the caller had nothing to solve (a NaN or inf loss, in a hyperstep or given to
    ``hypergradient_with_solve``, or a hyperstep with no usable α); the solution is zeros, no product was spent
    and the residual is NaN. No solver returns it."""


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
            non-finite, or met negative curvature before its first step from a zero start) or never ran
            (``NOT_RUN``). A run stopped after its configured number of iterations counts as converged:
            truncation is how Neumann and capped CG approximate ``H⁻¹ b``. :attr:`status` tells whether a
            tolerance was met.
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
        if result.status is SolveStatus.NOT_RUN:
            return "No solve ran: the reason given with this result (a non-finite loss, no usable α) comes first."
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

    def reset_state(self) -> None:
        """Forget the state carried between solves, because the system changed shape or meaning (the weights
        it was built for are no longer the trainable ones). Solvers whose state depends on the weights (a
        basis of weight-sized vectors, an eigenvalue estimate of the Hessian) override it; by default nothing.
        """
        return  # stateless by default

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({arguments})"


class Donated(list):
    """A right-hand side handed to :meth:`~lightning_hypergrad.solvers.IHVPSolver.solve` by a caller that keeps no other reference to it.

    The library's solvers empty it (:func:`~lightning_hypergrad.solvers.plumbing.receive`) and drop each part as soon as they no longer need it, so
    that ``b`` is freed during the solve instead of living until it returns; its tensors are never written
    over. Any other sequence of tensors is the caller's and stays untouched. A solver that does not know this
    class sees an ordinary list of tensors.
    """
