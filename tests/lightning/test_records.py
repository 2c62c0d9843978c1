"""The hyperstep record: one pure function from a result to structured metrics, their logged names, the history."""

from __future__ import annotations

import math

import torch
from torch import nn

from lightning_hypergrad.engine.hypergradient import HypergradientResult
from lightning_hypergrad.lightning import callback as callback_module
from lightning_hypergrad.lightning.records import append_bounded, hyperstep_record, record_from_logged
from lightning_hypergrad.solvers.base import SolveResult, SolveStatus
from tests.fixtures.make_callback_checkpoint import fit


def a_result(converged: bool = True) -> HypergradientResult:
    solve = SolveResult(
        solution=(torch.zeros(3),),
        converged=converged,
        status=SolveStatus.TOLERANCE_REACHED if converged else SolveStatus.DIVERGED,
        iterations=7,
        residual_norm=torch.tensor(0.25),
        hvp_count=8,
        alpha=0.5,
    )
    return HypergradientResult((torch.ones(2),), (torch.ones(2),), solve, torch.tensor(3.0))


NAMED = [("log_decay", nn.Parameter(torch.tensor(-1.5))), ("rates", nn.Parameter(torch.tensor([1.0, 2.0, 3.0])))]


def test_a_record_holds_the_result_and_the_hyperparameters_structured() -> None:
    record = hyperstep_record(a_result(), NAMED, 12, True, 0.75, 2.5, taken=3, skipped=1)
    assert (record.step, record.applied, record.hypergradient_norm, record.validation_loss) == (12, True, 0.75, 2.5)
    assert (record.solver_iterations, record.hvp_count, record.solver_residual, record.alpha) == (7, 8, 0.25, 0.5)
    assert record.solver_status == "tolerance_reached"
    assert record.hyperparameters == {
        "log_decay": {"value": -1.5},
        "rates": {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0},
    }
    logged = record.logged()
    assert logged["hparam/log_decay"] == -1.5 and logged["hparam/rates/max"] == 3.0
    assert logged["hyper/taken"] == 3.0 and logged["hyper/skipped"] == 1.0 and logged["hyper/alpha"] == 0.5
    assert record.progress_bar() == {
        "hyper/skipped": 1.0,
        "hyper/validation_loss": 2.5,
        "hparam/log_decay": -1.5,
        "hparam/rates/mean": 2.0,
    }


def test_the_hypersteps_loss_scale_is_logged_only_under_a_grad_scaler() -> None:
    scaled = hyperstep_record(a_result(), NAMED, 12, True, 0.75, 2.5, taken=3, skipped=1, loss_scale=2048.0)
    assert scaled.loss_scale == 2048.0 and scaled.logged()["hyper/loss_scale"] == 2048.0
    unscaled = hyperstep_record(a_result(), NAMED, 12, True, 0.75, 2.5, taken=3, skipped=1)
    assert unscaled.loss_scale is None and "hyper/loss_scale" not in unscaled.logged()


def test_a_skipped_hyperstep_has_no_hypergradient_norm() -> None:
    record = hyperstep_record(a_result(False), NAMED, 4, False, 9.0, None, taken=0, skipped=1)
    assert math.isnan(record.hypergradient_norm) and "hyper/validation_loss" not in record.logged()


def test_history_entries_of_old_checkpoints_become_records() -> None:
    legacy = {"step": 5.0, "hyper/validation_loss": 1.5, "hyper/hypergradient_norm": 0.2, "hparam/d": -2.0}
    legacy.update({"hparam/r/mean": 1.0, "hparam/r/min": 0.5})
    record = record_from_logged(legacy)
    assert record["step"] == 5 and record["validation_loss"] == 1.5 and record["applied"]
    assert record["hyperparameters"] == {"d": {"value": -2.0}, "r": {"mean": 1.0, "min": 0.5}}
    assert record["solver_status"] is None  # not known for entries written before it was recorded
    assert record_from_logged({"step": 2, "hyperparameters": {}, "applied": True})["solver_status"] is None


def test_the_history_is_thinned_to_its_limit_and_keeps_the_latest_entry() -> None:
    history: list[dict] = []
    for step in range(1, 40):
        append_bounded(history, {"step": step}, limit=8)
        assert len(history) <= 8 and history[-1]["step"] == step
    steps = [entry["step"] for entry in history]
    assert steps == sorted(steps) and steps[0] <= 8  # it still reaches back to the start of the run


def test_the_callback_history_is_bounded_in_its_checkpoint(monkeypatch) -> None:
    monkeypatch.setattr(callback_module, "HISTORY_LIMIT", 3)
    _, callback, trainer = fit(4)
    assert callback.taken == 7 and len(callback.state_dict()["history"]) == 3
    assert callback.history[-1]["step"] == trainer.global_step - 1
