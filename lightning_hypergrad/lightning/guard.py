"""Undoing a hyperparameter step that left λ non-finite: a snapshot of λ and the hyper optimizer, restored on demand."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_hypergrad.engine import vectors
from lightning_hypergrad.lightning import sharding


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
        values = [sharding.full(parameter.detach()) for _, parameter in self.named]
        if vectors.all_finite(values):  # one host sync for all of them
            return None
        bad = [name for (name, _), value in zip(self.named, values) if not vectors.all_finite([value])]
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
