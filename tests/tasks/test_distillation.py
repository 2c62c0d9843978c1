"""Dataset distillation on digits: ten learned images teach a fresh classifier more than ten real ones."""

from __future__ import annotations

import lightning as L
import torch

from lightning_hypergrad import HypergradientCallback
from lightning_hypergrad.data import split_digits
from lightning_hypergrad.solvers import ConjugateGradient
from lightning_hypergrad.tasks import DistillationClassifier
from lightning_hypergrad.tasks.distillation import fresh_classifier_accuracy
from tests.lightning_helpers import digits, make_trainer


def test_distilled_images_beat_one_real_image_per_class() -> None:
    L.seed_everything(0, verbose=False)
    model = DistillationClassifier(per_class=1, weight_decay=1e-3, learning_rate=0.1)
    callback = HypergradientCallback(
        ConjugateGradient(iterations=20, rtol=1e-4),
        hyper_optimizer=lambda params: torch.optim.Adam(params, lr=0.01),
        every_n_steps=5,
        warmup_steps=20,
    )
    make_trainer([callback], max_epochs=20).fit(model, digits(hyper_batch_size=128))
    assert callback.taken > 50 and callback.skipped == 0
    images, labels = (tensor.detach() for tensor in model.distilled())
    split = split_digits()
    test = (split.test_inputs, split.test_targets)
    first_of_each_class = torch.stack([torch.nonzero(split.train_targets == c)[0, 0] for c in range(10)])
    real = fresh_classifier_accuracy(
        split.train_inputs[first_of_each_class], split.train_targets[first_of_each_class], *test
    )
    distilled = fresh_classifier_accuracy(images, labels, *test)
    assert distilled > real + 0.1, (distilled, real)
