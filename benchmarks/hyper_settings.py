"""Sweeps of the hyperstep settings behind docs/recipes.md: one shipped config, a few variants, 3 seeds each.

Each variant patches the config's HypergradientCallback arguments (solver, hyper optimizer, every_n_steps,
warmup_steps) and runs it as the CLI would; "none" removes the callback (the untuned baseline). Prints per
variant the 3-seed mean validation and test loss, test accuracy, the time relative to the untuned run measured
in the same invocation, the task's report metrics, and the spread of its hyperparameters.
Run: ``python benchmarks/hyper_settings.py weight_decay_global`` (or a family below; ``--seeds``, ``--epochs``).
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import torch
from config_runs import load, quiet, train, without_tuning

from lightning_hypergrad import HypergradientCallback

IDENTITY = {"class_path": "lightning_hypergrad.solvers.Identity", "init_args": {"alpha": 1.0}}
NEUMANN_AUTO = {"class_path": "lightning_hypergrad.solvers.Neumann", "init_args": {"iterations": 20, "alpha": "auto"}}
CG = {"class_path": "lightning_hypergrad.solvers.ConjugateGradient", "init_args": {"iterations": 30, "rtol": 1e-6}}


def adam(lr: float) -> dict[str, Any]:
    return {"class_path": "torch.optim.Adam", "init_args": {"lr": lr}}


# family -> (config, {variant: callback arguments, or "none"})
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "weight_decay_global": (
        "digits_weight_decay_global.yaml",
        {
            "none": "none",
            "shipped": {},
            "Neumann(20, auto), Adam 0.05 constant": {
                "solver": NEUMANN_AUTO,
                "hyper_optimizer": adam(0.05),
                "hyper_lr_scheduler": None,
            },
            "Adam 0.05 constant": {"hyper_optimizer": adam(0.05), "hyper_lr_scheduler": None},
            "Adam 0.2 constant": {"hyper_optimizer": adam(0.2), "hyper_lr_scheduler": None},
            "Adam 0.05, cosine": {"hyper_optimizer": adam(0.05)},
            "Adam 0.2, cosine": {"hyper_optimizer": adam(0.2)},
        },
    ),
    "weight_decay_per_weight": (
        "digits_weight_decay.yaml",
        {
            "none": "none",
            "shipped": {},
            "Identity, Adam 0.05": {"solver": IDENTITY, "hyper_optimizer": adam(0.05)},
            "Neumann(20, auto), Adam 0.01": {"solver": NEUMANN_AUTO, "hyper_optimizer": adam(0.01)},
        },
    ),
    "feature_decay": (
        "breast_cancer_feature_decay.yaml",
        {
            "none": "none",
            "shipped": {},
            "Identity, Adam 0.05": {"solver": IDENTITY},
            "CG(30), Adam 0.2": {"hyper_optimizer": adam(0.2)},
            "CG(30), Adam 0.05, every 1": {"every_n_steps": 1},
        },
    ),
    "example_weights": (
        "digits_noisy_labels.yaml",
        {
            "none": "none",
            "shipped": {},
            "Adam 0.1": {"hyper_optimizer": adam(0.1)},
            "Adam 0.01": {"hyper_optimizer": adam(0.01)},
            "every 2": {"every_n_steps": 2},
            "warmup 50": {"warmup_steps": 50},
            "Neumann(20, auto)": {"solver": NEUMANN_AUTO},
        },
    ),
    "dropout": (
        "digits_dropout.yaml",
        {
            "none": "none",
            "shipped": {},
            "Identity, shipped optimizer": {"solver": IDENTITY},
            "every 1": {"every_n_steps": 1},
        },
    ),
}


def variant_settings(config: str, patch: Any, epochs: int | None) -> dict[str, Any]:
    settings = load(config)
    if epochs is not None:
        settings["trainer"]["max_epochs"] = epochs
    if patch == "none":
        return without_tuning(settings)
    settings = copy.deepcopy(settings)
    settings["trainer"]["callbacks"][0]["init_args"].update(patch)
    return settings


def spread(values: dict[str, torch.Tensor]) -> str:
    flat = torch.cat([v.detach().flatten().float() for v in values.values()])
    if flat.numel() == 1:
        return f"value {float(flat):.3g}"
    return f"min {float(flat.min()):.3g} median {float(flat.median()):.3g} max {float(flat.max()):.3g}"


def trajectory(model: Any) -> str:
    """How the first logged hyperparameter (its value, or its mean) moved: a sign of whether it settled."""
    hyper = next((c for c in model.trainer.callbacks if isinstance(c, HypergradientCallback)), None)
    if hyper is None or len(hyper.history) < 8:
        return ""
    # A scalar's value, a tensor's mean (meaningless for example weights, whose mean log-weight is held at 0).
    name = next(iter(hyper.history[-1]["hyperparameters"]))
    statistic = "value" if "value" in hyper.history[-1]["hyperparameters"][name] else "mean"
    key = f"hparam/{name}" if statistic == "value" else f"hparam/{name}/mean"
    values = torch.tensor([entry["hyperparameters"][name][statistic] for entry in hyper.history])
    total = float((values[-1] - values[0]).abs()) or float("nan")
    late = float((values[-1] - values[3 * len(values) // 4]).abs())
    falls = float((values.diff() < 0).float().mean())
    return (
        f"; {key} fell on {100 * falls:.0f}% of hypersteps, last quarter moved {100 * late / total:.0f}% of the total"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs")
    parser.add_argument("--variants", nargs="+", default=None, help="a subset of the family's variant names")
    arguments = parser.parse_args()
    quiet()
    config, variants = FAMILIES[arguments.family]
    chosen = arguments.variants or list(variants)
    print(f"{config}: mean over seeds {arguments.seeds}; time relative to the untuned run ('none')")
    print(
        f"{'variant':<36} {'val loss':>9} {'test loss':>10} {'test acc':>9} {'time ×':>7}  report metrics; hyperparameters"
    )
    baseline_seconds = None
    for name in ["none", *[v for v in chosen if v != "none"]]:
        runs = [train(variant_settings(config, variants[name], arguments.epochs), seed) for seed in arguments.seeds]
        seconds = statistics.mean(outcome.seconds for outcome, _ in runs)
        baseline_seconds = baseline_seconds or seconds
        metrics: dict[str, list[float]] = {}
        for _, model in runs:
            for key, value in model.report_metrics().items():
                metrics.setdefault(key, []).append(value)
        shown = ", ".join(f"{key} {statistics.mean(values):.3f}" for key, values in metrics.items())
        print(
            f"{name:<36} {statistics.mean(o.validation_loss for o, _ in runs):9.4f} "
            f"{statistics.mean(o.test_loss for o, _ in runs):10.4f} {statistics.mean(o.test_accuracy for o, _ in runs):9.4f} "
            f"{seconds / baseline_seconds:7.2f}  {shown}; seed {arguments.seeds[0]}: {spread(runs[0][1].hyperparameter_values())}"
            f"{trajectory(runs[0][1])}",
            flush=True,
        )


if __name__ == "__main__":
    main()
