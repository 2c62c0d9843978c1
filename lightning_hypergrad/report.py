"""The end-of-run report: summary.json, a printed table and PNG plots in the run's log directory.

``summary.json`` keys (stable):

- ``train_loss``, ``validation_loss``, ``test_loss``: each split's loss at the final weights (the module's
  ``test_step`` run over that split); ``train_accuracy``, ``validation_accuracy``, ``test_accuracy`` where the
  module logs ``test_accuracy``.
- ``hypersteps_taken``, ``hypersteps_skipped``: from the HypergradientCallback (0 when there is none).
- ``weights``, ``hyperparameters``: counts of scalar weights and hyperparameters.
- ``hyperparameter_summary``: per hyperparameter tensor, ``{"value": v}`` or ``{"mean", "std", "min", "max"}``
  of its raw values; ``hyperparameter_values``: the same of the module's ``hyperparameter_values()``, the
  hyperparameters in their meaningful units (decay coefficients, dropout rates, example weights).
- ``report_metrics``: the module's ``report_metrics()`` (e.g. ``flipped_example_auroc`` of the reweighting task).
- ``global_step``, ``wall_time_seconds`` (fit only, not the final evaluation).
- With a :class:`~lightning_hypergrad.lightning.held_out.HeldOutGuard`: ``held_out_loss`` and ``held_out_tuned_loss``
  (the held-out and the tuned validation loss of the final state, after any restore), ``held_out_gap`` (their
  difference, held-out minus tuned), ``held_out_best_step`` (the weight step of the best held-out evaluation),
  ``held_out_restored`` (whether that state was written back) and ``held_out_warned`` (whether the gap grew while
  the tuned loss fell).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from rich.console import Console
from rich.table import Table

from lightning_hypergrad.lightning.callback import HypergradientCallback
from lightning_hypergrad.lightning.held_out import HeldOutGuard
from lightning_hypergrad.lightning.module import BilevelLightningModule
from lightning_hypergrad.lightning.records import summarize_hyperparameters
from lightning_hypergrad.plots import plot_hyperparameters, plot_validation_loss

SPLITS = ("train", "validation", "test")


class RunReport(Callback):
    """The end-of-fit report: ``summary.json``, a printed table and plots, for the CLI and the Python API alike.

    Add it to your own ``Trainer`` (``Trainer(callbacks=[HypergradientCallback(...), RunReport()])``): when ``fit``
    ends it writes the report to the run's log directory, with the last validation run's metrics
    (``validation_loss``, and ``validation_accuracy`` where the module logs it). The ``lightning-hypergrad`` CLI
    sets :attr:`deferred_to_caller` and calls :meth:`write` itself after evaluating the final weights on every
    split.

    Args:
        enabled: write the report at the end of ``fit``.
        plots: also write ``validation_loss.png`` and ``hyperparameters.png``.
    """

    def __init__(self, enabled: bool = True, plots: bool = True) -> None:
        self.enabled = enabled
        self.plots = plots
        self.deferred_to_caller = False
        """True when whoever runs the fit (the CLI) calls :meth:`write` after it, so ``on_fit_end`` does not."""
        self.validation_losses: list[tuple[float, float]] = []
        self.wall_time_seconds = 0.0
        self._started = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.wall_time_seconds = time.perf_counter() - self._started
        if self.enabled and not self.deferred_to_caller and not trainer.interrupted:
            self.write(trainer, pl_module, last_validation_metrics(trainer))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loss = trainer.callback_metrics.get("validation_loss")
        if loss is not None and not trainer.sanity_checking and trainer.state.fn == "fit":
            self.validation_losses.append((float(trainer.global_step), float(loss)))

    def write(
        self,
        trainer: Trainer,
        module: LightningModule,
        split_metrics: dict[str, dict[str, float]],
        directory: str | Path | None = None,
    ) -> dict[str, Any]:
        """Write summary.json (and plots) to ``directory`` (default: the run's log directory), print the table;
        returns the summary. Call it on every process: reading ``trainer.log_dir`` is a collective under DDP."""
        hyper = next((c for c in trainer.callbacks if isinstance(c, HypergradientCallback)), None)
        summary = build_summary(module, split_metrics, hyper, trainer.global_step, self.wall_time_seconds)
        guard = next((c for c in trainer.callbacks if isinstance(c, HeldOutGuard)), None)
        summary.update(held_out_summary(guard))
        log_dir = trainer.log_dir  # on every process: a broadcast under DDP
        if not trainer.is_global_zero:  # every process computed the same summary; one writes it
            return summary
        directory = Path(directory if directory is not None else log_dir or trainer.default_root_dir)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        if self.plots:
            history = hyper.history if hyper is not None else []
            hyperstep_losses = [
                (float(e["step"]), e["validation_loss"]) for e in history if e.get("validation_loss") is not None
            ]
            plot_validation_loss(self.validation_losses, hyperstep_losses, directory / "validation_loss.png")
            if history:
                plot_hyperparameters(history, directory / "hyperparameters.png")
        print_summary(summary, directory)
        return summary


def last_validation_metrics(trainer: Trainer) -> dict[str, dict[str, float]]:
    """``{"validation": {"loss": …, "accuracy": …}}`` from the last validation run's logged metrics."""
    metrics = {
        name.removeprefix("validation_"): float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith("validation_") and "/" not in name
    }
    return {"validation": metrics} if metrics else {}


def build_summary(
    module: LightningModule,
    split_metrics: dict[str, dict[str, float]],
    hyper: HypergradientCallback | None,
    global_step: int,
    wall_time_seconds: float,
) -> dict[str, Any]:
    """The ``summary.json`` record (keys in this module's docstring) of a finished fit."""
    summary: dict[str, Any] = {}
    for split in SPLITS:
        for metric, value in split_metrics.get(split, {}).items():
            summary[f"{split}_{metric}"] = value
    named: list[tuple[str, Any]] = []
    if isinstance(module, BilevelLightningModule):
        named = module.named_hyperparameters()
        summary["weights"] = sum(p.numel() for p in module.weight_parameters())
        summary["hyperparameters"] = sum(p.numel() for _, p in named)
    summary["hyperparameter_summary"] = summarize_hyperparameters(named)
    if isinstance(module, BilevelLightningModule):
        summary["hyperparameter_values"] = summarize_hyperparameters(list(module.hyperparameter_values().items()))
        summary["report_metrics"] = {name: float(value) for name, value in module.report_metrics().items()}
    summary["hypersteps_taken"] = hyper.taken if hyper is not None else 0
    summary["hypersteps_skipped"] = hyper.skipped if hyper is not None else 0
    summary["global_step"] = global_step
    summary["wall_time_seconds"] = round(wall_time_seconds, 2)
    return summary


def held_out_summary(guard: HeldOutGuard | None) -> dict[str, Any]:
    """The ``held_out_*`` keys of ``summary.json`` (none without a guard, or before its final evaluation)."""
    if guard is None or guard.final is None:
        return {}
    final = guard.final
    return {
        "held_out_loss": final["held_out_loss"],
        "held_out_tuned_loss": final["tuned_loss"],
        "held_out_gap": final["held_out_loss"] - final["tuned_loss"],
        "held_out_best_step": int(guard.best["step"]) if guard.best is not None else None,
        "held_out_restored": guard.restored,
        "held_out_warned": guard.warned,
    }


def print_summary(summary: dict[str, Any], directory: Path) -> None:
    """Print the summary as tables (splits, hyperparameters in their units) and say where it was written."""
    table = Table(title="lightning-hypergrad run summary")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column("accuracy", justify="right")
    for split in SPLITS:
        loss, accuracy = summary.get(f"{split}_loss"), summary.get(f"{split}_accuracy")
        table.add_row(split, _format(loss), _format(accuracy))
    values = summary.get("hyperparameter_values", summary["hyperparameter_summary"])
    hyper_table = Table(title="hyperparameters (in their units)")
    for column in ("name", "value / mean", "std", "min", "max"):
        hyper_table.add_column(column, justify="left" if column == "name" else "right")
    for name, stats in values.items():
        hyper_table.add_row(
            name,
            _format(stats.get("value", stats.get("mean"))),
            *(_format(stats.get(k)) for k in ("std", "min", "max")),
        )
    console = Console()
    console.print(table)
    console.print(hyper_table)
    console.print(
        f"hypersteps taken {summary['hypersteps_taken']}, skipped {summary['hypersteps_skipped']}; "
        f"{summary.get('weights', '?')} weights, {summary.get('hyperparameters', '?')} hyperparameters; "
        f"{summary['global_step']} weight steps in {summary['wall_time_seconds']:.1f} s"
    )
    if "held_out_loss" in summary:
        restored = f"restored from step {summary['held_out_best_step']}" if summary["held_out_restored"] else "kept"
        console.print(
            f"held-out loss {summary['held_out_loss']:.4g}, tuned validation loss {summary['held_out_tuned_loss']:.4g} "
            f"(gap {summary['held_out_gap']:+.4g}); final state {restored}"
        )
    for name, value in summary.get("report_metrics", {}).items():
        console.print(f"{name}: {value:.4g}")
    console.print(f"written to {directory}/summary.json")


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
