"""Amortized in a fit: its carried estimate resumes bit-exactly from a checkpoint, and a NaN product skips the
hyperstep, leaves λ as it was and drops the estimate, so the next hyperstep starts from zero."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import torch

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.solvers import Amortized
from tests.fixtures.make_callback_checkpoint import TinyRegression, loaders
from tests.lightning_helpers import make_trainer


def fit(
    solver: Amortized, max_epochs: int, ckpt_path: Path | None = None
) -> tuple[TinyRegression, HypergradientCallback, L.Trainer]:
    L.seed_everything(0, verbose=False)
    model = TinyRegression()
    callback = HypergradientCallback(
        solver, hyper_optimizer=lambda params: torch.optim.Adam(params, lr=0.05), every_n_steps=2, warmup_steps=1
    )
    trainer = make_trainer([callback], max_epochs=max_epochs, check_val_every_n_epoch=100)
    train, validation = loaders()
    trainer.fit(model, train, validation, ckpt_path=ckpt_path)
    return model, callback, trainer


def test_the_carried_estimate_resumes_bit_exactly(tmp_path) -> None:
    torch.set_num_threads(1)
    straight_model, straight, _ = fit(Amortized(iterations=3), 4)
    _, half, trainer = fit(Amortized(iterations=3), 2)
    assert half.solver.estimate is not None and half.solver.state_dict()["solves"] == half.taken == 3
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    resumed_model, resumed, _ = fit(Amortized(iterations=3), 4, ckpt_path=path)
    assert resumed.taken == straight.taken == 7
    assert resumed.solver.last_start == "carried"
    for expected, actual in zip(straight.solver.estimate, resumed.solver.estimate, strict=True):
        assert torch.equal(actual, expected)
    for (name, expected), actual in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(actual, expected), name


class PoisonedAmortized(Amortized):
    """Amortized whose products turn NaN in one chosen solve; records how every solve started."""

    def __init__(self, poisoned_solve: int) -> None:
        super().__init__(iterations=3)
        self.poisoned_solve, self.solves, self.starts = poisoned_solve, 0, []

    def solve(self, hvp, b, initial=None):
        self.solves += 1
        if self.solves == self.poisoned_solve:
            clean = hvp
            hvp = lambda vector: tuple(part * math.nan for part in clean(vector))  # noqa: E731
        result = super().solve(hvp, b, initial)
        self.starts.append(self.last_start)
        return result


def test_a_nan_product_skips_the_hyperstep_keeps_lambda_and_drops_the_estimate() -> None:
    values: list[float] = []

    class Watching(HypergradientCallback):
        def hyperstep(self, trainer, module, batch):
            values.append(float(module.log_decay))
            return super().hyperstep(trainer, module, batch)

    L.seed_everything(0, verbose=False)
    model, solver = TinyRegression(), PoisonedAmortized(poisoned_solve=3)
    callback = Watching(solver, every_n_steps=2, warmup_steps=1)
    trainer = L.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, *loaders())
    assert [entry["applied"] for entry in callback.history] == [True, True, False, True, True, True, True]
    assert values[3] == values[2]  # the skipped hyperstep left λ exactly as it was
    assert solver.starts[:5] == ["cold: no estimate yet", "carried", "carried", "cold: estimate dropped", "carried"]
    assert any(
        "non_finite" in str(warning.message) and "starts from zero" in str(warning.message) for warning in caught
    )
    assert all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())
