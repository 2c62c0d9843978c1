"""The hyperstep's own dynamic loss scale under ``16-mixed``: back off and retry on overflow, grow after clean runs.

Second-order products overflow float16 before first-order gradients do, so the weights' ``GradScaler`` (which
only sees first-order gradients) never lowers its scale for them. The hyperstep therefore keeps a scale of its own;
the weights' scaler is read, never changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.plugins import Precision

from lightning_hypergrad.arguments import check_count, check_positive
from lightning_hypergrad.engine import vectors
from lightning_hypergrad.lightning import distributed
from lightning_hypergrad.lightning.decision import HyperstepResult
from lightning_hypergrad.solvers import IHVPSolver
from lightning_hypergrad.solvers.base import SolveStatus

OWNER = "HyperstepLossScale"


def weights_loss_scale(precision: Precision) -> float | None:
    """The weights' current ``GradScaler`` scale under ``16-mixed``; ``None`` without an enabled scaler."""
    scaler = getattr(precision, "scaler", None)
    if scaler is not None and scaler.is_enabled():
        return float(scaler.get_scale())
    return None


class HyperstepLossScale:
    r"""The loss scale S of the hyperstep's products (see ``loss_scale`` of :func:`~lightning_hypergrad.hypergradient`).

    Only under a ``GradScaler`` (``16-mixed``); elsewhere hypersteps run unscaled and this object does nothing.
    The first hyperstep starts from the scaler's current scale. When a hyperstep overflows (its solve reports
    ``non_finite`` or its hypergradient is not finite, while its losses are finite) S is multiplied by
    ``backoff_factor`` and the hyperstep is computed again, from the same batches, random state (dropout masks)
    and solver state, up to ``retries`` times; if it still overflows it is skipped with a
    :class:`~lightning_hypergrad.HypergradientWarning` and the next hyperstep starts one back-off lower. After
    ``growth_interval`` hypersteps in a row without overflow S is multiplied by ``growth_factor``. S never exceeds
    the weights' current scale (above it the validation gradient, a first-order gradient like the weights',
    overflows as theirs do) and never backs off below ``min_scale``. The state (S and the clean count) is saved in
    the callback's checkpoint.

    Args:
        backoff_factor: the factor in (0, 1) applied to S after an overflow (GradScaler's default: 0.5).
        growth_factor: the factor ``> 1`` applied to S after ``growth_interval`` clean hypersteps.
        growth_interval: clean hypersteps in a row before S grows, ``>= 1``. Counted in hypersteps, not weight
            steps (GradScaler's 2000 weight steps are 200 hypersteps at ``every_n_steps=10``): each growth past
            the limit costs one recomputed hyperstep.
        retries: recomputations within one hyperstep after an overflow, ``>= 0``; each costs one more hyperstep.
        min_scale: the lowest S ``> 0`` it backs off to; a hyperstep that overflows there is skipped.
    """

    def __init__(
        self,
        backoff_factor: float = 0.5,
        growth_factor: float = 2.0,
        growth_interval: int = 50,
        retries: int = 8,
        min_scale: float = 1.0,
    ) -> None:
        self.backoff_factor = check_positive(OWNER, "backoff_factor", backoff_factor)
        if self.backoff_factor >= 1:
            raise ValueError(f"{OWNER}(backoff_factor={backoff_factor!r}): backoff_factor must lie in (0, 1).")
        self.growth_factor = check_positive(OWNER, "growth_factor", growth_factor)
        if self.growth_factor <= 1:
            raise ValueError(f"{OWNER}(growth_factor={growth_factor!r}): growth_factor must be a number > 1.")
        self.growth_interval = check_count(OWNER, "growth_interval", growth_interval, minimum=1)
        self.retries = check_count(OWNER, "retries", retries, minimum=0)
        self.min_scale = check_positive(OWNER, "min_scale", min_scale)
        self.scale: float | None = None  # None until the first hyperstep under a scaler
        self.clean_hypersteps = 0

    def __repr__(self) -> str:
        arguments = ("backoff_factor", "growth_factor", "growth_interval", "retries", "min_scale")
        return f"{OWNER}({', '.join(f'{name}={getattr(self, name)!r}' for name in arguments)})"

    def state_dict(self) -> dict[str, Any]:
        """The current scale (``None`` before the first scaled hyperstep) and the clean hypersteps since it changed."""
        return {"scale": self.scale, "clean_hypersteps": self.clean_hypersteps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; missing keys take their initial values."""
        scale = state.get("scale")
        self.scale = None if scale is None else float(scale)
        self.clean_hypersteps = int(state.get("clean_hypersteps", 0))

    def run(
        self,
        attempt: Callable[[float], HyperstepResult],
        precision: Precision,
        solver: IHVPSolver,
        device: torch.device,
    ) -> HyperstepResult:
        """``attempt(S)`` (one hyperstep computed at loss scale S), retried at lower S while it overflows.

        Args:
            attempt: computes the hyperstep at a given loss scale, leaving weights, λ, modes and buffers as they
                were (:meth:`~lightning_hypergrad.HypergradientCallback.compute_hypergradient` does).
            precision: the Trainer's precision plugin, whose ``GradScaler`` (if any) gives the upper bound.
            solver: the callback's solver, whose state a retry starts from again.
            device: the module's device, whose random state a retry starts from again.

        Returns:
            The last attempt's result, with ``loss_scale`` set (``None`` without a scaler: one unscaled attempt).
        """
        ceiling = weights_loss_scale(precision)
        if ceiling is None:
            return attempt(1.0)
        scale = ceiling if self.scale is None else min(self.scale, ceiling)
        restore = _snapshot(solver, device)
        retried = 0
        while True:
            result = attempt(scale)
            overflowed = _overflowed(result, device)
            if not overflowed or retried == self.retries or scale <= self.min_scale:
                break
            scale, retried = self._backed_off(scale), retried + 1
            del result  # the recomputation holds nothing of the failed attempt
            restore()
        self._settle(scale, ceiling, retried=retried > 0, overflowed=overflowed, solved=result.loss_problem is None)
        return dataclasses.replace(result, loss_scale=scale)

    def _backed_off(self, scale: float) -> float:
        return max(scale * self.backoff_factor, self.min_scale)

    def _settle(self, scale: float, ceiling: float, *, retried: bool, overflowed: bool, solved: bool) -> None:
        """The scale the next hyperstep starts from, after one computed at ``scale``."""
        if not solved:  # the losses forbade a solve: nothing was learnt about the scale
            return
        if overflowed:  # still overflowing after every retry: start one back-off lower next time
            self.scale, self.clean_hypersteps = self._backed_off(scale), 0
        elif retried:
            self.scale, self.clean_hypersteps = scale, 0
        else:
            self.scale, self.clean_hypersteps = scale, self.clean_hypersteps + 1
            if self.clean_hypersteps >= self.growth_interval:
                self.scale, self.clean_hypersteps = min(scale * self.growth_factor, ceiling), 0


def _overflowed(result: HyperstepResult, device: torch.device) -> bool:
    """Whether this hyperstep's scaled products overflowed here or on any other process (so all retry alike)."""
    return distributed.any_process([_failed(result)], device=device)[0]


def _failed(result: HyperstepResult) -> bool:
    if result.loss_problem is not None:  # the losses are unscaled: a smaller scale cannot help
        return False
    if result.solve.status is SolveStatus.NON_FINITE:
        return True
    return not vectors.all_finite(result.hypergradients)


def _snapshot(solver: IHVPSolver, device: torch.device) -> Callable[[], None]:
    """A function that puts back the random state (host and ``device``) and the solver's state as they are now."""
    host = torch.get_rng_state()
    accelerator = None if device.type == "cpu" else torch.get_device_module(device.type)
    on_device = None if accelerator is None else accelerator.get_rng_state(device)
    solver_state = solver.state_dict()

    def restore() -> None:
        torch.set_rng_state(host)
        if accelerator is not None:
            accelerator.set_rng_state(on_device, device)
        solver.load_state_dict(solver_state)

    return restore


def checked_loss_scale(loss_scale: object) -> HyperstepLossScale:
    """The callback's ``loss_scale`` (a default :class:`HyperstepLossScale` for None); refuses anything else."""
    if loss_scale is None:
        return HyperstepLossScale()
    if not isinstance(loss_scale, HyperstepLossScale):
        raise TypeError(
            f"HypergradientCallback(loss_scale={loss_scale!r}): loss_scale must be a HyperstepLossScale (e.g. "
            f"HyperstepLossScale(growth_interval=50)) or None; got {type(loss_scale).__name__}."
        )
    return loss_scale
