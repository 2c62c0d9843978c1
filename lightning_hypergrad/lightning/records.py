"""What one hyperstep reports: a structured record, its logged names, and the bounded history of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from lightning_hypergrad.engine.hypergradient import HypergradientResult
from lightning_hypergrad.lightning import adapter, sharding
from lightning_hypergrad.lightning.decision import HyperstepResult
from lightning_hypergrad.solvers.base import SolveStatus

if TYPE_CHECKING:
    from lightning_hypergrad.lightning.callback import HypergradientCallback

PROGRESS_BAR_HYPERPARAMETERS = 4  # more would crowd the bar; loggers get them all
STATISTICS = ("mean", "std", "min", "max")
SOLVE_FIELDS = ("train_gradient_norm", "solver_iterations", "solver_residual", "solver_converged", "hvp_count")


@dataclass(frozen=True)
class HyperstepRecord:
    """One hyperstep, taken or skipped.

    Attributes:
        step: the weight step (``global_step``) it followed.
        applied: whether the hyperparameters were stepped.
        hypergradient_norm: 2-norm of the applied hypergradient (before clipping); NaN when skipped.
        train_gradient_norm, solver_iterations, solver_residual, solver_converged, hvp_count: from the result.
        taken, skipped: the callback's counters after this hyperstep.
        validation_loss: the hyper batch's validation loss (``None`` if unknown).
        alpha: the solver's step size α, if it has one.
        solver_status: how the solve ended, a :class:`~lightning_hypergrad.solvers.SolveStatus` value
            (``"not_run"`` when the hyperstep's losses forbade a solve; ``None`` in entries of older checkpoints).
        learning_rate: the hyper optimizer's learning rate for this hyperstep (first parameter group).
        loss_scale: the hyperstep's own loss scale under a ``GradScaler`` (``16-mixed``), else ``None``.
        hyperparameters: per hyperparameter name, ``{"value": v}`` (one element) or ``{"mean", "std", "min",
            "max"}`` of its raw values after the hyperstep.
    """

    step: int
    applied: bool
    hypergradient_norm: float
    train_gradient_norm: float
    solver_iterations: float
    solver_residual: float
    solver_converged: float
    hvp_count: float
    taken: int
    skipped: int
    validation_loss: float | None
    alpha: float | None
    hyperparameters: dict[str, dict[str, float]]
    learning_rate: float | None = None
    solver_status: str | None = None
    loss_scale: float | None = None

    def logged(self) -> dict[str, float]:
        """The metrics sent to loggers: ``hyper/<field>`` and ``hparam/<name>`` or ``hparam/<name>/<statistic>``.

        The solve's fields (``SOLVE_FIELDS``) are left out when no solve ran: nothing measured them.
        """
        metrics = {"hyper/hypergradient_norm": self.hypergradient_norm}
        if self.solver_status != SolveStatus.NOT_RUN.value:
            metrics.update({f"hyper/{field}": float(getattr(self, field)) for field in SOLVE_FIELDS})
        metrics.update({"hyper/taken": float(self.taken), "hyper/skipped": float(self.skipped)})
        if self.alpha is not None:
            metrics["hyper/alpha"] = self.alpha
        if self.validation_loss is not None:
            metrics["hyper/validation_loss"] = self.validation_loss
        if self.learning_rate is not None:
            metrics["hyper/learning_rate"] = self.learning_rate
        if self.loss_scale is not None:
            metrics["hyper/loss_scale"] = self.loss_scale
        for name, statistics in self.hyperparameters.items():
            for statistic, value in statistics.items():
                metrics[f"hparam/{name}" if statistic == "value" else f"hparam/{name}/{statistic}"] = value
        return metrics

    def progress_bar(self) -> dict[str, float]:
        """The few values worth the progress bar: skips, validation loss, the first hyperparameters' values."""
        progress = {"hyper/skipped": float(self.skipped)}
        if self.validation_loss is not None:
            progress["hyper/validation_loss"] = self.validation_loss
        for name in list(self.hyperparameters)[:PROGRESS_BAR_HYPERPARAMETERS]:
            statistics = self.hyperparameters[name]
            key = "value" if "value" in statistics else "mean"
            progress[f"hparam/{name}" if key == "value" else f"hparam/{name}/mean"] = statistics[key]
        return progress


def summarize_hyperparameters(named: Sequence[tuple[str, Tensor]]) -> dict[str, dict[str, float]]:
    """Per name, ``{"value": v}`` for one-element tensors, else ``{"mean", "std", "min", "max"}`` (raw values)."""
    summary: dict[str, dict[str, float]] = {}
    for name, parameter in named:
        values = sharding.full(parameter.detach()).float()
        if values.numel() == 1:
            summary[name] = {"value": float(values)}
            continue
        stats = torch.stack([values.mean(), values.std(), values.min(), values.max()]).tolist()
        summary[name] = dict(zip(STATISTICS, stats))
    return summary


def hyperstep_record(
    result: HypergradientResult,
    named: Sequence[tuple[str, nn.Parameter]],
    step: int,
    applied: bool,
    hypergradient_norm: float,
    validation_loss: float | None,
    *,
    taken: int,
    skipped: int,
    learning_rate: float | None = None,
    loss_scale: float | None = None,
) -> HyperstepRecord:
    """The record of one hyperstep from its result and the hyperparameters (named) after it."""
    solve = result.solve
    return HyperstepRecord(
        step=int(step),
        applied=applied,
        hypergradient_norm=float(hypergradient_norm) if applied else math.nan,
        train_gradient_norm=float(result.train_gradient_norm),
        solver_iterations=float(solve.iterations),
        solver_residual=float(solve.residual_norm),
        solver_converged=float(solve.converged),
        hvp_count=float(solve.hvp_count),
        taken=taken,
        skipped=skipped,
        validation_loss=validation_loss,
        alpha=None if solve.alpha is None else float(solve.alpha),
        hyperparameters=summarize_hyperparameters(named),
        learning_rate=learning_rate,
        solver_status=solve.status.value,
        loss_scale=loss_scale,
    )


def record_hyperstep(
    trainer: Trainer,
    callback: HypergradientCallback,
    result: HyperstepResult,
    named: Sequence[tuple[str, nn.Parameter]],
    hypergradient_norm: Tensor,
    *,
    applied: bool,
    learning_rate: float | None,
    limit: int,
) -> None:
    """Log one hyperstep of ``callback`` (:func:`log_hyperstep`) and keep it in its ``history``, bounded by
    ``limit`` entries (:func:`append_bounded`).

    Args:
        trainer: the Trainer, whose loggers receive it.
        callback: the callback, after counting this hyperstep as taken or skipped; its ``hyperstep_step`` is the
            weight step the hyperstep belongs to.
        result: the hyperstep's result.
        named: the hyperparameters by name, after the hyperstep.
        hypergradient_norm: the norm of the hypergradient (before clipping).
        applied: whether the hyperparameters were stepped.
        learning_rate: the hyper optimizer's learning rate for this hyperstep.
        limit: the most history entries kept.
    """
    record = hyperstep_record(
        result,
        named,
        callback.hyperstep_step,
        applied,
        float(hypergradient_norm),
        result.validation_loss,
        taken=callback.taken,
        skipped=callback.skipped,
        learning_rate=learning_rate,
        loss_scale=result.loss_scale,
    )
    log_hyperstep(trainer, record)
    append_bounded(callback.history, as_history_entry(record), limit)


def record_from_logged(entry: dict[str, float]) -> dict[str, Any]:
    """A history entry of an older checkpoint as a record dict: flat logged names (before structured records)
    become fields; entries from before ``solver_status`` get ``None``."""
    if "hyperparameters" in entry:
        return {"solver_status": None, **entry}
    record: dict[str, Any] = {"step": int(entry.get("step", 0)), "hyperparameters": {}}
    for key, value in entry.items():
        kind, _, rest = key.partition("/")
        if kind == "hyper":
            record[rest] = value
        elif kind == "hparam":
            name, _, statistic = rest.partition("/")
            record["hyperparameters"].setdefault(name, {})[statistic or "value"] = value
    record.setdefault("validation_loss", None)
    record.setdefault("solver_status", None)
    record["applied"] = not math.isnan(record.get("hypergradient_norm", math.nan))
    return record


def append_bounded(history: list[dict[str, Any]], entry: dict[str, Any], limit: int) -> None:
    """Append ``entry``; past ``limit`` entries drop every other older one, so the history spans the whole run at
    halved resolution and never grows beyond ``limit`` (the latest entry is always kept)."""
    history.append(entry)
    if len(history) > limit:
        history[:] = history[::-1][::2][::-1]


def log_hyperstep(trainer: Trainer, record: HyperstepRecord) -> None:
    """Send the record to the Trainer's loggers (rank 0) and its headline values to the progress bar.

    The headline values go to the progress bar and to ``trainer.callback_metrics``, so ``ModelCheckpoint`` and
    ``EarlyStopping`` can monitor them (:func:`~lightning_hypergrad.lightning.adapter.show_metrics`).
    """
    _log_to_loggers(trainer, record.logged(), record.step)
    adapter.show_metrics(trainer, record.progress_bar())


def as_history_entry(record: HyperstepRecord) -> dict[str, Any]:
    """The plain-dict form kept in ``HypergradientCallback.history`` and its checkpoints."""
    # Shallow, unlike dataclasses.asdict: the record's dictionaries are built afresh for it and never changed.
    return {field.name: getattr(record, field.name) for field in fields(record)}


@rank_zero_only
def _log_to_loggers(trainer: Trainer, metrics: dict[str, float], step: int) -> None:
    # At the hyperstep's own step: one taken inside its weight step logs as if taken after it.
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=step)


def learning_rate(optimizer: torch.optim.Optimizer | None) -> float | None:
    """The optimizer's current learning rate (first parameter group), or None without an optimizer."""
    if optimizer is None:
        return None
    return float(torch.as_tensor(optimizer.param_groups[0]["lr"]))
