"""Faults never crash a fit or corrupt the weights and λ: NaN losses and batches, bad steps, bad declarations."""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

from lightning_hypergrad import HypergradientCallback, HypergradientWarning
from lightning_hypergrad.lightning import decision
from lightning_hypergrad.lightning.decision import HyperstepResult
from lightning_hypergrad.solvers import ConjugateGradient, Exact, Identity, Neumann
from lightning_hypergrad.solvers.base import SolveResult, SolveStatus
from tests.lightning_helpers import TinyBilevel, digits, make_trainer

SOLVERS = {
    "neumann": lambda: Neumann(iterations=5),
    "cg": lambda: ConjugateGradient(iterations=5),
    "identity": lambda: Identity(alpha=0.1),
    "exact": lambda: Exact(),
}
FEATURES = 8
NAN_BATCH = 1  # the index of the batch made of NaN inputs, in the training and in the hyper loader


class RecordingLogger(Logger):
    """Keeps every logged metric, as a logger would write it."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def logged(self, name: str) -> list[float]:
        return [entry[name] for entry in self.metrics if name in entry]


class Faulty(TinyBilevel):
    """TinyBilevel that turns a chosen loss NaN at chosen calls, or trains on data with a NaN batch."""

    def __init__(self, fault: str | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(FEATURES, 10)  # small enough for Exact's dense Hessian
        self.fault = fault
        self.in_weight_step = False
        self.calls = {"weight": 0, "hyper_training": 0, "hyper_validation": 0}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.in_weight_step = True
        try:
            return super().training_step(batch, batch_idx)
        finally:
            self.in_weight_step = False

    def training_loss(self, batch: Any) -> Tensor:
        loss = super().training_loss(batch)
        key = "weight" if self.in_weight_step else "hyper_training"
        self.calls[key] += 1
        if self.fault == "training_loss" and self.calls[key] == {"weight": 3, "hyper_training": 2}[key]:
            return loss * math.nan
        return loss

    def validation_loss(self, batch: Any) -> Tensor:
        loss = super().validation_loss(batch)
        self.calls["hyper_validation"] += 1
        if self.fault == "validation_loss" and self.calls["hyper_validation"] == 2:
            return loss * math.nan
        return loss

    def loader(self, split: str) -> DataLoader:
        data = digits().split
        inputs, targets = (
            (data.train_inputs, data.train_targets) if split == "train" else (data.val_inputs, data.val_targets)
        )
        inputs = inputs[:, :FEATURES].clone()
        if self.fault == "batch":
            inputs[NAN_BATCH * 64 : (NAN_BATCH + 1) * 64] = math.nan
        return DataLoader(TensorDataset(inputs, targets), batch_size=64)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("validation")


def fit_faulty(fault: str | None, solver: Any, steps: int = 8, **options: Any) -> tuple[Faulty, Any, Any]:
    L.seed_everything(0, verbose=False)
    model = Faulty(fault)
    callback = HypergradientCallback(solver, every_n_steps=2, **options)
    logger = RecordingLogger()
    trainer = make_trainer([callback], max_steps=steps, limit_val_batches=0, logger=logger, log_every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    return model, callback, (trainer, logger, [str(w.message) for w in caught])


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())


@pytest.mark.parametrize("fault", ["training_loss", "validation_loss", "batch"])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_a_fit_with_nan_injected_finishes_finite_and_counts_the_skips(fault: str, solver: str) -> None:
    # Hypersteps recomputed after their weight steps, so that their own training loss can be faulted apart from the
    # weight step's (a NaN in a reused weight step: tests/lightning/test_graph_reuse.py).
    model, callback, (trainer, logger, messages) = fit_faulty(
        fault, SOLVERS[solver](), warm_start=True, reuse_training_graph=False
    )
    assert trainer.state.finished and trainer.global_step == 8
    assert all_finite(model)
    assert callback.taken == 3  # it recovers after the fault
    weight_skips = {"training_loss": 1, "validation_loss": 0, "batch": 1}[fault]
    assert model.skipped_weight_steps == weight_skips
    if weight_skips:
        assert logger.logged("train/skipped_weight_steps")[-1] == weight_skips
        assert any("Skipped the weight step" in message for message in messages)
    assert callback.skipped == 1
    assert logger.logged("hyper/skipped")[-1] == 1.0
    (skipped,) = [entry for entry in callback.history if not entry["applied"]]
    (message,) = [message for message in messages if "Skipped the hyperstep" in message]
    loss = "validation" if fault in ("validation_loss", "batch") else "training"
    assert f"the {loss} loss of the hyperstep's batch is nan" in message
    assert f"at step {skipped['step']}" in message


class NaNWeightSteps(TinyBilevel):
    """TinyBilevel whose training loss is NaN in the weight steps listed (counted from 1), finite otherwise."""

    def __init__(self, nan_steps: set[int], **options: Any) -> None:
        super().__init__(**options)
        self.nan_steps, self.calls = nan_steps, 0

    def training_loss(self, batch: Any) -> Tensor:
        self.calls += 1
        loss = super().training_loss(batch)
        return loss * math.nan if self.calls in self.nan_steps else loss


def fit_quietly(model: TinyBilevel, **trainer_options: Any) -> L.Trainer:
    trainer = make_trainer(**trainer_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one "Skipped the weight step" per skip
        trainer.fit(model, digits())
    return trainer


def test_a_training_loss_that_stays_nan_stops_the_fit_instead_of_skipping_forever() -> None:
    model = NaNWeightSteps(set(range(1, 1000)), max_consecutive_skipped_weight_steps=3)
    message = (
        r"NaNWeightSteps: 4 weight steps in a row were skipped .*at step 0.*max_consecutive_skipped_weight_steps=3"
    )
    with pytest.raises(RuntimeError, match=message):
        fit_quietly(model, max_steps=5, max_epochs=2)  # max_epochs only so that the code before the fix ends
    assert model.skipped_weight_steps == 4 and model.trainer.global_step == 0
    assert all_finite(model)


def test_runs_of_skipped_weight_steps_up_to_the_limit_let_the_fit_finish() -> None:
    model = NaNWeightSteps({1, 2, 3, 5, 6, 7}, max_consecutive_skipped_weight_steps=3)
    trainer = fit_quietly(model, max_steps=4)
    assert trainer.global_step == 4 and model.skipped_weight_steps == 6 and model.calls == 10
    assert model.consecutive_skipped_weight_steps == 0


def test_a_skipped_hyperstep_drops_the_warm_start() -> None:
    starts: list[bool] = []

    class Watching(HypergradientCallback):
        def hyperstep(self, trainer, module, batch):
            starts.append(self.solver_memory.solution is not None)
            return super().hyperstep(trainer, module, batch)

    L.seed_everything(0, verbose=False)
    callback = Watching(ConjugateGradient(iterations=5), every_n_steps=2, warm_start=True)
    with pytest.warns(HypergradientWarning, match="validation loss"):
        make_trainer([callback], max_steps=8, limit_val_batches=0).fit(Faulty("validation_loss"))
    assert [entry["applied"] for entry in callback.history] == [True, False, True, True]
    assert starts == [False, True, False, True]  # the second hyperstep failed: the third starts cold


def test_an_optimizer_step_that_makes_lambda_nan_is_undone() -> None:
    # Adam with eps=0 on an exact-zero hypergradient (λ entry 'unused' never enters a loss) computes 0/0.
    L.seed_everything(0, verbose=False)
    model = TinyBilevel("idle")
    start = {name: p.detach().clone() for name, p in model.named_hyperparameters()}
    callback = HypergradientCallback(
        Neumann(iterations=3), every_n_steps=2, hyper_optimizer=functools.partial(torch.optim.Adam, lr=0.1, eps=0.0)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer([callback], max_steps=6).fit(model, digits())
    skips = [str(w.message) for w in caught if "Skipped the hyperstep" in str(w.message)]
    assert len(skips) == 3 and all("made ['unused'] non-finite" in m and "eps > 0" in m for m in skips)
    assert callback.taken == 0 and callback.skipped == 3
    for name, parameter in model.named_hyperparameters():
        assert torch.equal(parameter.detach(), start[name])
    assert all_finite(model)
    assert all(not state for state in callback.hyper_optimizer.state.values())  # its state was restored too


def test_a_projection_that_writes_nan_is_undone() -> None:
    class BadProjection(TinyBilevel):
        projections = 0

        def project_hyperparameters(self) -> None:
            self.projections += 1
            if self.projections == 2:
                self.log_decay.fill_(math.nan)

    L.seed_everything(0, verbose=False)
    model = BadProjection()
    callback = HypergradientCallback(Neumann(iterations=3), every_n_steps=2)
    with pytest.warns(HypergradientWarning, match=r"project_hyperparameters\(\) wrote non-finite values into"):
        make_trainer([callback], max_steps=8).fit(model, digits())
    assert [entry["applied"] for entry in callback.history] == [True, False, True, True]
    assert callback.history[1]["hyperparameters"]["log_decay"] == callback.history[0]["hyperparameters"]["log_decay"]
    assert all_finite(model)


def failed(status: SolveStatus, residual: float = 1.0, solver=None) -> HyperstepResult:
    zeros = (torch.zeros(2),)
    solve = SolveResult(zeros, 3, torch.tensor(residual), False, status, 3)
    return HyperstepResult(zeros, zeros, solve, torch.tensor(0.0), solver=solver)


@pytest.mark.parametrize(
    ("solver", "status", "residual", "advice"),
    [
        (Neumann(alpha=0.5), SolveStatus.DIVERGED, 10.0, "alpha=0.5, which must stay below 2/λ_max: lower alpha"),
        (Neumann(), SolveStatus.DIVERGED, 10.0, "alpha='auto' (from 10 Lanczos steps): raise lanczos_steps"),
        (ConjugateGradient(), SolveStatus.NEGATIVE_CURVATURE, 1.0, "pass damping > 0"),
        (Neumann(alpha=0.5), SolveStatus.NON_FINITE, math.inf, "NaN or inf appeared"),
        (Exact(), SolveStatus.NON_FINITE, math.nan, "A Hessian-vector product was NaN or inf"),
    ],
)
def test_skip_warnings_name_a_remedy_that_fits_the_solver(solver, status, residual, advice) -> None:
    reason = decision.skip_reason(failed(status, residual, solver), torch.tensor(0.0), True)
    assert advice in reason
    if "auto" in advice or "damping" in advice:
        assert "use alpha='auto'" not in reason


def test_a_solver_s_own_failure_advice_is_used() -> None:
    class Advising(ConjugateGradient):
        def failure_advice(self, result: SolveResult) -> str:
            return f"advice for {result.status.value}"

    reason = decision.skip_reason(failed(SolveStatus.DIVERGED, solver=Advising()), torch.tensor(0.0), True)
    assert reason.endswith("advice for diverged")


def test_a_constant_validation_loss_warns_once_about_zero_hypergradients() -> None:
    class Constant(TinyBilevel):
        def validation_loss(self, batch: Any) -> Tensor:
            return super().validation_loss(batch).detach()

    callback = HypergradientCallback(Neumann(iterations=3), every_n_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer([callback], max_steps=8).fit(Constant(), digits())
    zero = [str(w.message) for w in caught if "hypergradient is exactly zero" in str(w.message)]
    assert len(zero) == 1 and callback.taken == 4
    assert "Constant.validation_loss does not depend on the weights" in zero[0] and "saturated" not in zero[0]


def zero_hypergradient_warnings(model: TinyBilevel, callback: HypergradientCallback) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer([callback], max_steps=6).fit(model, digits())
    return [str(w.message) for w in caught if "hypergradient is exactly zero" in str(w.message)]


def test_a_log_decay_driven_to_underflow_is_called_saturated_not_a_detached_loss() -> None:
    # Adam(lr=1000): the first hyperstep (after its weight step; taken inside it, at the initial weights, the
    # hypergradient has the other sign) moves log_decay from -3 to about -1003, where exp() is 0 in float32.
    L.seed_everything(0, verbose=False)
    model = TinyBilevel()
    adam = functools.partial(torch.optim.Adam, lr=1000.0)
    callback = HypergradientCallback(
        Neumann(iterations=3), every_n_steps=2, hyper_optimizer=adam, reuse_training_graph=False
    )
    (message,) = zero_hypergradient_warnings(model, callback)
    first, second = callback.history[:2]
    assert first["hypergradient_norm"] > 0 and second["hypergradient_norm"] == 0.0
    assert f"although it was not at step {first['step']}" in message and "saturated or ran away" in message
    at_warning = second["hyperparameters"]["log_decay"]["value"]  # the warning came after the second hyperstep
    assert f"now log_decay={at_warning:.4g}" in message and at_warning < -1000
    assert f"after the hyperstep at step {first['step']}: log_decay=" in message
    assert "does not depend" not in message


def test_a_log_decay_that_starts_underflowed_is_called_saturated_not_a_detached_loss() -> None:
    L.seed_everything(0, verbose=False)
    model = TinyBilevel()
    with torch.no_grad():
        model.log_decay.fill_(-1000.0)  # exp(-1000) is 0 in float32 from the start
    callback = HypergradientCallback(Neumann(iterations=3), every_n_steps=2)
    (message,) = zero_hypergradient_warnings(model, callback)
    assert "although validation_loss depends on the weights" in message and "now log_decay=-1000" in message
    assert "does not depend" not in message


def test_reduce_lr_on_plateau_steps_with_the_hyperstep_validation_loss() -> None:
    L.seed_everything(0, verbose=False)
    callback = HypergradientCallback(
        Neumann(iterations=3),
        every_n_steps=2,
        hyper_optimizer=functools.partial(torch.optim.SGD, lr=1.0),
        hyper_lr_scheduler=functools.partial(ReduceLROnPlateau, patience=0, factor=0.5),
    )
    make_trainer([callback], max_steps=16).fit(TinyBilevel(), digits())
    losses = [entry["validation_loss"] for entry in callback.history]
    assert callback.taken == 8
    assert callback.hyper_lr_scheduler.best == min(losses)
    worse = sum(later >= earlier for earlier, later in zip(_running_minimum(losses), losses[1:]))
    assert callback.hyper_optimizer.param_groups[0]["lr"] == 0.5**worse  # halved after each non-improvement


def _running_minimum(values: list[float]) -> list[float]:
    return [min(values[: index + 1]) for index in range(len(values))]


def test_alpha_from_a_learning_rate_scheduled_to_zero_skips_with_a_warning() -> None:
    class Decaying(TinyBilevel):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.weight_parameters(), lr=0.1)
            schedule = LambdaLR(optimizer, lambda step: 1.0 if step < 5 else 0.0)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    callback = HypergradientCallback(Identity(), every_n_steps=2, alpha_from_learning_rate=True)
    with pytest.warns(HypergradientWarning, match="the weights' learning rate is 0.0"):
        make_trainer([callback], max_steps=8).fit(Decaying(), digits())
    assert [entry["applied"] for entry in callback.history] == [True, True, False, False]


def test_float16_with_a_real_grad_scaler_skips_overflows_and_lowers_the_scale() -> None:
    L.seed_everything(0, verbose=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**30, growth_interval=1000)
    scales: list[float] = []

    class Watching(L.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            scales.append(scaler.get_scale())

    model = TinyBilevel()
    start = model.linear.weight.detach().clone()
    callback = HypergradientCallback(Neumann(iterations=3, alpha=0.5), every_n_steps=2)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    with pytest.warns(HypergradientWarning, match="A Hessian-vector product was NaN or inf"):
        make_trainer([callback, Watching()], max_steps=24, plugins=[plugin]).fit(model, digits())
    assert scales[0] == 2.0**29 and min(scales) < 2.0**24  # overflowing steps were skipped and the scale lowered
    assert scales[-1] == scales[-2]  # then it settled: steps are taken again
    assert callback.skipped >= 1 and callback.taken >= 1
    assert [entry["applied"] for entry in callback.history][-1]  # hypersteps recover at the lowered scale
    assert all_finite(model) and not torch.equal(model.linear.weight.detach(), start)


# --- declarations that are refused, with the library's own message -----------------------------------------------


def test_an_optimizer_instance_is_refused_with_the_form_to_use() -> None:
    hyperparameter = nn.Parameter(torch.zeros(1))
    with pytest.raises(TypeError, match=r"hyper_optimizer=lambda params: torch.optim.Adam\(params, lr=1e-2\)"):
        HypergradientCallback(hyper_optimizer=torch.optim.Adam([hyperparameter]))
    optimizer = torch.optim.SGD([hyperparameter], lr=1.0)
    with pytest.raises(TypeError, match="hyper_lr_scheduler=StepLR"):
        HypergradientCallback(hyper_lr_scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1))


@pytest.mark.parametrize("with_callback", [True, False])
def test_a_closure_based_weight_optimizer_is_refused(with_callback: bool) -> None:
    class WithLBFGS(TinyBilevel):
        def configure_optimizers(self):
            return torch.optim.LBFGS(self.weight_parameters())

    callbacks = [HypergradientCallback()] if with_callback else []
    with pytest.raises(ValueError, match="LBFGS, whose step\\(\\) needs a closure"):
        make_trainer(callbacks, max_steps=2).fit(WithLBFGS(), digits())


@pytest.mark.parametrize(
    ("method", "returned", "error", "message"),
    [
        (
            "training_loss",
            lambda loss: loss.repeat(3),
            ValueError,
            r"training_loss\(batch\) returned a .* shape \(3,\)",
        ),
        ("training_loss", lambda loss: float(loss), TypeError, r"training_loss\(batch\) returned a float"),
        ("validation_loss", lambda loss: loss.expand(2, 2), ValueError, r"validation_loss\(batch\) .* \(2, 2\)"),
        ("validation_loss", lambda loss: loss.item(), TypeError, r"validation_loss\(batch\) returned a float"),
    ],
)
def test_losses_that_are_not_scalar_tensors_get_a_clear_message(method, returned, error, message) -> None:
    class Declared(TinyBilevel):
        pass

    original = getattr(TinyBilevel, method)
    setattr(Declared, method, lambda self, batch: returned(original(self, batch)))
    callback = HypergradientCallback(every_n_steps=1)
    with pytest.raises(error, match=message):
        make_trainer([callback], max_steps=2, limit_val_batches=0).fit(Declared(), digits())


def test_an_empty_hyper_loader_is_refused_before_the_first_weight_step() -> None:
    class Empty(TinyBilevel):
        def hyper_dataloader(self) -> DataLoader:
            return DataLoader(TensorDataset(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)), batch_size=8)

    model = Empty()
    start = model.linear.weight.detach().clone()
    with pytest.raises(ValueError, match="has no batches"):
        trainer = make_trainer([HypergradientCallback(warmup_steps=100)], max_steps=200)
        trainer.fit(model, train_dataloaders=digits().train_dataloader())
    assert torch.equal(model.linear.weight.detach(), start)


def test_an_exact_solver_too_small_for_the_weights_is_refused_at_setup() -> None:
    model = TinyBilevel()
    start = model.linear.weight.detach().clone()
    callback = HypergradientCallback(Exact(max_size=100), warmup_steps=100)
    with pytest.raises(ValueError, match=r"max_size=100.*P=652"):
        make_trainer([callback], max_steps=200).fit(model, digits())
    assert torch.equal(model.linear.weight.detach(), start)
