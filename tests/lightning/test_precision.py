"""Mixed precision in the hyperstep: bf16 stays close to float32, float16 keeps its own loss scale, and overflows
are skipped, not applied."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from torch import Tensor, nn

from lightning_hypergrad import HypergradientCallback, HypergradientWarning
from lightning_hypergrad.lightning.loss_scale import HyperstepLossScale
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import Neumann
from tests.lightning_helpers import TinyBilevel, digits, make_trainer, small_classifier


def trained_classifier(granularity: str):
    L.seed_everything(0, verbose=False)
    model = small_classifier(network=MLPClassifier(hidden=(64,)), decay_granularity=granularity, initial_decay=1e-3)
    make_trainer(max_epochs=8).fit(model, digits())
    return model


@pytest.mark.parametrize("granularity", ["global", "per_weight"])
def test_bf16_hypergradient_points_where_the_float32_one_does(granularity: str) -> None:
    model = trained_classifier(granularity)
    data = digits()
    train_batch = next(iter(data.train_dataloader()))
    validation_batch = next(iter(data.hyper_dataloader()))
    callback = HypergradientCallback(Neumann(iterations=10, alpha=0.1))

    def hypergradient_under(plugin):
        trainer = SimpleNamespace(precision_plugin=plugin, optimizers=[], global_step=0)
        result = callback.compute_hypergradient(trainer, model, train_batch, validation_batch)
        assert result.solve.converged
        return torch.cat([part.reshape(-1) for part in result.hypergradients])

    reference = hypergradient_under(Precision())
    reduced = hypergradient_under(MixedPrecision("bf16-mixed", "cpu"))
    assert reduced.dtype == torch.float32  # accumulated in float32 whatever the autocast dtype
    assert not torch.equal(reduced, reference)  # bf16 really ran
    assert float(torch.nn.functional.cosine_similarity(reduced, reference, dim=0)) >= 0.99


def test_an_overflow_under_bf16_skips_the_hyperstep() -> None:
    class Overflowing(small_classifier().__class__):
        def validation_loss(self, batch):
            return super().validation_loss(batch) * 3e38  # finite, but its gradients overflow float32

    L.seed_everything(0, verbose=False)
    model = Overflowing(network=MLPClassifier(hidden=(32,)), decay_granularity="global", initial_decay=1e-2)
    start = model.weight_decay.raw[0].detach().clone()
    callback = HypergradientCallback(Neumann(iterations=5), every_n_steps=5)
    with pytest.warns(HypergradientWarning, match="Skipped the hyperstep"):
        make_trainer([callback], max_epochs=1, precision="bf16-mixed").fit(model, digits())
    assert callback.skipped == 3 and callback.taken == 0
    assert torch.equal(model.weight_decay.raw[0].detach(), start)


class LargeInputs(TinyBilevel):
    """Pixels on [0, 4] instead of [0, 1]: Hessian-vector products grow with the square of the inputs, gradients
    with the inputs, so at GradScaler's default 2**16 the products overflow float16 while the gradients do not."""

    gain = 4.0

    def logits(self, inputs: Tensor) -> Tensor:
        return self.linear(inputs * self.gain)

    def training_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        loss = nn.functional.cross_entropy(self.logits(inputs), targets)
        return loss + 0.5 * self.log_decay.exp() * self.linear.weight.pow(2).sum()

    def validation_loss(self, batch: Any) -> Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self.logits(inputs), targets)


class NoisyLargeInputs(LargeInputs):
    """With input dropout and a BatchNorm: a recomputed hyperstep must redraw the same masks and see the same
    running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(10)

    def logits(self, inputs: Tensor) -> Tensor:
        inputs = nn.functional.dropout(inputs * self.gain, 0.1, training=self.training)
        return self.norm(self.linear(inputs))


def default_float16() -> tuple[MixedPrecision, torch.amp.GradScaler]:
    """What ``Trainer(precision="16-mixed")`` builds on a GPU (a GradScaler at its defaults), on the CPU."""
    scaler = torch.amp.GradScaler("cpu")
    assert scaler.get_scale() == 2.0**16 and scaler.get_growth_interval() == 2000
    return MixedPrecision("16-mixed", "cpu", scaler=scaler), scaler


def test_16_mixed_with_a_default_grad_scaler_takes_hypersteps_and_moves_the_hyperparameter() -> None:
    L.seed_everything(0, verbose=False)
    model = LargeInputs()
    plugin, scaler = default_float16()
    callback = HypergradientCallback(every_n_steps=2)
    make_trainer([callback], max_steps=30, plugins=[plugin]).fit(model, digits())
    # Before the hyperstep had its own scale: 0 of 15 taken, λ frozen at −3 (the weights never overflowed).
    assert (callback.taken, callback.skipped) == (15, 0)
    assert float(model.log_decay.detach()) < -3.1
    scales = [entry["loss_scale"] for entry in callback.history]
    assert scales[0] < 2.0**16 and set(scales) == {scales[0]}  # backed off within the first hyperstep, then held
    assert scaler.get_scale() == 2.0**16  # the weights' scaler is left alone: its gradients never overflowed


def test_a_recomputed_hyperstep_equals_one_computed_at_the_lower_scale_from_the_start() -> None:
    L.seed_everything(0, verbose=False)
    model = NoisyLargeInputs()
    data = digits()
    data.setup("fit")
    train_batch, validation_batch = next(iter(data.train_dataloader())), next(iter(data.hyper_dataloader()))
    float16 = default_float16()[0]

    def hyperstep(scale: float | None, precision: Any = float16) -> Any:
        callback = HypergradientCallback(Neumann(iterations=10, lanczos_steps=5))
        callback.loss_scale.load_state_dict({"scale": scale})
        torch.manual_seed(1)
        trainer = SimpleNamespace(precision_plugin=precision, optimizers=[], global_step=0)
        return callback.compute_hypergradient(trainer, model, train_batch, validation_batch)

    retried = hyperstep(None)  # from the weights' 65536 down to the first scale that does not overflow
    assert retried.solve.converged and retried.loss_scale <= 4096.0
    from_the_start = hyperstep(retried.loss_scale)
    assert from_the_start.loss_scale == retried.loss_scale
    assert torch.equal(retried.hypergradients[0], from_the_start.hypergradients[0])
    unscaled = hyperstep(1.0).hypergradients[0]  # float16 with no scaling at all
    torch.testing.assert_close(retried.hypergradients[0], unscaled, rtol=1e-3, atol=0.0)
    float32 = hyperstep(None, Precision()).hypergradients[0]
    torch.testing.assert_close(retried.hypergradients[0], float32, rtol=3e-3, atol=0.0)


def fit_float16(epochs: int, ckpt_path: Any = None) -> tuple[LargeInputs, HypergradientCallback, L.Trainer]:
    L.seed_everything(0, verbose=False)
    model = LargeInputs()
    callback = HypergradientCallback(every_n_steps=2, loss_scale=HyperstepLossScale(growth_interval=3))
    trainer = make_trainer([callback], max_epochs=epochs, plugins=[default_float16()[0]])
    trainer.fit(model, digits(), ckpt_path=ckpt_path)
    return model, callback, trainer


def test_the_hypersteps_loss_scale_resumes_bit_exactly_from_a_checkpoint(tmp_path) -> None:
    torch.set_num_threads(1)
    _, first_half, trainer = fit_float16(1)
    path = tmp_path / "half.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["callbacks"]
    (state,) = [value for key, value in saved.items() if "HypergradientCallback" in key]
    assert state["loss_scale"] == first_half.loss_scale.state_dict()
    straight_model, straight, _ = fit_float16(2)
    resumed_model, resumed, _ = fit_float16(2, ckpt_path=path)
    assert resumed.loss_scale.state_dict() == straight.loss_scale.state_dict()
    scales = [entry["loss_scale"] for entry in straight.history]
    assert [entry["loss_scale"] for entry in resumed.history] == scales
    assert len(set(scales)) >= 2  # it grew and backed off along the way, so the state mattered
    assert torch.equal(resumed_model.log_decay.detach(), straight_model.log_decay.detach())
