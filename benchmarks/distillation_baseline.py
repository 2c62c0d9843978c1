"""What ten distilled digits teach a fresh classifier, against ten real ones: the README's distillation figures.

Runs ``configs/digits_distillation.yaml`` as the CLI would (no logging, no report), then trains a new logistic
regression to convergence on the ten learned images alone and, for comparison, on the first real training image
of each class, and prints each one's accuracy on the real test digits.
Run: python benchmarks/distillation_baseline.py [--epochs 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from lightning_hypergrad.cli import HypergradCLI  # noqa: E402
from lightning_hypergrad.data import split_digits  # noqa: E402
from lightning_hypergrad.tasks.distillation import fresh_classifier_accuracy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    arguments = parser.parse_args()
    config = ROOT / "configs" / "digits_distillation.yaml"
    cli = HypergradCLI(
        args=[
            "--config",
            str(config),
            f"--trainer.max_epochs={arguments.epochs}",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            "--report.enabled=false",
        ],
        run=False,
    )
    cli.trainer.fit(cli.model, cli.datamodule)
    images, labels = (tensor.detach() for tensor in cli.model.distilled())
    split = split_digits()
    test = (split.test_inputs, split.test_targets)
    first_of_each_class = torch.stack([torch.nonzero(split.train_targets == c)[0, 0] for c in range(10)])
    real = fresh_classifier_accuracy(
        split.train_inputs[first_of_each_class], split.train_targets[first_of_each_class], *test
    )
    distilled = fresh_classifier_accuracy(images, labels, *test)
    print(f"{config.name}, {arguments.epochs} epochs; a fresh logistic regression on the real test digits:")
    print(f"  trained on the 10 distilled images: {distilled:.1%}")
    print(f"  trained on 10 real images (the first of each class): {real:.1%}")


if __name__ == "__main__":
    main()
