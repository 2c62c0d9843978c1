"""PNG plots of a run, readable without TensorBoard."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers
import matplotlib.pyplot as plt

MAX_HYPERPARAMETER_PANELS = 6


def plot_validation_loss(
    epoch_losses: Sequence[tuple[float, float]], hyperstep_losses: Sequence[tuple[float, float]], path: Path
) -> Path:
    """Validation loss against weight steps: per validation run, and on each hyperstep's batch."""
    figure, axes = plt.subplots(figsize=(6, 4))
    if hyperstep_losses:
        steps, losses = zip(*hyperstep_losses)
        axes.plot(steps, losses, ".", alpha=0.4, label="hyperstep batch")
    if epoch_losses:
        steps, losses = zip(*epoch_losses)
        axes.plot(steps, losses, "o-", label="validation set")
    axes.set_xlabel("weight step")
    axes.set_ylabel("validation loss")
    if hyperstep_losses or epoch_losses:
        axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_hyperparameters(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """One panel per hyperparameter: its value (scalars) or mean with min–max band (tensors) against steps.

    ``history`` holds :class:`~lightning_hypergrad.lightning.records.HyperstepRecord` entries as dicts (the callback's
    ``history``): ``step`` and ``hyperparameters`` (name → ``{"value"}`` or ``{"mean", "std", "min", "max"}``).
    """
    names = sorted({name for entry in history for name in entry["hyperparameters"]})
    shown = names[:MAX_HYPERPARAMETER_PANELS]
    columns = min(3, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axes, name in zip(grid.flat, shown):
        entries = [entry for entry in history if name in entry["hyperparameters"]]
        steps = [entry["step"] for entry in entries]
        values = [entry["hyperparameters"][name] for entry in entries]
        if "value" in values[0]:
            axes.plot(steps, [value["value"] for value in values])
        else:
            axes.plot(steps, [value["mean"] for value in values], label="mean")
            low, high = [value["min"] for value in values], [value["max"] for value in values]
            axes.fill_between(steps, low, high, alpha=0.2, label="min–max")
            axes.legend(fontsize="small")
        axes.set_title(name, fontsize="small")
        axes.set_xlabel("weight step")
        axes.grid(alpha=0.3)
    for axes in list(grid.flat)[len(shown) :]:
        axes.axis("off")
    if len(names) > len(shown):
        figure.suptitle(f"first {len(shown)} of {len(names)} hyperparameter tensors")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
