"""The hyperstep count behind sized schedules matches what the callback really takes."""

from __future__ import annotations

import pytest
import torch

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.lightning.schedules import cosine_hyper_schedule, planned_hypersteps
from lightning_hypergrad.solvers import Identity
from tests.lightning_helpers import digits, make_trainer, small_classifier


@pytest.mark.parametrize(("warmup", "every"), [(0, 1), (5, 3), (10, 4), (40, 5)])
def test_planned_hypersteps_counts_what_the_callback_takes(warmup: int, every: int) -> None:
    callback = HypergradientCallback(Identity(), every_n_steps=every, warmup_steps=warmup)
    trainer = make_trainer([callback], max_steps=30)
    trainer.fit(small_classifier(), digits())
    assert callback.taken + callback.skipped == planned_hypersteps(30, warmup, every)


def test_counts_for_the_digits_job_and_bad_values() -> None:
    assert planned_hypersteps(40 * 17, 50, 5) == 126
    assert planned_hypersteps(10, 50, 5) == 0
    with pytest.raises(
        ValueError, match=r"planned_hypersteps\(every_n_steps=0\): every_n_steps must be an integer >= 1"
    ):
        planned_hypersteps(10, 0, 0)


def test_cosine_schedule_reaches_zero_at_the_last_hyperstep() -> None:
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(()))], lr=0.1)
    schedule = cosine_hyper_schedule(optimizer, 40 * 17, 50, 5)
    rates = []
    for _ in range(126):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[62] == pytest.approx(0.05, rel=0.03) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:]))
