"""Per-feature decay logistic regression: the penalty, scikit-learn equivalence, an exact hypergradient, a tuned run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from lightning_hypergrad import hypergradient
from lightning_hypergrad.cli import main
from lightning_hypergrad.data import split_tabular
from lightning_hypergrad.hparams import FeatureDecay
from lightning_hypergrad.solvers import Exact
from lightning_hypergrad.tasks import FeatureDecayLogisticRegression

CONFIG = Path(__file__).parents[2] / "configs" / "breast_cancer_feature_decay.yaml"


def fit_full_batch(task: FeatureDecayLogisticRegression, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Minimise the training loss to machine precision (L-BFGS, float64): the inner problem is strictly convex."""
    optimizer = torch.optim.LBFGS(
        task.weight_parameters(),
        max_iter=500,
        tolerance_grad=1e-13,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = task.training_loss((inputs, targets))
        loss.backward(inputs=task.weight_parameters())
        return loss

    for _ in range(2):
        optimizer.step(closure)


def test_penalty_is_half_the_coefficient_weighted_column_norms() -> None:
    decay = FeatureDecay(3, "per_feature", initial=0.5).double()
    with torch.no_grad():
        decay.log_coefficients.copy_(torch.tensor([0.1, 1.0, 4.0], dtype=torch.float64).log())
    weight = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    assert float(decay(weight).detach()) == pytest.approx(0.5 * (0.1 * 2 + 1.0 * 4 + 4.0 * 10), rel=1e-14)
    global_decay = FeatureDecay(3, "global").double()
    with torch.no_grad():
        global_decay.log_coefficients.fill_(math.log(2.0))
    assert float(global_decay(weight).detach()) == pytest.approx(0.5 * 2.0 * 16, rel=1e-14)
    with pytest.raises(ValueError, match=r"built for weight matrices with 3 columns \(features\); got shape \(3, 2\)"):
        decay(weight.T)
    with pytest.raises(ValueError, match=r"FeatureDecay\(granularity='per_row'\): allowed values are"):
        FeatureDecay(3, "per_row")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "factor"), [("breast_cancer", 2.0), ("wine", 1.0)])
def test_global_decay_is_scikit_learns_logistic_regression(name: str, factor: float) -> None:
    split = split_tabular(name, seed=0)
    inputs, targets, c = split.train_inputs.double(), split.train_targets, 0.5
    reference = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(inputs.numpy(), targets.numpy())
    task = FeatureDecayLogisticRegression(inputs.shape[1], split.num_classes, "global", factor / (c * len(targets)))
    task = task.double()
    fit_full_batch(task, inputs, targets)
    probabilities = torch.softmax(task(split.test_inputs.double()), dim=1).detach()
    expected = torch.as_tensor(reference.predict_proba(split.test_inputs.double().numpy()))
    assert torch.allclose(probabilities, expected, atol=1e-6)


def test_hypergradient_matches_finite_differences_of_the_refitted_validation_loss() -> None:
    split = split_tabular("wine", seed=1)
    train, validation = (
        (split.train_inputs.double(), split.train_targets),
        (split.val_inputs.double(), split.val_targets),
    )
    torch.manual_seed(0)
    task = FeatureDecayLogisticRegression(13, 3, "per_feature", initial_decay=0.05).double()
    with torch.no_grad():  # distinct coefficients, so a mix-up between features would show
        task.feature_decay.log_coefficients.add_(torch.linspace(-1.0, 1.0, 13, dtype=torch.float64))
    start = {name: value.clone() for name, value in task.state_dict().items()}

    def refitted_validation_loss() -> float:
        fit_full_batch(task, *train)
        return float(task.validation_loss(validation).detach())

    refitted_validation_loss()
    (analytic,) = hypergradient(
        task.training_loss(train),
        task.validation_loss(validation),
        task.weight_parameters(),
        task.hyperparameters(),
        Exact(),
    )
    step = 1e-4
    for feature in (0, 12):
        losses = []
        for sign in (1, -1):
            task.load_state_dict(start)
            with torch.no_grad():
                task.feature_decay.log_coefficients[feature] += sign * step
            losses.append(refitted_validation_loss())
        assert (losses[0] - losses[1]) / (2 * step) == pytest.approx(float(analytic[feature]), rel=1e-4, abs=1e-9)


def test_hyperparameter_values_are_the_decay_coefficients() -> None:
    task = FeatureDecayLogisticRegression(5, 2, initial_decay=0.2)
    values = task.hyperparameter_values()
    assert set(values) == {"feature_decay"} and torch.allclose(values["feature_decay"], torch.full((5,), 0.2))
    assert task.report_metrics() == {}


def test_shipped_config_beats_the_same_run_without_tuning(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    quiet = ["--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    summaries = []
    for extra in ([], ["--trainer.callbacks=[]"]):
        main(["fit", "--config", str(CONFIG), "--trainer.max_epochs=150", *quiet, *extra])
        summaries.append(json.loads((tmp_path / "summary.json").read_text()))
    tuned, fixed = summaries
    assert tuned["hyperparameters"] == 30 and tuned["hypersteps_taken"] == 20 and tuned["hypersteps_skipped"] == 0
    assert tuned["validation_loss"] < 0.9 * fixed["validation_loss"]
