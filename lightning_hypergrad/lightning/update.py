"""Turning a hypergradient into a hyperparameter step: the solver per step, the hyper optimizer, the skip rule,
clipping, projection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.hypergradient import HypergradientResult, HypergradientWarning
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.lightning import decision, distributed
from lightning_hypergrad.solvers import IHVPSolver, Neumann

DEFAULT_HYPER_LEARNING_RATE = 1e-2


def checked_solver(solver: object, alpha_from_learning_rate: bool) -> IHVPSolver:
    """The callback's solver (``Neumann()`` for None); refuses non-solvers and, when α is to follow the learning
    rate, solvers without an α."""
    if solver is not None and not isinstance(solver, IHVPSolver):
        raise TypeError(
            f"HypergradientCallback(solver={solver!r}): solver must be an IHVPSolver such as Neumann(), "
            f"ConjugateGradient(), Identity() or Exact(); got {type(solver).__name__}."
        )
    checked = Neumann() if solver is None else solver
    if alpha_from_learning_rate and not hasattr(checked, "alpha"):
        raise ValueError(
            f"HypergradientCallback(alpha_from_learning_rate=True) needs a solver with a step size alpha "
            f"(Neumann or Identity); got {checked!r}."
        )
    return checked


def checked_factory(name: str, factory: object) -> Any:
    """``factory`` if it is None or a callable that builds the object; an optimizer or scheduler *instance* is
    refused with the form to use instead (the callback builds them over the hyperparameters itself)."""
    instances = (torch.optim.Optimizer, LRScheduler, ReduceLROnPlateau)
    if factory is None or (callable(factory) and not isinstance(factory, instances)):
        return factory
    kind = "optimizer" if name == "hyper_optimizer" else "scheduler"
    example = (
        "hyper_optimizer=lambda params: torch.optim.Adam(params, lr=1e-2), or functools.partial(torch.optim.Adam, "
        "lr=1e-2)"
        if kind == "optimizer"
        else "hyper_lr_scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=10)"
    )
    raise TypeError(
        f"HypergradientCallback({name}={type(factory).__name__}(...)): give a callable that builds the {kind} "
        f"(the callback calls it once the hyperparameters exist), not an {kind} object; e.g. {example}. In YAML: "
        "class_path and init_args without params/optimizer."
    )


def solver_for_step(solver: IHVPSolver, alpha_from_learning_rate: bool, trainer: Any) -> IHVPSolver:
    """``solver``, or a copy whose α is the weight optimizer's current learning rate."""
    if not alpha_from_learning_rate:
        return solver
    return solver.with_alpha(float(trainer.optimizers[0].param_groups[0]["lr"]))


def build_hyper_optimizer(
    factory: Callable[[Any], torch.optim.Optimizer] | None,
    scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None,
    hyperparameters: Sequence[nn.Parameter],
) -> tuple[torch.optim.Optimizer, Any]:
    """The hyper optimizer (``Adam(lr=1e-2)`` when ``factory`` is None) and its scheduler (or None)."""
    parameters = list(hyperparameters)
    optimizer = (
        factory(parameters) if factory is not None else torch.optim.Adam(parameters, lr=DEFAULT_HYPER_LEARNING_RATE)
    )
    scheduler = scheduler_factory(optimizer) if scheduler_factory is not None else None
    return optimizer, scheduler


def skip_reason(
    result: HypergradientResult, norm: Tensor, failed_anywhere: bool, solver: IHVPSolver | None = None
) -> str | None:
    """Why this hypergradient must not be applied, with a remedy, or None: a failed solve (here or on another
    process; the remedy fits ``solver``) or a non-finite hypergradient."""
    if failed_anywhere:
        if result.solve.converged:
            return "the solve failed on another process; see that process's batch"
        solve = result.solve
        advice = decision.solver_advice(solver, solve) if solver is not None else "consider damping"
        return f"the solve failed ({solve.status.value}, residual {float(solve.residual_norm):.3g}); {advice}"
    if not bool(torch.isfinite(norm)):
        return (
            "the hypergradient is not finite although the solve succeeded (the mixed term overflowed: an "
            "exponential of a large hyperparameter?); keep hyperparameters in range with project_hyperparameters "
            "or set max_hypergradient_norm"
        )
    return None


def clip_to_norm(hypergradients: Sequence[Tensor], norm: Tensor, max_norm: float | None) -> Vector:
    """Rescale all hypergradients together to a 2-norm of at most ``max_norm`` (None: unchanged)."""
    if max_norm is not None and float(norm) > max_norm:
        return vectors.scale(hypergradients, max_norm / float(norm))
    return tuple(hypergradients)


def apply_hypergradients(
    module: Any,
    hypergradients: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    validation_loss: float | None = None,
    check_sync: bool = False,
    named: Sequence[tuple[str, torch.nn.Parameter]] | None = None,
) -> str | None:
    """One hyper-optimizer step along ``hypergradients``, one scheduler step, then the module's projection.

    Returns None, or why the step was undone: when the optimizer's step or the projection leaves a non-finite
    hyperparameter, λ and the optimizer's and scheduler's states are restored
    (:class:`~lightning_hypergrad.lightning.decision.StepGuard`). ``check_sync`` then verifies that all processes hold
    the same hyperparameters (:func:`~lightning_hypergrad.lightning.distributed.check_identical`). ``named``: the
    module's ``named_hyperparameters()`` when the caller already has them.
    """
    named = module.named_hyperparameters() if named is None else named
    guard = decision.StepGuard(named, optimizer, scheduler)
    for (_, parameter), gradient in zip(named, hypergradients):
        parameter.grad = gradient.to(parameter.dtype)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    undone = guard.check(after="optimizer")
    if undone is None:
        decision.step_scheduler(scheduler, validation_loss, named[0][1].device)
        with torch.no_grad():
            module.project_hyperparameters()
        undone = guard.check(after="projection")
    if check_sync:
        when = f"after the hyperstep at step {module.trainer.global_step}"
        distributed.check_identical([parameter for _, parameter in named], when)
    return undone


def load_optimizer_state(optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any]) -> None:
    """Restore the hyper optimizer and scheduler from a callback checkpoint (keys missing in old ones are skipped)."""
    if state.get("hyper_optimizer") is not None:
        optimizer.load_state_dict(state["hyper_optimizer"])
    if scheduler is not None and state.get("hyper_lr_scheduler") is not None:
        scheduler.load_state_dict(state["hyper_lr_scheduler"])


def skip_warning(step: int, reason: str, skipped: int) -> HypergradientWarning:
    """The warning for a skipped hyperstep: when, why, and what to try (``reason`` carries cause and remedy)."""
    return HypergradientWarning(
        f"Skipped the hyperstep at step {step}: {reason.rstrip('.')}. Hyperparameters are unchanged "
        f"({skipped} skipped so far)."
    )
