"""The warning when conjugate gradient stops at negative curvature on most hypersteps (a non-convex network)."""

from __future__ import annotations

import warnings

import lightning as L
import pytest

from lightning_hypergrad import HypergradientCallback, HypergradientWarning
from lightning_hypergrad.data import TabularDataModule
from lightning_hypergrad.lightning.curvature import negative_curvature_share, warn_once_if_mostly_negative_curvature
from lightning_hypergrad.solvers import ConjugateGradient
from lightning_hypergrad.tasks import FeatureDecayLogisticRegression
from tests.lightning_helpers import digits, make_trainer, small_classifier

WARNING = "stopped at negative curvature"


def curvature_warnings(model, datamodule, max_epochs: int) -> tuple[list[str], HypergradientCallback]:
    L.seed_everything(0, verbose=False)
    callback = HypergradientCallback(ConjugateGradient(iterations=30, rtol=1e-6), every_n_steps=5, warmup_steps=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer([callback], max_epochs=max_epochs).fit(model, datamodule)
    return [
        str(w.message) for w in caught if issubclass(w.category, HypergradientWarning) and WARNING in str(w.message)
    ], callback


def test_cg_on_an_mlp_warns_once_that_it_stops_at_negative_curvature_and_names_the_alternatives() -> None:
    messages, callback = curvature_warnings(small_classifier(decay_granularity="per_weight"), digits(), max_epochs=3)
    stopped, ran = negative_curvature_share(callback.history)
    assert ran >= 5 and 2 * stopped >= ran  # the network's Hessian really is indefinite here
    assert len(messages) == 1
    assert "damping" in messages[0] and "Neumann()" in messages[0] and "Amortized()" in messages[0]


def test_cg_on_a_convex_logistic_regression_does_not_warn() -> None:
    model = FeatureDecayLogisticRegression(in_features=30, num_classes=2)
    messages, callback = curvature_warnings(model, TabularDataModule("breast_cancer"), max_epochs=60)
    stopped, ran = negative_curvature_share(callback.history)
    assert ran >= 5 and stopped == 0
    assert messages == []


def entries(*statuses: str | None) -> list[dict]:
    return [{"solver_status": status} for status in statuses]


def test_the_share_counts_only_solves_that_ran_and_needs_five_of_them() -> None:
    history = entries("negative_curvature", "not_run", None, "tolerance_reached", "negative_curvature")
    assert negative_curvature_share(history) == (2, 3)
    assert not warn_once_if_mostly_negative_curvature(entries(*["negative_curvature"] * 4), damping=0.0)
    with pytest.warns(HypergradientWarning, match=r"on 3 of 5 hypersteps.*set damping=μ"):
        assert warn_once_if_mostly_negative_curvature(
            entries(*["negative_curvature"] * 3, "tolerance_reached", "iterations_exhausted"), damping=0.0
        )
    assert not warn_once_if_mostly_negative_curvature(
        entries(*["negative_curvature"] * 2, *["tolerance_reached"] * 3), damping=0.0
    )
    with pytest.warns(HypergradientWarning, match=r"raise damping \(now 0.1\)"):
        warn_once_if_mostly_negative_curvature(entries(*["negative_curvature"] * 5), damping=0.1)
