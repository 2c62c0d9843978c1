"""``reuse_training_graph=True``: the hyperstep runs on the weight step's own loss and gradient graph, before its step."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor, nn

from lightning_hypergrad import HypergradientCallback, HypergradientWarning, hypergradient_with_solve
from lightning_hypergrad.lightning import graph_reuse
from lightning_hypergrad.solvers import Exact, Neumann
from tests.fixtures.make_callback_checkpoint import TinyRegression
from tests.lightning.test_implicit_parameters import double_loaders
from tests.lightning_helpers import RecordingCallback, make_trainer


class CountingRegression(TinyRegression):
    """The float64 4-8-2 regression, counting its training forward passes; optionally with BatchNorm."""

    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        if batch_norm:
            self.network = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2))
        self.double()
        self.training_forwards = 0

    def training_loss(self, batch: Any) -> Tensor:
        self.training_forwards += 1
        return super().training_loss(batch)


class WeightsBeforeEachStep(L.Callback):
    """The module's state at the start of each batch, by the number of weight steps taken before it."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.states[trainer.global_step] = {name: t.detach().clone() for name, t in pl_module.state_dict().items()}


def fit(model: TinyRegression, callbacks: list[L.Callback], steps: int = 6, **trainer_options: Any) -> None:
    L.seed_everything(0, verbose=False)
    make_trainer(callbacks, max_steps=steps, limit_val_batches=0, **trainer_options).fit(model, *double_loaders())


def test_each_hyperstep_is_exact_at_the_weights_before_the_step_it_reuses() -> None:
    model, before = CountingRegression(), WeightsBeforeEachStep()
    callback = RecordingCallback(Exact(), every_n_steps=2, reuse_training_graph=True)
    fit(model, [before, callback])
    assert (callback.taken, callback.skipped) == (3, 0)
    assert [entry["step"] for entry in callback.history] == [2, 4, 6]  # the weight step each belongs to
    for entry, record in zip(callback.history, callback.records):
        pre_step = before.states[entry["step"] - 1]  # taken at the weights before that step
        for name, tensor in record["state"].items():
            if name != "log_decay":  # λ moved between the batch's start and its hyperstep only by this hyperstep
                torch.testing.assert_close(tensor, pre_step[name], rtol=0, atol=0)
        check = CountingRegression()
        check.load_state_dict(record["state"])
        expected = hypergradient_with_solve(
            check.training_loss(record["train_batch"]),
            check.validation_loss(record["validation_batch"]),
            check.weight_parameters(),
            [check.log_decay],
            Exact(),
        )
        torch.testing.assert_close(record["result"].hypergradients[0], expected.hypergradients[0], rtol=1e-12, atol=0)


def test_reuse_saves_the_training_forward_of_every_hyperstep() -> None:
    counts = {}
    for reuse in (False, True):
        model = CountingRegression()
        fit(model, [HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph=reuse)])
        counts[reuse] = model.training_forwards
    assert counts == {False: 6 + 3, True: 6}


def test_the_weights_train_as_without_the_callback_batch_norm_statistics_included() -> None:
    plain, reused = CountingRegression(batch_norm=True), CountingRegression(batch_norm=True)
    reused.load_state_dict(plain.state_dict())
    fit(plain, [])
    frozen_lambda = HypergradientCallback(
        Neumann(3, alpha=0.1),
        hyper_optimizer=lambda parameters: torch.optim.SGD(parameters, lr=0.0),
        every_n_steps=2,
        reuse_training_graph=True,
    )
    fit(reused, [frozen_lambda])
    assert frozen_lambda.taken == 3
    for name, tensor in plain.state_dict().items():
        torch.testing.assert_close(reused.state_dict()[name], tensor, rtol=1e-13, atol=1e-15)
    assert all(weight.grad is None or weight.grad.grad_fn is None for weight in reused.weight_parameters())


class OwnTrainingStep(TinyRegression):
    """A module whose training_step does not call BilevelLightningModule.training_step."""

    def __init__(self) -> None:
        super().__init__()
        self.double()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss = self.training_loss(batch)
        self.manual_backward(loss)
        optimizer.step()
        return loss.detach()


def test_a_training_step_that_keeps_its_graph_falls_back_to_recomputing_with_one_warning() -> None:
    callback = HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph=True)
    with pytest.warns(HypergradientWarning, match="did not hand its graph") as caught:
        fit(OwnTrainingStep(), [callback])
    assert sum("did not hand its graph" in str(warning.message) for warning in caught) == 1
    assert (callback.taken, [entry["step"] for entry in callback.history]) == (3, [2, 4, 6])


class Attention(CountingRegression):
    """Self-attention over the 4 inputs as tokens (no dropout: the CPU's flash kernel, which has no double backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.network = nn.Sequential(nn.Linear(1, 8), nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0))
        self.head = nn.Linear(8, 2)
        self.float()

    def training_loss(self, batch: Any) -> Tensor:
        self.training_forwards += 1
        inputs, targets = batch
        outputs = self.head(self.network(inputs.float().unsqueeze(-1)).mean(dim=1))
        decay = sum(weight.pow(2).sum() for weight in self.weight_parameters())
        return nn.functional.mse_loss(outputs, targets.float()) + self.log_decay.exp() * decay

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.mse_loss(
            self.head(self.network(inputs.float().unsqueeze(-1)).mean(dim=1)), targets.float()
        )


def test_the_weight_step_of_an_attention_model_builds_a_graph_that_differentiates_twice(monkeypatch) -> None:
    callback = HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph=True)
    fit(Attention(), [callback])
    assert (callback.taken, callback.skipped) == (3, 0)
    # The control: the same weight step with the default kernels has no second derivative.
    monkeypatch.setattr(graph_reuse, "training_loss_with_graph", lambda module, batch: module.training_loss(batch))
    with pytest.raises(RuntimeError, match=r"derivative for .* is not implemented"):
        fit(Attention(), [HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph=True)])


def test_fits_where_the_graph_cannot_be_reused_are_refused_with_the_alternative() -> None:
    with pytest.raises(ValueError, match=r"train_batch='current'.*got 'fresh'"):
        HypergradientCallback(train_batch="fresh", reuse_training_graph=True)
    accumulating = TinyRegression()
    accumulating.accumulate_grad_batches = 2
    with pytest.raises(ValueError, match=r"accumulate_grad_batches=1.*got 2"):
        fit(accumulating, [HypergradientCallback(reuse_training_graph=True)])
    with pytest.raises(ValueError, match="not available under 16-mixed"):
        scaler = torch.amp.GradScaler("cpu")
        fit(
            TinyRegression(),
            [HypergradientCallback(reuse_training_graph=True)],
            plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
        )
    with pytest.raises(ValueError, match=r"one process only.*has 2 processes"):
        graph_reuse.reuses_graph(
            HypergradientCallback(reuse_training_graph=True), SimpleNamespace(world_size=2), TinyRegression(), None
        )


def test_auto_reuses_where_the_fit_allows_it_and_recomputes_silently_elsewhere(recwarn) -> None:
    default, recomputing = CountingRegression(), CountingRegression()
    fit(default, [HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2)])  # "auto" is the default
    fit(recomputing, [HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph=False)])
    assert (default.training_forwards, recomputing.training_forwards) == (6, 6 + 3)
    accumulating, fresh, overridden = CountingRegression(), CountingRegression(), OwnTrainingStep()
    accumulating.accumulate_grad_batches = 2
    fit(
        accumulating,
        [auto := HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=1, reuse_training_graph="auto")],
        steps=3,
    )
    assert (auto.reusing_graph, accumulating.training_forwards, auto.taken) == (False, 6 + 3, 3)
    fit(
        fresh,
        [
            HypergradientCallback(
                Neumann(3, alpha=0.1), every_n_steps=2, train_batch="fresh", reuse_training_graph="auto"
            )
        ],
    )
    assert fresh.training_forwards == 6 + 3
    fit(
        overridden, [kept := HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph="auto")]
    )
    assert kept.taken == 3
    assert not [warning for warning in recwarn if "graph" in str(warning.message)]
    with pytest.raises(ValueError, match="True, False or 'auto', got 'yes'"):
        HypergradientCallback(reuse_training_graph="yes")


class NaNOnce(CountingRegression):
    """The training loss is NaN on its second evaluation: the weight step that the first hyperstep reuses."""

    def training_loss(self, batch: Any) -> Tensor:
        loss = super().training_loss(batch)
        return loss * math.nan if self.training_forwards == 2 else loss


def test_a_nan_loss_in_a_reused_weight_step_skips_both_and_leaves_weights_and_lambda_finite() -> None:
    model, before = NaNOnce(), WeightsBeforeEachStep()
    callback = HypergradientCallback(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph=True)
    with pytest.warns(HypergradientWarning, match="Skipped the hyperstep at step 2"):
        fit(model, [before, callback])
    assert (model.skipped_weight_steps, callback.skipped, callback.taken) == (1, 1, 2)
    (skipped,) = [entry for entry in callback.history if not entry["applied"]]
    assert skipped["step"] == 2
    assert all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())
    # λ after the skipped hyperstep is λ before it (the next hyperstep, at step 4, is the first to move it).
    assert float(before.states[3]["log_decay"]) == float(before.states[0]["log_decay"])


class OlderOverride(HypergradientCallback):
    """A subclass written before the graph argument existed."""

    def compute_hypergradient(self, trainer, module, train_batch, validation_batch):
        return super().compute_hypergradient(trainer, module, train_batch, validation_batch)


def test_auto_keeps_recomputing_for_several_processes_and_for_overrides_without_the_graph() -> None:
    one, several = SimpleNamespace(world_size=1), SimpleNamespace(world_size=2)
    auto = HypergradientCallback(reuse_training_graph="auto")
    assert graph_reuse.reuses_graph(auto, one, TinyRegression(), None)
    assert not graph_reuse.reuses_graph(auto, several, TinyRegression(), None)
    assert not graph_reuse.reuses_graph(auto, one, TinyRegression(), 65536.0)  # a GradScaler's scale: 16-mixed
    assert not graph_reuse.reuses_graph(OlderOverride(reuse_training_graph="auto"), one, TinyRegression(), None)
    with pytest.raises(ValueError, match=r"OlderOverride.compute_hypergradient to take a `graph` argument"):
        graph_reuse.reuses_graph(OlderOverride(reuse_training_graph=True), one, TinyRegression(), None)
    model = CountingRegression()
    fit(model, [older := OlderOverride(Neumann(3, alpha=0.1), every_n_steps=2, reuse_training_graph="auto")])
    assert (older.taken, model.training_forwards) == (3, 6 + 3)
