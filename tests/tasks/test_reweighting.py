"""Per-example loss weights: the weighted average, the scale they are kept on, and finding flipped labels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lightning_hypergrad.cli import HypergradCLI
from lightning_hypergrad.data import DigitsDataModule
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.tasks import ReweightedClassifier
from lightning_hypergrad.tasks.reweighting import flipped_example_metrics
from tests.lightning_helpers import make_trainer

CONFIG = Path(__file__).parents[2] / "configs" / "digits_noisy_labels.yaml"


def small_task(num_examples: int = 6) -> ReweightedClassifier:
    torch.manual_seed(0)
    return ReweightedClassifier(MLPClassifier(in_features=4, hidden=(), num_classes=3), 3, num_examples).double()


def test_training_loss_is_the_weighted_average_and_ignores_the_weights_scale() -> None:
    task = small_task()
    inputs, targets = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 2, 1])
    indices = torch.tensor([5, 0, 3])
    with torch.no_grad():
        task.example_weights.raw.copy_(torch.tensor([0.5, 0.0, 0.0, -1.0, 0.0, 2.0], dtype=torch.float64))
    losses = torch.nn.functional.cross_entropy(task(inputs), targets, reduction="none")
    weights = torch.tensor([2.0, 0.5, -1.0], dtype=torch.float64).exp()
    expected = (weights * losses).sum() / weights.sum()
    loss = task.training_loss((indices, inputs, targets))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-14)
    with torch.no_grad():
        task.example_weights.raw.add_(3.0)  # every weight × e³
    assert float(task.training_loss((indices, inputs, targets)).detach()) == pytest.approx(
        float(loss.detach()), rel=1e-14
    )


def test_projection_recentres_the_log_weights_and_bounds_them() -> None:
    task = ReweightedClassifier(MLPClassifier(in_features=4, hidden=(), num_classes=3), 3, 4, max_weight=10.0).double()
    with torch.no_grad():
        task.example_weights.raw.copy_(torch.tensor([1.0, 2.0, 3.0, 50.0], dtype=torch.float64))
        task.project_hyperparameters()
    centred = torch.tensor([1.0, 2.0, 3.0, 50.0], dtype=torch.float64) - 14.0
    expected = centred.clamp(-math.log(10.0), math.log(10.0)).exp()
    assert torch.allclose(task.hyperparameter_values()["example_weights"], expected, rtol=1e-14)
    with pytest.raises(
        ValueError, match=r"ReweightedClassifier\(max_weight=1\): max_weight must be a finite number > 1"
    ):
        ReweightedClassifier(num_examples=4, max_weight=1)


def test_flipped_example_metrics_against_hand_counts() -> None:
    flipped = torch.tensor([True, True, False, False, False])
    # Pairs (flipped, clean) with the flipped weight lower: 0.1 beats all 3, 0.6 beats 2 of 3 (0.5 < 0.6): 5 of 6.
    metrics = flipped_example_metrics(torch.tensor([0.1, 0.6, 0.5, 1.0, 2.0]), flipped)
    assert metrics["flipped_example_auroc"] == pytest.approx(5 / 6)
    assert metrics["mean_weight_flipped"] == pytest.approx(0.35) and metrics["mean_weight_clean"] == pytest.approx(
        3.5 / 3
    )
    assert flipped_example_metrics(torch.tensor([3.0, 4.0, 0.5, 1.0, 2.0]), flipped)["flipped_example_auroc"] == 0.0
    with pytest.raises(ValueError, match=r"weights \(4,\) and flipped flags \(5,\) must match"):
        flipped_example_metrics(torch.ones(4), flipped)


def test_a_training_split_of_another_size_is_refused() -> None:
    task = ReweightedClassifier(num_examples=1000)
    with pytest.raises(ValueError, match=r"num_examples=1000\) does not match .* 1079 examples; set num_examples=1079"):
        make_trainer(max_steps=1).fit(task, DigitsDataModule(indexed=True))


def test_shipped_config_gives_flipped_examples_lower_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    # A shortened run (6 of 40 epochs: 102 hypersteps), built from the shipped config as the CLI builds it.
    cli = HypergradCLI(args=["--config", str(CONFIG), "--trainer.max_epochs=6", *quiet], run=False)
    assert cli.datamodule.flipped.sum() == round(0.3 * 1079)
    cli.trainer.fit(cli.model, cli.datamodule)
    metrics = cli.model.report_metrics()
    assert metrics["flipped_example_auroc"] > 0.85
    assert metrics["mean_weight_flipped"] < 0.8 < 1.0 < metrics["mean_weight_clean"]
    weights = cli.model.hyperparameter_values()["example_weights"]
    assert weights.shape == (1079,) and float(weights.log().mean()) == pytest.approx(0.0, abs=1e-5)
