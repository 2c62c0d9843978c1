"""Hypergradient tuning against random search, on the default job's setting, measured in one run.

Random search trains the MLP once per trial with a global weight decay drawn log-uniformly from [1e-6, 1] and
keeps the trial with the lowest validation loss; the hypergradient runs train once while tuning a global decay
and one decay per weight. Prints each method's validation and test loss and its wall time relative to one
plain training run. Run: python benchmarks/versus_search.py [--trials 10 --epochs 40]
"""

from __future__ import annotations

import argparse
import math
import random
import time

import lightning as L
import torch

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import Neumann
from lightning_hypergrad.tasks import WeightDecayClassifier


def train(epochs: int, granularity: str, initial_decay: float, tune: bool) -> dict[str, float]:
    L.seed_everything(0, verbose=False)
    model = WeightDecayClassifier(
        MLPClassifier(hidden=(128,)), decay_granularity=granularity, initial_decay=initial_decay
    )
    callbacks = []
    if tune:
        optimizer = lambda params: torch.optim.Adam(params, lr=0.05)  # noqa: E731
        callbacks.append(HypergradientCallback(Neumann(iterations=20), optimizer, every_n_steps=5, warmup_steps=50))
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    data = DigitsDataModule()
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    validation = trainer.validate(model, data, verbose=False)[0]["validation_loss"]
    test = trainer.test(model, data, verbose=False)[0]["test_loss"]
    return {"validation": validation, "test": test, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=40)
    arguments = parser.parse_args()

    unit = train(arguments.epochs, "global", 1e-3, tune=False)
    rng = random.Random(0)
    trials = []
    for _ in range(arguments.trials):
        decay = math.exp(rng.uniform(math.log(1e-6), math.log(1.0)))
        trials.append((decay, train(arguments.epochs, "global", decay, tune=False)))
    best_decay, best = min(trials, key=lambda trial: trial[1]["validation"])
    search_seconds = sum(result["seconds"] for _, result in trials)
    rows = [
        ("one run, fixed decay 1e-3", unit["validation"], unit["test"], unit["seconds"]),
        (
            f"random search, {arguments.trials} trials (best {best_decay:.1e})",
            best["validation"],
            best["test"],
            search_seconds,
        ),
    ]
    for granularity in ("global", "per_weight"):
        result = train(arguments.epochs, granularity, 1e-3, tune=True)
        rows.append((f"hypergradient, {granularity} decay", result["validation"], result["test"], result["seconds"]))
    print(f"digits MLP 64-128-10, {arguments.epochs} epochs; time relative to one plain run ({unit['seconds']:.1f} s)")
    print(f"{'method':<48} {'val loss':>9} {'test loss':>10} {'× one run':>10}")
    for name, validation, test, seconds in rows:
        print(f"{name:<48} {validation:9.4f} {test:10.4f} {seconds / unit['seconds']:10.1f}")


if __name__ == "__main__":
    main()
