"""PNG plots of a run, readable without TensorBoard."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

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


def plot_hyperparameters(history: Sequence[dict[str, float]], path: Path) -> Path:
    """One panel per hyperparameter: its value (scalars) or mean with min–max band (tensors) against steps."""
    names = sorted({key.split("/")[1] for entry in history for key in entry if key.startswith("hparam/")})
    shown = names[:MAX_HYPERPARAMETER_PANELS]
    columns = min(3, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure, grid = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    steps = [entry["step"] for entry in history]
    for axes, name in zip(grid.flat, shown):
        if f"hparam/{name}" in history[0]:
            axes.plot(steps, [entry[f"hparam/{name}"] for entry in history])
        else:
            axes.plot(steps, [entry[f"hparam/{name}/mean"] for entry in history], label="mean")
            axes.fill_between(
                steps,
                [entry[f"hparam/{name}/min"] for entry in history],
                [entry[f"hparam/{name}/max"] for entry in history],
                alpha=0.2,
                label="min–max",
            )
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
