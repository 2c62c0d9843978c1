"""The implicit-function-theorem hypergradient: the one place its formula is implemented."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_hypergrad.arguments import check_non_negative, check_positive
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.gradients import gradients
from lightning_hypergrad.engine.inputs import check_inputs, check_train_gradient, invalid_loss_reason, non_finite_flags
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.solvers.base import Donated, IHVPSolver, SolveResult, SolveStatus
from lightning_hypergrad.solvers.neumann import Neumann


class HypergradientWarning(UserWarning):
    """A hypergradient came from a failed solve, a hyperstep was skipped, or a hyperparameter looks misconfigured."""


@dataclass(frozen=True)
class HypergradientResult:
    """A hypergradient with what it was made of.

    Attributes:
        hypergradients: ``dL_V/dλ``, one tensor per hyperparameter, same shape and dtype, detached.
        direct: the direct term ``∂L_V/∂λ`` alone, in working precision (at least float32). Where
            ``val_loss`` does not reach a hyperparameter this is a read-only broadcast view of zero (no memory).
        solve: the inverse-Hessian solve of ``H x = ∂L_V/∂w`` (its ``solution`` is ``x``, for warm starts).
        train_gradient_norm: ``‖∂L_T/∂w‖`` at these weights, a 0-dim tensor: how far w is from the
            stationary point the implicit function theorem assumes (NaN when not computed).
        loss_problem: ``None`` when the result is valid; else why the losses could not give a hypergradient
            (a NaN or inf loss, here or on another process): nothing was solved, ``hypergradients`` and ``direct``
            are zeros, ``solve.status`` is ``NOT_RUN`` (no products spent, a NaN residual).
    """

    hypergradients: tuple[Tensor, ...]
    direct: tuple[Tensor, ...]
    solve: SolveResult
    train_gradient_norm: Tensor
    loss_problem: str | None = None


def hypergradient(
    train_loss: Tensor,
    val_loss: Tensor,
    params: Sequence[Tensor],
    hparams: Sequence[Tensor],
    solver: IHVPSolver | None = None,
    *,
    damping: float = 0.0,
    loss_scale: float = 1.0,
    average: Callable[[Sequence[Tensor]], Sequence[Tensor]] | None = None,
) -> tuple[Tensor, ...]:
    r"""The hypergradient ``dL_V/dλ`` at the current weights, by the implicit function theorem.

    .. math::

        \frac{dL_V}{d\lambda} = \frac{\partial L_V}{\partial \lambda}
            - \Big(\frac{\partial^2 L_T}{\partial w\, \partial \lambda}\Big)^{\!\top} x,
        \qquad H x = \frac{\partial L_V}{\partial w}, \qquad H = \frac{\partial^2 L_T}{\partial w\, \partial w}

    ``L_T`` is ``train_loss``, ``L_V`` is ``val_loss``, ``w`` are ``params`` and ``λ`` are ``hparams``. The
    formula is exact when w minimises ``L_T`` (``∂L_T/∂w = 0``); elsewhere it is the usual approximation.
    ``x ≈ H⁻¹ ∂L_V/∂w`` comes from ``solver`` (default ``Neumann()``), which only sees Hessian-vector products.

    Cost: one gradient of ``L_V``; one gradient ``g = ∂L_T/∂w`` built once with ``create_graph=True``; each
    Hessian-vector product ``Hv = ∂(gᵀv)/∂w`` is a reverse pass through that one retained graph (so every
    product sees the same dropout masks and batch); the mixed term is one more reverse pass ``∂(gᵀx)/∂λ``.
    Memory is O(P + H) on top of the two graphs, whatever the number of solver iterations.

    Args:
        train_loss: scalar ``L_T(λ, w)`` still attached to its graph.
        val_loss: scalar ``L_V(λ, w)`` still attached to its graph (it may or may not depend on λ).
        params: the weights w, tensors that require grad.
        hparams: the hyperparameters λ, tensors that require grad, disjoint from ``params``.
        solver: an :class:`~lightning_hypergrad.solvers.IHVPSolver`; ``None`` means ``Neumann()``.
        damping: μ ``>= 0``; the solve uses ``H + μI`` in place of H (Tikhonov damping), which biases the
            hypergradient towards the one-step ``Identity(1/μ)`` answer but keeps the system positive definite
            where H has small negative eigenvalues (non-convex networks). 0 means the plain IFT formula.
        loss_scale: S ``> 0``; both losses are multiplied by S before differentiating and every product is
            divided by S afterwards (in float32 or wider). The result is unchanged in exact arithmetic; under
            float16 autocast a large S (the GradScaler's scale) keeps small gradients from flushing to zero. An
            overflow shows up as a non-finite result (the solver reports divergence).
        average: a function averaging a vector across processes (e.g. an all-reduce mean). When given, the
            validation gradient with the direct term (and two flags: whether each loss is finite), every
            Hessian-vector product and the mixed term are averaged, so every process solves the same system:
            that of the mean of the processes' losses. For equal local batch sizes and losses that are means over
            examples this is exactly the single-process answer on the concatenated batches; BatchNorm in
            training mode (per-process statistics) breaks that equality. ``None``: local only.

    Returns:
        One detached tensor per hyperparameter with its shape and dtype; exact zeros where a hyperparameter
        influences neither loss. Neither the graphs nor any ``.grad`` field is modified. If the solver fails
        (diverges or meets negative curvature) a :class:`HypergradientWarning` is issued and the implicit term
        is left out; if a loss is NaN or inf nothing is solved, zeros are returned and a
        :class:`HypergradientWarning` says the result is invalid. Use :func:`hypergradient_with_solve` to
        inspect the solve instead.

    Raises:
        RuntimeError: a loss is computed through ``torch.utils.checkpoint(..., use_reentrant=True)``, which
            cannot be differentiated twice; pass ``use_reentrant=False``.

    Example:
        >>> import torch
        >>> from lightning_hypergrad import hypergradient
        >>> from lightning_hypergrad.solvers import Exact
        >>> w = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
        >>> decay = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
        >>> train_loss = ((w - 2) ** 2).sum() + (decay.exp() * w**2).sum()   # minimised at w = 2 / (1 + e^λ) = 1
        >>> val_loss = ((w - 3) ** 2).sum()
        >>> hypergradient(train_loss, val_loss, [w], [decay], Exact())        # dL_V/dλ = 2(w − 3) · dw/dλ = −4 · −½
        (tensor([2.], dtype=torch.float64),)
    """
    losses = [train_loss, val_loss]
    del train_loss, val_loss  # handed over below, so that this frame does not keep their graphs through the solve
    result = hypergradient_with_solve(
        losses.pop(0), losses.pop(0), params, hparams, solver, damping=damping, loss_scale=loss_scale, average=average
    )
    if result.loss_problem is not None:
        warnings.warn(
            f"The hypergradient is invalid: {result.loss_problem}. Nothing was solved; zeros are returned.",
            HypergradientWarning,
            stacklevel=2,
        )
    elif not result.solve.converged:
        used = solver or Neumann()
        warnings.warn(
            f"The inverse-Hessian solve failed ({result.solve.status.value}, residual norm "
            f"{float(result.solve.residual_norm):.3g}) with {used!r}; the hypergradient holds the direct term only. "
            + used.failure_advice(result.solve),
            HypergradientWarning,
            stacklevel=2,
        )
    return result.hypergradients


def hypergradient_with_solve(
    train_loss: Tensor,
    val_loss: Tensor,
    params: Sequence[Tensor],
    hparams: Sequence[Tensor],
    solver: IHVPSolver | None = None,
    *,
    damping: float = 0.0,
    loss_scale: float = 1.0,
    average: Callable[[Sequence[Tensor]], Sequence[Tensor]] | None = None,
    initial: Sequence[Tensor] | None = None,
    train_gradient: Sequence[Tensor] | None = None,
) -> HypergradientResult:
    """:func:`hypergradient`, also returning the solve's diagnostics; it never warns.

    Args:
        initial: a warm start for the solver, shaped like ``params`` (e.g. the previous
            ``result.solve.solution``); ``None`` starts from zero.
        train_gradient: ``∂L_T/∂params`` already built from ``train_loss`` with ``create_graph=True`` (say, by
            the weight step's own backward), one tensor per param, used instead of differentiating ``train_loss``
            again (which then only has its finiteness checked); needs ``loss_scale == 1``.

    A failed solve (``result.solve.converged`` false) contributes a zero implicit term. A NaN or inf loss gives
    no solve at all: ``result.loss_problem`` says why, and the result holds zeros (every process agrees on it
    when ``average`` is given: the losses' finiteness flags travel with the validation gradient's average).

    Memory: above the two graphs, the products and the mixed term need nothing a solver does not (Neumann its
    running sum, conjugate gradient its iterate and residual, see ``benchmarks/hypergradient_memory.py``): v is
    handed to the solver, which frees it after its first product. This function drops its references to the
    losses once differentiated, so a caller who passes them without keeping them lets go of whatever part of
    their graphs the training gradient's graph does not use.
    """
    params, hparams = check_inputs(train_loss, val_loss, params, hparams, solver)
    damping = check_non_negative("damping", damping)
    loss_scale = check_positive("hypergradient", "loss_scale", loss_scale)
    given = None if train_gradient is None else check_train_gradient(train_gradient, params, loss_scale)
    solver = Neumann() if solver is None else solver
    unscale = 1.0 / loss_scale

    def reduce(vector: Sequence[Tensor]) -> Vector:
        return tuple(average(vector)) if average is not None else tuple(vector)

    # v = ∂L_V/∂w and the direct term ∂L_V/∂λ, in one reverse pass; one average, with the losses' finiteness.
    flags = non_finite_flags(train_loss, val_loss)
    *validation_gradients, agreed = reduce(
        (*gradients(val_loss * loss_scale, params + hparams, unscale=unscale), flags)
    )
    problem = invalid_loss_reason(train_loss, val_loss, flags, agreed)
    if problem is not None:  # the derivatives of a NaN/inf loss mean nothing: solve nothing
        return _invalid_result(params, hparams, problem)
    direct = validation_gradients[len(params) :]
    # v is handed to the solver, which frees it once used (this function keeps no reference).
    validation_gradient = Donated(validation_gradients[: len(params)])
    del validation_gradients

    # g = S ∂L_T/∂w with its own graph, built once: the Hessian and mixed products below all differentiate it.
    built = gradients(train_loss * loss_scale, params, create_graph=True) if given is None else given
    train_gradient = _TrainGradient(built, unscale, reduce)
    # Parts of the losses' graphs that g's graph does not need are freed now, unless the caller keeps the losses.
    del train_loss, val_loss, built, given

    def hessian_vector_product(vector: Vector) -> Vector:
        product = train_gradient.product(vector, params)
        return vectors.add_scaled_(vectors.owned(product, avoid=vector), damping, vector) if damping else product

    # x ≈ (H + μI)⁻¹ v (H is symmetric, so vᵀH⁻¹ = xᵀ).
    solve = solver.solve(hessian_vector_product, validation_gradient, initial)
    del validation_gradient  # emptied by the library's solvers; another solver may have left v in it
    # dL_V/dλ = ∂L_V/∂λ − (∂²L_T/∂w∂λ)ᵀ x, the mixed term being ∂(gᵀx)/∂λ.
    if solve.converged:
        mixed = train_gradient.product(solve.solution, hparams)
    else:
        mixed = vectors.zeros_like(direct)
    hypergradients = _combine(direct, mixed, solve.solution, hparams)
    return HypergradientResult(hypergradients, direct, solve, train_gradient.norm)


def _invalid_result(params: Vector, hparams: Vector, problem: str) -> HypergradientResult:
    """Zeros, a solve with status ``NOT_RUN`` (nothing spent, a NaN residual), and the ``problem``."""
    nan = torch.tensor(math.nan, device=hparams[0].device)
    solution = tuple(torch.zeros_like(w, dtype=vectors.working_dtype(w.dtype)).detach() for w in params)
    solve = SolveResult(
        solution, iterations=0, residual_norm=nan, converged=False, status=SolveStatus.NOT_RUN, hvp_count=0
    )
    direct = tuple(torch.zeros_like(h, dtype=vectors.working_dtype(h.dtype)).detach() for h in hparams)
    zeros = tuple(torch.zeros_like(h).detach() for h in hparams)
    return HypergradientResult(zeros, direct, solve, nan, loss_problem=problem)


class _TrainGradient:
    """``g = S ∂L_T/∂w`` with its graph, and the products ``∂(gᵀv)/∂inputs / S`` through that graph."""

    def __init__(self, gradient: Vector, unscale: float, reduce: Callable[[Sequence[Tensor]], Vector]) -> None:
        self.gradient, self.unscale, self.reduce = gradient, unscale, reduce
        self.differentiable = [index for index, part in enumerate(gradient) if part.requires_grad]
        self.outputs = [gradient[index] for index in self.differentiable]
        self.norm = vectors.norm([part.detach() for part in gradient]) * unscale  # ‖∂L_T/∂w‖

    def product(self, vector: Sequence[Tensor], inputs: Vector) -> Vector:
        """One reverse pass through g's graph, averaged across processes if asked; the caller owns the result."""
        if not self.outputs:
            return self.reduce(vectors.zeros_like(inputs))
        grad_outputs = [vector[index].to(self.gradient[index].dtype) for index in self.differentiable]
        products = torch.autograd.grad(
            self.outputs, inputs, grad_outputs, retain_graph=True, allow_unused=True, materialize_grads=True
        )
        del grad_outputs  # a half-precision cast of v: free it before the average and the unscale
        products = vectors.to_working(products, copy=False)
        if self.unscale != 1.0:
            products = vectors.scale_(vectors.owned(products, avoid=vector), self.unscale)
        return self.reduce(products)


def _combine(direct: Vector, mixed: Vector, solution: Vector, hparams: Vector) -> tuple[Tensor, ...]:
    """``direct − mixed`` per hyperparameter, in its dtype.

    Written over ``mixed`` (a fresh product, so no weight-sized copy) where that is safe: autograd may hand back
    a tensor it was given (an identity-like mixed term returns x itself) or an expanded view.
    """
    return tuple(
        (
            torch.sub(direct_part, mixed_part, out=mixed_part)  # one pass; elementwise, so writing over it is safe
            if keep and mixed_part.dtype == torch.promote_types(direct_part.dtype, mixed_part.dtype)
            else direct_part - mixed_part
        ).to(hparam.dtype)
        for direct_part, mixed_part, hparam, keep in zip(direct, mixed, hparams, vectors.writable(mixed, solution))
    )
