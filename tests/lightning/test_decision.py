"""The skip decision's inputs and outputs, end to end: what a skipped hyperstep says and records."""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_hypergrad.lightning import decision
from lightning_hypergrad.solvers import ConjugateGradient, SolveStatus
from tests.lightning.test_reliability import fit_faulty


def test_a_hyperstep_without_a_solve_is_not_run_rather_than_diverged() -> None:
    named = [("log_decay", nn.Parameter(torch.tensor(-1.0)))]
    result = decision.unsolved_result([torch.ones(3)], named, math.nan, "the training loss is nan")
    assert result.solve.status is SolveStatus.NOT_RUN and SolveStatus.NOT_RUN.value == "not_run"
    assert not result.solve.converged and result.solve.hvp_count == 0 and result.solve.iterations == 0


def test_a_nan_loss_hyperstep_is_recorded_and_logged_as_no_solve() -> None:
    _, callback, (_, logger, _) = fit_faulty("validation_loss", ConjugateGradient(iterations=5))
    statuses = [entry["solver_status"] for entry in callback.history]
    assert statuses[1] == "not_run"  # the second hyperstep's validation loss was NaN
    assert all(status in ("tolerance_reached", "iterations_exhausted") for i, status in enumerate(statuses) if i != 1)
    hyperstep_logs = [entry for entry in logger.metrics if "hyper/taken" in entry]
    assert [entry["hyper/skipped"] for entry in hyperstep_logs] == [0.0, 1.0, 1.0, 1.0]
    # A solve that never ran measured nothing: no residual, iterations or convergence are logged for it.
    assert not any(key.startswith("hyper/solver_") or key == "hyper/hvp_count" for key in hyperstep_logs[1])
    assert all("hyper/solver_residual" in entry for index, entry in enumerate(hyperstep_logs) if index != 1)
