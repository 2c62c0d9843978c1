"""Does the held-out guard buy test loss? Tuned fits with and without it, judged on the test split over seeds.

For each config, every variant fits once per seed (``seed_everything`` and the data split follow it), then the
final state is scored on the untouched test split. Variants: ``all validation`` (as shipped: the hypersteps tune on
the whole validation split), ``half, no guard`` (they tune on half of it, ``held_out_fraction=0.5``, nothing
else changes), ``half + guard (λ)`` and ``half + guard (λ and weights)`` (the other half feeds a
``HeldOutGuard`` evaluated every 5 hypersteps, restoring the hyperparameters, or the whole state, that were best
on it). Prints the mean test loss and accuracy per variant and each variant's mean paired difference in test loss
to ``all validation`` with its standard error.
Run: python benchmarks/held_out_guard.py [--seeds 0 1 2] [--configs configs/breast_cancer_feature_decay.yaml ...]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
from pathlib import Path

import torch
import yaml
from fit_overhead import QUIET  # the same quiet fit: no logger, checkpoints, bars or report

from lightning_hypergrad.cli import HypergradCLI

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ["configs/breast_cancer_feature_decay.yaml", "configs/digits_weight_decay.yaml"]


def variants(config: dict) -> dict[str, dict]:
    def half(restore: str | None) -> dict:
        varied = copy.deepcopy(config)
        varied["data"]["init_args"]["held_out_fraction"] = 0.5
        if restore is not None:
            guard = {"class_path": "lightning_hypergrad.HeldOutGuard", "init_args": {"restore": restore}}
            varied["trainer"]["callbacks"] = [*varied["trainer"]["callbacks"], guard]
        return varied

    return {
        "all validation": config,
        "half, no guard": half(None),
        "half + guard (λ)": half("hyperparameters"),
        "half + guard (λ and weights)": half("hyperparameters_and_weights"),
    }


def test_scores(config: dict, directory: Path, seed: int) -> tuple[float, float]:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    extra = [f"--seed_everything={seed}", f"--data.init_args.seed={seed}", f"--trainer.default_root_dir={directory}"]
    cli = HypergradCLI(args=["--config", str(path), *QUIET, *extra], run=False)
    cli.trainer.fit(cli.model, cli.datamodule)
    (scores,) = cli.trainer.test(cli.model, dataloaders=cli.datamodule.test_dataloader(), verbose=False)
    return float(scores["test_loss"]), float(scores.get("test_accuracy", math.nan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    for name in arguments.configs:
        cases = variants(yaml.safe_load((ROOT / name).read_text()))
        with tempfile.TemporaryDirectory() as directory:
            results = {
                case: [test_scores(config, Path(directory), seed) for seed in arguments.seeds]
                for case, config in cases.items()
            }
        reference = [loss for loss, _ in results["all validation"]]
        print(f"\n{name}: {len(arguments.seeds)} seeds, scored on the test split")
        print(f"{'variant':32s} {'test loss':>10s} {'test acc':>9s} {'Δ test loss vs all validation':>31s}")
        for case, rows in results.items():
            differences = [loss - r for (loss, _), r in zip(rows, reference)]
            error = statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else math.nan
            print(
                f"{case:32s} {statistics.mean(loss for loss, _ in rows):10.4f} "
                f"{statistics.mean(acc for _, acc in rows):9.4f} {statistics.mean(differences):+23.4f} ± {error:.4f}"
            )


if __name__ == "__main__":
    main()
