"""The one decision of a hyperstep: take it or skip it, and why.

:func:`decide` weighs, in order, the losses (a NaN/inf loss or an unusable α: no solve ran), the solve that ran
(its remedy comes from the solver that actually solved this step), the hypergradient (non-finite), and finally the
step itself (taken under a :class:`~lightning_hypergrad.lightning.guard.StepGuard`, which undoes it if λ became
non-finite). Every reason is one sentence, the cause then a remedy, quoted by the skip warning. Under several
processes each input is agreed on first (one small all-reduce), so all processes decide alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lightning_hypergrad.engine.hypergradient import HypergradientResult, HypergradientWarning
from lightning_hypergrad.lightning import contract, distributed, records
from lightning_hypergrad.solvers import IHVPSolver
from lightning_hypergrad.solvers.base import SolveResult, SolveStatus


@dataclass(frozen=True)
class HyperstepResult(HypergradientResult):
    """A hyperstep's :class:`~lightning_hypergrad.HypergradientResult` with what the decision needs besides it.

    Attributes:
        hypergradients: as in :class:`~lightning_hypergrad.HypergradientResult` (zeros when no solve ran).
        direct: as in :class:`~lightning_hypergrad.HypergradientResult`.
        solve: as in :class:`~lightning_hypergrad.HypergradientResult`.
        train_gradient_norm: as in :class:`~lightning_hypergrad.HypergradientResult`.
        solver: the solver that ran this step: the callback's, or its copy with α set from the weights' learning
            rate (``alpha_from_learning_rate``); its advice is the one a failed solve needs.
        validation_loss: the hyper batch's validation loss, or ``None`` when unknown.
        loss_problem: why no solve could run (:func:`loss_problem`, or the engine's own check), else ``None``.
        alpha_from_learning_rate: whether the solver's α was the weights' learning rate; a remedy that says to
            lower α then says to lower that learning rate.
        loss_scale: the hyperstep's own loss scale it was computed at under a ``GradScaler``
            (:class:`~lightning_hypergrad.lightning.loss_scale.HyperstepLossScale`); ``None`` without one.
    """

    solver: IHVPSolver | None = None
    validation_loss: float | None = None
    alpha_from_learning_rate: bool = False
    loss_scale: float | None = None

    @classmethod
    def of(
        cls,
        result: HypergradientResult,
        solver: IHVPSolver,
        validation_loss: float | None,
        alpha_from_learning_rate: bool = False,
    ) -> HyperstepResult:
        """``result`` with the solver that produced it, the validation loss it differentiated and where α came
        from (see the attributes)."""
        return cls(
            hypergradients=result.hypergradients,
            direct=result.direct,
            solve=result.solve,
            train_gradient_norm=result.train_gradient_norm,
            loss_problem=result.loss_problem,
            solver=solver,
            validation_loss=validation_loss,
            alpha_from_learning_rate=alpha_from_learning_rate,
        )


def loss_failure(module: nn.Module, train_loss: object, validation_loss: object) -> str | None:
    """Why these losses cannot give a hypergradient (one is NaN or inf here or on another process), or None.

    Raises the contract's clear error first if either is not a floating scalar tensor.
    """
    train_loss = contract.check_loss(module, "training_loss", train_loss)
    validation_loss = contract.check_loss(module, "validation_loss", validation_loss)
    local = [not bool(torch.isfinite(loss.detach())) for loss in (train_loss, validation_loss)]
    anywhere = distributed.any_process(local, device=train_loss.device)
    for name, loss, here, somewhere in zip(("training", "validation"), (train_loss, validation_loss), local, anywhere):
        if here:
            return (
                f"the {name} loss of the hyperstep's batch is {float(loss.detach())}; check that batch and the loss "
                "for NaN/inf (log of 0, division by 0, an overflowing transform of a hyperparameter)"
            )
        if somewhere:
            return f"the {name} loss is not finite on another process; check the batches and the loss for NaN/inf"
    return None


def loss_problem(
    module: Any, train_loss: object, validation_loss: object, alpha_from_learning_rate: bool
) -> str | None:
    """Why this hyperstep cannot be computed (:func:`loss_failure`, :func:`learning_rate_failure`), or None."""
    failure = loss_failure(module, train_loss, validation_loss)
    if failure is None and alpha_from_learning_rate:
        failure = learning_rate_failure(module.trainer)
    return failure


def learning_rate_failure(trainer: Any) -> str | None:
    """Why α cannot follow the weights' learning rate now (it is 0, negative or not finite), or None."""
    rate = float(trainer.optimizers[0].param_groups[0]["lr"])
    if math.isfinite(rate) and rate > 0:
        return None
    return (
        f"alpha_from_learning_rate=True but the weights' learning rate is {rate} (a schedule drove it there), which "
        "is no step size for the solver; the weights are not moving either. Set alpha_from_learning_rate=False "
        "with a fixed alpha to keep tuning"
    )


def unsolved_result(
    weights: Sequence[Tensor], named: Sequence[tuple[str, Tensor]], validation_loss: float | None, problem: str
) -> HyperstepResult:
    """The result of a hyperstep whose losses forbade a solve: zeros, a solve with status ``NOT_RUN`` (a NaN
    residual, no products, nothing measured: the training gradient's norm is NaN too), and the ``problem``."""
    hyperparameters = [parameter for _, parameter in named]
    zeros = tuple(torch.zeros_like(parameter, memory_format=torch.contiguous_format) for parameter in hyperparameters)
    solve = SolveResult(
        solution=tuple(torch.zeros_like(w).detach() for w in weights),
        iterations=0,
        residual_norm=torch.tensor(math.nan),
        converged=False,
        status=SolveStatus.NOT_RUN,
        hvp_count=0,
    )
    return HyperstepResult(
        hypergradients=zeros,
        direct=zeros,
        solve=solve,
        train_gradient_norm=torch.tensor(math.nan),
        validation_loss=validation_loss,
        loss_problem=problem,
    )


def skip_reason(result: HyperstepResult, hypergradient_norm: Tensor, failed_anywhere: bool) -> str | None:
    """Why this hypergradient must not be applied, with a remedy, or None: its losses, a failed solve (here or on
    another process; the remedy is ``result.solver``'s), or a non-finite hypergradient."""
    if result.loss_problem is not None:
        return result.loss_problem
    if failed_anywhere:
        solve = result.solve
        if solve.converged:
            return "the solve failed on another process; see that process's batch"
        advice = result.solver.failure_advice(solve) if result.solver is not None else "consider damping"
        if result.alpha_from_learning_rate and solve.status is SolveStatus.DIVERGED and solve.alpha is not None:
            advice += (
                f" With alpha_from_learning_rate=True that alpha ({solve.alpha:g}) is the weights' learning rate: "
                "lower the weights' learning rate, or set alpha_from_learning_rate=False for the solver's own alpha"
            )
        scaled = "" if result.loss_scale is None else f" at the hyperstep's loss scale {result.loss_scale:g}"
        if scaled and solve.status is SolveStatus.NON_FINITE:
            scaled += ", the lowest it backed off to (HyperstepLossScale's retries and min_scale bound the back-off)"
        return f"the solve failed{scaled} ({solve.status.value}, residual {float(solve.residual_norm):.3g}); {advice}"
    if not bool(torch.isfinite(hypergradient_norm)):
        return (
            "the hypergradient is not finite although the solve succeeded (the mixed term overflowed: an "
            "exponential of a large hyperparameter?); keep hyperparameters in range with project_hyperparameters "
            "or set max_hypergradient_norm"
        )
    return None


def decide(
    result: HyperstepResult, hypergradient_norm: Tensor, failed_anywhere: bool, take: Callable[[], str | None]
) -> str | None:
    """Take the hyperstep unless :func:`skip_reason` forbids it; returns why it was skipped, or None if taken.

    ``take`` applies the step under a :class:`~lightning_hypergrad.lightning.guard.StepGuard` and returns the
    guard's reason when it had to undo the step (λ left non-finite), else None.
    """
    reason = skip_reason(result, hypergradient_norm, failed_anywhere)
    return reason if reason is not None else take()


def skip_warning(step: int, reason: str, skipped: int) -> HypergradientWarning:
    """The warning for a skipped hyperstep: when, why, and what to try (``reason`` carries cause and remedy)."""
    return HypergradientWarning(
        f"Skipped the hyperstep at step {step}: {reason.rstrip('.')}. Hyperparameters are unchanged "
        f"({skipped} skipped so far)."
    )


def warn_once_if_zero(
    hypergradients: Sequence[Tensor],
    module: nn.Module,
    result: HypergradientResult | None = None,
    history: Sequence[dict[str, Any]] = (),
) -> bool:
    """Warn when an applied hypergradient is exactly zero, saying why; returns True when it warned (once is enough).

    The causes, told apart: hyperparameters that saturated or ran away (an earlier entry of ``history`` applied a
    nonzero hypergradient, and λ has moved since, say until an ``exp`` underflows to 0); hyperparameters the
    losses do not respond to from the first hyperstep although the validation loss reaches the weights
    (``result``'s solution ``x ≈ H⁻¹ ∂L_V/∂w`` is nonzero: saturated from the start, or unused); and a validation
    loss that reaches neither the weights nor λ (detached or constant: ``x`` is zero, and so was every earlier
    hypergradient).

    Args:
        hypergradients: the hypergradients just applied.
        module: the module, for its name and its hyperparameters' values.
        result: the hyperstep's result, whose solve tells whether the validation loss reaches the weights.
        history: the callback's earlier history entries (``hypergradient_norm``, ``hyperparameters``).
    """
    if any(bool(gradient.detach().ne(0).any()) for gradient in hypergradients):
        return False
    earlier = [entry for entry in history if entry.get("applied") and entry.get("hypergradient_norm", 0.0) > 0]
    reaches_weights = result is not None and any(bool(part.ne(0).any()) for part in result.solve.solution)
    if earlier or reaches_weights:
        message = _saturation_message(module, earlier[-1] if earlier else None, history[0] if history else None)
    else:
        message = (
            f"The hypergradient is exactly zero: {type(module).__name__}.validation_loss does not depend on the "
            "weights or on the hyperparameters (a constant, or computed under no_grad/detach?). Hypersteps are "
            "counted as taken but cannot move the hyperparameters."
        )
    rank_zero_warn(message, category=HypergradientWarning)
    return True


def _saturation_message(module: Any, nonzero: dict[str, Any] | None, first: dict[str, Any] | None) -> str:
    """The zero-hypergradient warning for hyperparameters the losses do not respond to (not a detached loss)."""
    now = _values(records.summarize_hyperparameters(module.named_hyperparameters()))
    if nonzero is None:  # zero from the first hyperstep, yet the validation loss reaches the weights
        return (
            "The hypergradient is exactly zero although validation_loss depends on the weights: neither loss "
            f"responds to the hyperparameters at their values (now {now}). They are saturated from the start (e.g. "
            "exp() of a large negative log-parameter underflows to 0, a sigmoid sits at 0 or 1), or training_loss "
            "does not use them (on this batch or at all). Start them in range, or keep them there with "
            "project_hyperparameters."
        )
    then = f"; after the hyperstep at step {first['step']}: {_values(first['hyperparameters'])}" if first else ""
    return (
        f"The hypergradient is exactly zero although it was not at step {nonzero['step']}: the losses no longer "
        f"respond to the hyperparameters (now {now}{then}). Either they saturated or ran away (exp() of a large "
        "negative log-parameter underflows to 0, a sigmoid sits at 0 or 1; a hyper learning rate too large sends "
        "them there and the optimizer's momentum carries them further: lower it, set max_hypergradient_norm, or "
        "keep them in range with project_hyperparameters), or this hyperstep's training batch does not involve "
        "them (say, class weights on a batch of a single class). Hypersteps are counted as taken."
    )


def _values(summary: dict[str, dict[str, float]]) -> str:
    """``name=value`` or ``name in [min, max]`` for the first few hyperparameters of a record's summary."""
    shown = [
        f"{name}={stats['value']:.4g}" if "value" in stats else f"{name} in [{stats['min']:.4g}, {stats['max']:.4g}]"
        for name, stats in list(summary.items())[:4]
    ]
    return ", ".join(shown) + (", …" if len(summary) > 4 else "")
