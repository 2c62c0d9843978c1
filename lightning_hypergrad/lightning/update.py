"""Turning a hypergradient into a hyperparameter step (clipping, the hyper optimizer and scheduler, the module's
projection), and building and checking what the callback was given for it (solver, optimizer factories)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.engine.vectors import Vector
from lightning_hypergrad.lightning import distributed, sharding
from lightning_hypergrad.lightning.guard import StepGuard
from lightning_hypergrad.solvers import Amortized, IHVPSolver

DEFAULT_HYPER_LEARNING_RATE = 1e-2


def checked_solver(solver: object, alpha_from_learning_rate: bool) -> IHVPSolver:
    """The callback's solver (``Amortized()`` for None); refuses non-solvers and, when α is to follow the learning
    rate, solvers without an α."""
    if solver is not None and not isinstance(solver, IHVPSolver):
        raise TypeError(
            f"HypergradientCallback(solver={solver!r}): solver must be an IHVPSolver such as Neumann(), "
            f"ConjugateGradient(), Identity() or Exact(); got {type(solver).__name__}."
        )
    checked = Amortized() if solver is None else solver
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
    """The hyper optimizer (``Adam(lr=1e-2)`` when ``factory`` is None) and its scheduler (or None).

    The default Adam takes its multi-tensor step (torch picks it on CUDA only): on the CPU the same values, bit for
    bit, in less time for millions of hyperparameters.
    """
    parameters = list(hyperparameters)
    if factory is None:
        optimizer = torch.optim.Adam(parameters, lr=DEFAULT_HYPER_LEARNING_RATE, foreach=True)
    else:
        optimizer = factory(parameters)
    scheduler = scheduler_factory(optimizer) if scheduler_factory is not None else None
    return optimizer, scheduler


def clip_to_norm(hypergradients: Sequence[Tensor], norm: Tensor, max_norm: float | None) -> Vector:
    """Rescale all hypergradients together to a 2-norm of at most ``max_norm`` (None: unchanged)."""
    if max_norm is not None and float(norm) > max_norm:
        return vectors.scale(hypergradients, max_norm / float(norm))
    return tuple(hypergradients)


def apply_hypergradients(
    module: Any,
    hypergradients: Sequence[Tensor],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    validation_loss: float | None = None,
    check_sync: bool = False,
    named: Sequence[tuple[str, torch.nn.Parameter]] | None = None,
) -> str | None:
    """One hyper-optimizer step along ``hypergradients``, one scheduler step, then the module's projection.

    Returns None, or why the step was undone: when the optimizer's step or the projection leaves a non-finite
    hyperparameter, λ and the optimizer's and scheduler's states are restored
    (:class:`~lightning_hypergrad.lightning.guard.StepGuard`). ``check_sync`` then verifies that all processes hold
    the same hyperparameters (:func:`~lightning_hypergrad.lightning.distributed.check_identical`). ``named``: the
    module's ``named_hyperparameters()`` when the caller already has them.
    """
    named = module.named_hyperparameters() if named is None else named
    guard = StepGuard(named, optimizer, scheduler)
    for (_, parameter), gradient in zip(named, hypergradients):
        parameter.grad = sharding.like_parameter(gradient, parameter)  # a DTensor's shard where λ is sharded
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    undone = guard.check(after="optimizer")
    if undone is None:
        step_scheduler(scheduler, validation_loss, named[0][1].device)
        with torch.no_grad():
            module.project_hyperparameters()
        undone = guard.check(after="projection")
    if check_sync:
        when = f"after the hyperstep at step {module.trainer.global_step}"
        distributed.check_identical([parameter for _, parameter in named], when)
    return undone


def take_step(
    callback: Any, module: Any, hypergradients: Sequence[Tensor], named: Any, validation_loss: float | None
) -> str | None:
    """Step λ along the (clipped) ``hypergradients`` with the callback's hyper optimizer and scheduler
    (:func:`apply_hypergradients`); returns why the step was undone (λ left non-finite), or None.

    Args:
        callback: the :class:`~lightning_hypergrad.HypergradientCallback`; its ``last_applied_hypergradients``
            keep a copy of what was applied.
        module: the bilevel module.
        hypergradients: the hypergradients after clipping, one per hyperparameter.
        named: the module's ``named_hyperparameters()``.
        validation_loss: the hyperstep's validation loss, for a ``ReduceLROnPlateau`` hyper scheduler.
    """
    callback.last_applied_hypergradients = [gradient.detach().clone() for gradient in hypergradients]
    return apply_hypergradients(
        module,
        hypergradients,
        optimizer=callback.hyper_optimizer,
        scheduler=callback.hyper_lr_scheduler,
        validation_loss=validation_loss,
        check_sync=callback.check_sync,
        named=named,
    )


def load_optimizer_state(optimizer: torch.optim.Optimizer, scheduler: Any, state: dict[str, Any]) -> None:
    """Restore the hyper optimizer and scheduler from a callback checkpoint (keys missing in old ones are skipped)."""
    if state.get("hyper_optimizer") is not None:
        optimizer.load_state_dict(state["hyper_optimizer"])
        sharding.shard_optimizer_state(optimizer)
    if scheduler is not None and state.get("hyper_lr_scheduler") is not None:
        scheduler.load_state_dict(state["hyper_lr_scheduler"])


def step_scheduler(scheduler: Any, validation_loss: float | None, device: torch.device) -> None:
    """One step of the hyper scheduler; ``ReduceLROnPlateau`` is stepped with the hyperstep's validation loss,
    averaged over processes so that every process lowers the rate at the same hyperstep."""
    if scheduler is None:
        return
    if not isinstance(scheduler, ReduceLROnPlateau):
        scheduler.step()
        return
    if validation_loss is None:
        raise ValueError("ReduceLROnPlateau as hyper_lr_scheduler needs the hyperstep's validation loss.")
    (averaged,) = distributed.all_reduce_mean([torch.tensor([validation_loss], dtype=torch.float64, device=device)])
    scheduler.step(float(averaged))


def check_solver_size(solver: IHVPSolver, weights: Sequence[Tensor]) -> None:
    """Refuse, at setup, a solver that cannot take this many weights (``Exact(max_size)``), not at the first
    hyperstep after warm-up; uses the solver's ``check_size`` where it has one."""
    size = sum(weight.numel() for weight in weights)
    check = getattr(solver, "check_size", None)
    if callable(check):
        check(size)
        return
    limit = getattr(solver, "max_size", None)
    if isinstance(limit, int) and size > limit:
        raise ValueError(
            f"{type(solver).__name__}(max_size={limit}) refuses this module's P={size} weights: it would form a "
            f"dense {size}x{size} Hessian. Use ConjugateGradient or Neumann, or raise max_size."
        )
