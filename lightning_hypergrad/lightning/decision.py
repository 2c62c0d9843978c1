"""What keeps a numerical failure from reaching the weights or λ: checks before a solve, after a step, and the advice.

Each check returns the reason for a skip as one sentence (the cause, then a remedy) or None; the callback skips
the hyperstep with a :class:`~lightning_hypergrad.HypergradientWarning` quoting it. Under several processes every
decision is agreed on (one small all-reduce), so all processes skip together.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_hypergrad.engine.hypergradient import HypergradientResult, HypergradientWarning
from lightning_hypergrad.lightning import contract, distributed
from lightning_hypergrad.solvers import IHVPSolver
from lightning_hypergrad.solvers.base import SolveResult, SolveStatus


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


def precheck(module: Any, train_loss: object, validation_loss: object, alpha_from_learning_rate: bool) -> str | None:
    """Why this hyperstep cannot be computed (:func:`loss_failure`, :func:`learning_rate_failure`), or None."""
    failure = loss_failure(module, train_loss, validation_loss)
    if failure is None and alpha_from_learning_rate:
        failure = learning_rate_failure(alpha_from_learning_rate, module.trainer)
    return failure


def learning_rate_failure(alpha_from_learning_rate: bool, trainer: Any) -> str | None:
    """Why α cannot follow the weights' learning rate now (it is 0, negative or not finite), or None."""
    if not alpha_from_learning_rate:
        return None
    rate = float(trainer.optimizers[0].param_groups[0]["lr"])
    if math.isfinite(rate) and rate > 0:
        return None
    return (
        f"alpha_from_learning_rate=True but the weights' learning rate is {rate} (a schedule drove it there), which "
        "is no step size for the solver; the weights are not moving either. Set alpha_from_learning_rate=False "
        "with a fixed alpha to keep tuning"
    )


def skipped_result(weights: Sequence[Tensor], named: Sequence[tuple[str, Tensor]]) -> HypergradientResult:
    """A result that carries no hypergradient: zeros, a failed solve with a NaN residual and no products."""
    hyperparameters = [parameter for _, parameter in named]
    zeros = tuple(torch.zeros_like(parameter, memory_format=torch.contiguous_format) for parameter in hyperparameters)
    solve = SolveResult(
        solution=tuple(torch.zeros_like(w).detach() for w in weights),
        iterations=0,
        residual_norm=torch.tensor(math.nan),
        converged=False,
        status=SolveStatus.DIVERGED,
        hvp_count=0,
    )
    return HypergradientResult(hypergradients=zeros, direct=zeros, solve=solve, train_gradient_norm=torch.tensor(0.0))


def solver_advice(solver: IHVPSolver, solve: SolveResult) -> str:
    """What to change when ``solver``'s solve failed: its own :meth:`~lightning_hypergrad.solvers.IHVPSolver.failure_advice`."""
    return solver.failure_advice(solve)


class StepGuard:
    """Snapshot of λ and the hyper optimizer's (and scheduler's) state, to restore if a step makes λ non-finite.

    ``Adam(eps=0)`` given an exact-zero hypergradient computes 0/0; a projection may write NaN. Either would
    reach the weights through the next training loss. :meth:`check` names the culprit and restores everything.

    Args:
        named: the ``(name, parameter)`` hyperparameters to snapshot.
        optimizer: the hyper optimizer, whose ``state_dict`` is snapshotted.
        scheduler: its learning-rate scheduler, or ``None``.
    """

    def __init__(self, named: Sequence[tuple[str, nn.Parameter]], optimizer: Any, scheduler: Any) -> None:
        self.named, self.optimizer, self.scheduler = named, optimizer, scheduler
        self.values = [parameter.detach().clone() for _, parameter in named]
        self.optimizer_state = _snapshot(optimizer.state_dict())
        self.scheduler_state = copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None

    def check(self, after: str) -> str | None:
        """None if every hyperparameter is finite; else restore the snapshot and return the reason."""
        finite = torch.stack([torch.isfinite(parameter.detach()).all() for _, parameter in self.named]).tolist()
        bad = [name for (name, _), ok in zip(self.named, finite) if not ok]  # one host sync for all of them
        if not bad:
            return None
        with torch.no_grad():
            for (_, parameter), value in zip(self.named, self.values):
                parameter.copy_(value)
        self.optimizer.load_state_dict(self.optimizer_state)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(self.scheduler_state)
        if after == "projection":
            return (
                f"project_hyperparameters() wrote non-finite values into {bad}; they were restored. Make the "
                "projection finite (clamp into a closed range, avoid log/0 there)"
            )
        return (
            f"the hyper optimizer's step ({type(self.optimizer).__name__}) made {bad} non-finite; they and its "
            "state were restored. With Adam-like optimizers keep eps > 0 (eps=0 divides 0 by 0 on an exact-zero "
            "hypergradient), or lower the hyper learning rate"
        )


def _snapshot(state: Any) -> Any:
    """A copy of an optimizer's ``state_dict`` that the step cannot change: tensors cloned, containers rebuilt.

    What ``copy.deepcopy`` gives, at a fraction of its cost per hyperstep (no memo of every leaf).
    """
    if isinstance(state, Tensor):
        return state.clone()
    if type(state) is dict:
        return {key: _snapshot(value) for key, value in state.items()}
    if type(state) in (list, tuple):
        return type(state)(_snapshot(value) for value in state)
    return copy.deepcopy(state)  # numbers, strings, None, and any other container an optimizer keeps


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


def warn_once_if_zero(hypergradients: Sequence[Tensor], module: nn.Module) -> bool:
    """Warn when an applied hypergradient is exactly zero; returns True when it warned (once is enough)."""
    if any(bool(gradient.detach().ne(0).any()) for gradient in hypergradients):
        return False
    rank_zero_warn(
        f"The hypergradient is exactly zero: {type(module).__name__}.validation_loss does not depend on the "
        "weights or on the hyperparameters (a constant, or computed under no_grad/detach?). Hypersteps are "
        "counted as taken but cannot move the hyperparameters.",
        category=HypergradientWarning,
    )
    return True


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
