"""Mixed precision in the hyperstep: bf16 stays close to float32, and overflows are skipped, not applied."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision

from lightning_hypergrad import HypergradientCallback, HypergradientWarning
from lightning_hypergrad.lightning.losses import loss_scale
from lightning_hypergrad.models import MLPClassifier
from lightning_hypergrad.solvers import Neumann
from tests.lightning_helpers import digits, make_trainer, small_classifier


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


def test_the_float16_loss_scale_comes_from_the_weights_grad_scaler() -> None:
    scaler = SimpleNamespace(is_enabled=lambda: True, get_scale=lambda: 4096.0)
    assert loss_scale(SimpleNamespace(scaler=scaler)) == 4096.0
    assert loss_scale(MixedPrecision("bf16-mixed", "cpu")) == 1.0
    assert loss_scale(Precision()) == 1.0
