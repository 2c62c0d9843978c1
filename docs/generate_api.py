"""Writes docs/api.md from the public objects' signatures and docstrings: python docs/generate_api.py"""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning_hypergrad
from lightning_hypergrad import data, distributed, hparams, models, schedules, solvers, tasks
from lightning_hypergrad.cli import HypergradCLI
from lightning_hypergrad.report import RunReport

SECTIONS = [
    (
        "Hypergradients",
        "lightning_hypergrad",
        [
            lightning_hypergrad.hypergradient,
            lightning_hypergrad.hypergradient_with_solve,
            lightning_hypergrad.HypergradientResult,
            lightning_hypergrad.HypergradientWarning,
        ],
    ),
    (
        "Solvers",
        "lightning_hypergrad.solvers",
        [
            solvers.IHVPSolver,
            solvers.SolveResult,
            solvers.SolveStatus,
            solvers.Neumann,
            solvers.ConjugateGradient,
            solvers.Identity,
            solvers.Exact,
        ],
    ),
    (
        "Lightning",
        "lightning_hypergrad",
        [lightning_hypergrad.BilevelLightningModule, lightning_hypergrad.HypergradientCallback],
    ),
    (
        "Hyperparameter families",
        "lightning_hypergrad.hparams",
        [
            hparams.WeightDecay,
            hparams.ConcreteDropout,
            hparams.ExampleWeights,
            hparams.FeatureDecay,
            hparams.DistilledData,
            hparams.LearnedAugmentation,
        ],
    ),
    (
        "Tasks",
        "lightning_hypergrad.tasks",
        [
            tasks.ClassifierTask,
            tasks.WeightDecayClassifier,
            tasks.DistillationClassifier,
            tasks.DropoutClassifier,
            tasks.AugmentationClassifier,
            tasks.FeatureDecayLogisticRegression,
            tasks.ReweightedClassifier,
        ],
    ),
    ("Models", "lightning_hypergrad.models", [models.MLPClassifier]),
    (
        "Data",
        "lightning_hypergrad.data",
        [
            data.DigitsDataModule,
            data.TabularDataModule,
            data.MNISTDataModule,
            data.CIFAR10DataModule,
            data.CIFAR100DataModule,
            data.TorchvisionDataModule,
            data.split_digits,
            data.split_tabular,
            data.flip_labels,
            data.EpochShuffleSampler,
            data.IndexedDataset,
        ],
    ),
    (
        "Distributed helpers",
        "lightning_hypergrad.distributed",
        [
            distributed.all_reduce_mean,
            distributed.broadcast_,
            distributed.identical_across_processes,
            distributed.shard_loader,
            distributed.world_size,
        ],
    ),
    (
        "Schedules",
        "lightning_hypergrad.schedules",
        [schedules.planned_hypersteps, schedules.cosine_hyper_schedule],
    ),
    ("Command line", "lightning_hypergrad.cli", [HypergradCLI, RunReport]),
]


def render() -> str:
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/generate_api.py`; do not edit by hand.",
        "",
    ]
    for title, module, objects in SECTIONS:
        lines += [f"## {title}", ""]
        for obj in objects:
            try:
                signature = str(inspect.signature(obj))
            except (TypeError, ValueError):
                signature = ""
            kind = "class" if inspect.isclass(obj) else "def"
            lines += [f"### `{module}.{obj.__name__}`", "", f"```python\n{kind} {obj.__name__}{signature}\n```", ""]
            lines += [inspect.cleandoc(obj.__doc__ or "(no docstring)"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(__file__).with_name("api.md")
    path.write_text(render())
    print(f"wrote {path}")
