"""The end-of-run report: summary.json, a printed table and PNG plots in the run's log directory.

``summary.json`` keys (stable):

- ``train_loss``, ``validation_loss``, ``test_loss``: each split's loss at the final weights (the module's
  ``test_step`` run over that split); ``train_accuracy``, ``validation_accuracy``, ``test_accuracy`` where the
  module logs ``test_accuracy``.
- ``hypersteps_taken``, ``hypersteps_skipped``: from the HypergradientCallback (0 when there is none).
- ``weights``, ``hyperparameters``: counts of scalar weights and hyperparameters.
- ``hyperparameter_summary``: per hyperparameter tensor, ``{"value": v}`` or ``{"mean", "std", "min", "max"}``.
- ``global_step``, ``wall_time_seconds`` (fit only, not the final evaluation).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from rich.console import Console
from rich.table import Table

from lightning_hypergrad.callback import HypergradientCallback
from lightning_hypergrad.metrics import summarize_hyperparameters
from lightning_hypergrad.module import BilevelLightningModule
from lightning_hypergrad.plots import plot_hyperparameters, plot_validation_loss

SPLITS = ("train", "validation", "test")


class RunReport(Callback):
    """Records validation losses and fit time; :meth:`write` produces the report after the final evaluation.

    Args:
        enabled: write the report at the end of ``fit`` (the CLI runs the final evaluation first).
        plots: also write ``validation_loss.png`` and ``hyperparameters.png``.
    """

    def __init__(self, enabled: bool = True, plots: bool = True) -> None:
        self.enabled = enabled
        self.plots = plots
        self.validation_losses: list[tuple[float, float]] = []
        self.wall_time_seconds = 0.0
        self._started = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.wall_time_seconds = time.perf_counter() - self._started

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


def build_summary(
    module: LightningModule,
    split_metrics: dict[str, dict[str, float]],
    hyper: HypergradientCallback | None,
    global_step: int,
    wall_time_seconds: float,
) -> dict[str, Any]:
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
    summary["hypersteps_taken"] = hyper.taken if hyper is not None else 0
    summary["hypersteps_skipped"] = hyper.skipped if hyper is not None else 0
    summary["global_step"] = global_step
    summary["wall_time_seconds"] = round(wall_time_seconds, 2)
    return summary


def print_summary(summary: dict[str, Any], directory: Path) -> None:
    table = Table(title="lightning-hypergrad run summary")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column("accuracy", justify="right")
    for split in SPLITS:
        loss, accuracy = summary.get(f"{split}_loss"), summary.get(f"{split}_accuracy")
        table.add_row(split, _format(loss), _format(accuracy))
    hyper_table = Table(title="hyperparameters (raw values)")
    for column in ("name", "value / mean", "std", "min", "max"):
        hyper_table.add_column(column, justify="left" if column == "name" else "right")
    for name, stats in summary["hyperparameter_summary"].items():
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
    console.print(f"written to {directory}/summary.json")


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
