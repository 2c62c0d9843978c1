"""Learned class weights against inverse-frequency weights on long-tailed digits, judged on the balanced test split.

The training split keeps a ``ratio^(−k/9)`` share of digit k (class 9: ``1/ratio`` of its examples); validation
and test stay about balanced. Variants, each fitted once per seed (split, shuffling and initial weights all follow
the seed): ``uniform`` (plain cross-entropy), ``inverse frequency`` (the fixed remedy users reach for first),
``class weights`` (learned from uniform), ``class weights from inverse frequency`` (learned, started there) and
``example weights`` (one learned weight per training example, ReweightedClassifier). Prints the mean balanced test
accuracy (mean per-class recall), the test loss, and each variant's mean paired difference to inverse frequency
with its standard error over seeds.
Run: python benchmarks/class_weights.py [--seeds 0 1 2 3 4 5 6 7 8 9] [--ratio 10] [--epochs 40] [--hyper-lr 0.05]
[--variants NAME ...]
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
from typing import Any

import lightning as L
import torch
from torchmetrics.functional.classification import multiclass_accuracy

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.tasks import ClassWeightedClassifier, ReweightedClassifier

HYPER_LEARNING_RATE = 0.05


def callback(hyper_learning_rate: float) -> HypergradientCallback:
    adam = functools.partial(torch.optim.Adam, lr=hyper_learning_rate)
    return HypergradientCallback(Neumann(), hyper_optimizer=adam, every_n_steps=5, warmup_steps=20)


def variants() -> dict[str, tuple[Any, bool, bool]]:
    """name -> (task factory, tuned, indexed data)."""
    return {
        "uniform": (lambda data: ClassWeightedClassifier(), False, False),
        "inverse frequency": (lambda data: ClassWeightedClassifier(initial="inverse_frequency"), False, False),
        "class weights": (lambda data: ClassWeightedClassifier(), True, False),
        "class weights from inverse frequency": (
            lambda data: ClassWeightedClassifier(initial="inverse_frequency"),
            True,
            False,
        ),
        "example weights": (lambda data: ReweightedClassifier(num_examples=data.train_size), True, True),
    }


def fit(name: str, seed: int, ratio: float, epochs: int, hyper_learning_rate: float) -> tuple[float, float]:
    """Balanced test accuracy and test loss of one variant, one seed."""
    factory, tuned, indexed = variants()[name]
    L.seed_everything(seed, verbose=False)
    data = DigitsDataModule(seed=seed, class_imbalance=ratio, indexed=indexed)
    task = factory(data)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[callback(hyper_learning_rate)] if tuned else [],
    )
    trainer.fit(task, data)
    split = data.split
    task.eval()
    with torch.no_grad():
        logits = task(split.test_inputs)
    balanced = multiclass_accuracy(logits, split.test_targets, num_classes=10, average="macro")
    loss = torch.nn.functional.cross_entropy(logits, split.test_targets)
    return float(balanced), float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--ratio", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--hyper-lr", type=float, default=HYPER_LEARNING_RATE)
    parser.add_argument("--variants", nargs="+", default=list(variants()))
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = ["inverse frequency", *[name for name in args.variants if name != "inverse frequency"]]
    results = {name: [fit(name, seed, args.ratio, args.epochs, args.hyper_lr) for seed in args.seeds] for name in names}
    reference = [accuracy for accuracy, _ in results["inverse frequency"]]
    print(
        f"long-tailed digits, ratio {args.ratio:g}, {len(args.seeds)} seeds, {args.epochs} epochs, "
        f"hyper learning rate {args.hyper_lr:g}"
    )
    print(f"{'variant':38s} {'balanced test acc':>18s} {'test loss':>10s} {'Δ acc vs inverse frequency':>28s}")
    for name, rows in results.items():
        accuracies = [accuracy for accuracy, _ in rows]
        losses = [loss for _, loss in rows]
        differences = [a - r for a, r in zip(accuracies, reference)]
        error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else math.nan
        print(
            f"{name:38s} {statistics.mean(accuracies):18.4f} {statistics.mean(losses):10.4f} "
            f"{statistics.mean(differences):+20.4f} ± {error:.4f}"
        )


if __name__ == "__main__":
    main()
