"""BilevelLightningModule: the weight step, clipping and accumulation it offers, and ordinary Lightning use."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_hypergrad.models import MLPClassifier
from tests.lightning_helpers import TinyBilevel, digits, make_trainer, small_classifier


def test_weight_parameters_exclude_the_hyperparameters() -> None:
    model = small_classifier(decay_granularity="per_weight")
    hyperparameter_ids = {id(p) for p in model.hyperparameters()}
    weights = model.weight_parameters()
    assert len(weights) == 4 and len(hyperparameter_ids) == 4
    assert not hyperparameter_ids & {id(p) for p in weights}
    assert len(weights) + len(hyperparameter_ids) == len(list(model.parameters()))


def test_training_leaves_the_hyperparameters_and_their_grad_alone() -> None:
    L.seed_everything(0, verbose=False)
    model = small_classifier()
    start = model.weight_decay.raw[0].detach().clone()
    make_trainer(max_epochs=1).fit(model, digits())
    assert torch.equal(model.weight_decay.raw[0].detach(), start)
    assert model.weight_decay.raw[0].grad is None  # the weight backward never reaches λ


def test_gradient_clipping_bounds_the_gradient_norm_at_each_step() -> None:
    norms = []

    class Recording(small_classifier().__class__):
        def on_before_optimizer_step(self, optimizer):
            super().on_before_optimizer_step(optimizer)
            norms.append(
                float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.weight_parameters()])))
            )

    for clip in (None, 0.05):
        L.seed_everything(0, verbose=False)
        model = Recording(network=MLPClassifier(hidden=(32,)), decay_granularity="global", gradient_clip_val=clip)
        make_trainer(max_epochs=1).fit(model, digits())
    unclipped, clipped = norms[:17], norms[17:]
    assert max(unclipped) > 0.2  # clipping had work to do
    assert len(clipped) == 17 and max(clipped) <= 0.05 * (1 + 1e-5)


def test_accumulation_matches_one_step_on_the_concatenated_batches() -> None:
    # Two batches of 32 accumulated equal one step on their 64 examples (mean losses, equal batch sizes).
    L.seed_everything(0, verbose=False)
    accumulated = small_classifier(accumulate_grad_batches=2, optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    L.seed_everything(0, verbose=False)
    single = small_classifier(optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    torch.testing.assert_close(accumulated.state_dict(), single.state_dict())
    make_trainer(max_steps=3).fit(accumulated, digits(batch_size=32))
    make_trainer(max_steps=3).fit(single, digits(batch_size=64))
    for (name, a), b in zip(accumulated.state_dict().items(), single.state_dict().values()):
        if name.startswith("network"):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_weight_schedulers_are_stepped_by_interval() -> None:
    class Scheduled(small_classifier().__class__):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD(self.weight_parameters(), lr=1.0)
            per_step = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": per_step, "interval": "step", "frequency": 2}}

    L.seed_everything(0, verbose=False)
    model = Scheduled(network=MLPClassifier(hidden=(16,)), decay_granularity="global")
    make_trainer(max_steps=10).fit(model, digits())
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5**5)


def test_validation_loss_is_logged_for_checkpointing(tmp_path) -> None:
    L.seed_everything(0, verbose=False)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="validation_loss", mode="min")
    trainer = make_trainer([checkpoint], max_epochs=2, enable_checkpointing=True)
    trainer.fit(small_classifier(), digits())
    assert checkpoint.best_model_path and checkpoint.best_model_score is not None
    assert {"validation_loss", "validation_accuracy", "train_loss"} <= set(trainer.callback_metrics)
    results = trainer.test(small_classifier(), digits(), verbose=False)
    assert {"test_loss", "test_accuracy"} <= set(results[0])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"gradient_clip_val": 0.0},
            r"WeightDecayClassifier\(gradient_clip_val=0.0\): gradient_clip_val must be a finite number > 0",
        ),
        ({"gradient_clip_algorithm": "max"}, r"gradient_clip_algorithm='max'\): allowed values are 'norm' and 'value'"),
        (
            {"accumulate_grad_batches": 0},
            r"accumulate_grad_batches=0\): accumulate_grad_batches must be an integer >= 1",
        ),
        (
            {"max_consecutive_skipped_weight_steps": -1},
            r"max_consecutive_skipped_weight_steps=-1\): max_consecutive_skipped_weight_steps must be an integer >= 0",
        ),
    ],
)
def test_bad_module_options_are_refused(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        small_classifier(**options)


def test_more_than_one_weight_optimizer_is_refused() -> None:
    class Two(TinyBilevel):
        def configure_optimizers(self):
            weights = self.weight_parameters()
            return [torch.optim.SGD(weights[:1], lr=0.1), torch.optim.SGD(weights[1:], lr=0.1)]

    with pytest.raises(ValueError, match=r"Two.configure_optimizers returned 2 optimizers"):
        make_trainer(max_steps=1).fit(Two(), digits())


def test_unimplemented_losses_name_the_method() -> None:
    from lightning_hypergrad import BilevelLightningModule

    with pytest.raises(NotImplementedError, match=r"BilevelLightningModule must implement training_loss\(batch\)"):
        BilevelLightningModule().training_loss(None)


def test_dropout_classifier_tunes_only_its_dropout_logits() -> None:
    from lightning_hypergrad.tasks import DropoutClassifier

    model = DropoutClassifier(hidden=(8, 4))
    assert [tuple(p.shape) for p in model.hyperparameters()] == [(8,), (4,)]
    assert sum(p.numel() for p in model.weight_parameters()) == 64 * 8 + 8 + 8 * 4 + 4 + 4 * 10 + 10
    inputs = torch.randn(5, 64)
    model.eval()
    assert torch.equal(model(inputs), model(inputs))  # no dropout noise in eval mode
    model.train()
    assert not torch.equal(model(inputs), model(inputs))


def test_augmentation_classifier_starts_unaugmented_and_tunes_only_the_augmentation() -> None:
    from lightning_hypergrad.tasks import AugmentationClassifier

    torch.manual_seed(0)
    model = AugmentationClassifier(network=MLPClassifier(hidden=(16,)), augmentation_hidden=8, noise_channels=2)
    assert sum(p.numel() for p in model.hyperparameters()) == (64 + 2) * 8 + 8 + 8 * 64 + 64
    assert {id(p) for p in model.hyperparameters()}.isdisjoint(id(p) for p in model.weight_parameters())
    inputs, targets = torch.rand(6, 64), torch.arange(6)
    clean = torch.nn.functional.cross_entropy(model(inputs), targets)
    torch.testing.assert_close(model.training_loss((inputs, targets)), clean)  # zero-initialised output layer
    gradients = torch.autograd.grad(model.training_loss((inputs, targets)), model.hyperparameters(), allow_unused=True)
    assert any(g is not None and bool((g != 0).any()) for g in gradients)  # the augmentation can learn
